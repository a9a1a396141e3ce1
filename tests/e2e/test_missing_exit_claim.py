"""End to end: a traveller claims a missing touch-out and sees the refund.

fares and accounts run in-process against real Kafka, PostgreSQL and Redis. The card's
original taps go straight onto the `taps` topic (as ingest would write them); fares'
CloseServiceDay prices the entry without exit at the maximum fare; the claim's correction
tap goes from accounts' outbox to `taps`, fares re-prices the journey as a late exit and
publishes revision 2, and accounts credits the difference and marks the claim refunded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.auth import OPERATIONS, Principal
from clearway.common.v1.money_pb2 import Money
from clearway.events.v1 import events_pb2
from clearway.fares.v1 import fares_pb2, fares_pb2_grpc
from clearway.kafka import Topics, idempotent_producer, publish_many
from clearway.pki import secure_channel
from clearway.rpc import reason_of
from clearway.runtime import RunningService
from clearway.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from services.accounts.app import build as build_accounts
from services.accounts.entrypoints.cli import sign_in
from services.fares.app import build as build_fares
from services.settlement.app import build as build_settlement

pytestmark = pytest.mark.integration
LONDON = ZoneInfo("Europe/London")
CARD = "tok_claimcard0001"
PASSWORD = "the owner's password"


def last_wednesday() -> date:
    """A recent past Wednesday (peak hours apply; well inside the 28-day claim window)."""
    day = datetime.now(UTC).date() - timedelta(days=1)
    while day.weekday() != 2:
        day -= timedelta(days=1)
    return day


def tap(device: str, seq: int, at: datetime, stop: str, kind: int) -> events_pb2.Tap:
    message = events_pb2.Tap(
        tap_id=f"{device}:{seq}",
        device_id=device,
        sequence_number=seq,
        card_token=CARD,
        stop_id=stop,
        kind=kind,
        operator_id="LUL",
    )
    message.tapped_at.FromDatetime(at.astimezone(UTC))
    message.received_at.FromDatetime(at.astimezone(UTC))
    return message


@dataclass
class Services:
    fares: int
    accounts: int
    settlement: int
    topics: Topics
    bootstrap: str
    pki: Path

    def channel(self, port: int) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"127.0.0.1:{port}")


@pytest.fixture
async def services(settings_for, tmp_path: Path, pki: Path) -> AsyncIterator[Services]:
    fares_settings = settings_for("fares")
    fares = RunningService(build_fares(fares_settings))
    fares_port = await fares.start()
    settlement = RunningService(
        build_settlement(
            settings_for("settlement"),
            statements_dir=tmp_path / "statements",
            signing_key=pki / "signing.key.pem",
        )
    )
    accounts_app = build_accounts(settings_for("accounts"))
    accounts_app.fares_target = f"127.0.0.1:{fares_port}"  # QuoteFare checks claimed stops
    accounts = RunningService(accounts_app)
    try:
        settlement_port = await settlement.start()
        accounts_port = await accounts.start()
        yield Services(
            fares_port,
            accounts_port,
            settlement_port,
            fares_settings.topics,
            fares_settings.endpoints.kafka_bootstrap,
            pki,
        )
    finally:
        await accounts.stop()
        await settlement.stop()
        await fares.stop()


async def send_taps(s: Services, taps: list[events_pb2.Tap]) -> None:
    producer = idempotent_producer(s.bootstrap)
    await producer.start()
    try:
        await publish_many(
            producer,
            s.topics.taps,
            [(t.card_token.encode(), t.SerializeToString(deterministic=True), []) for t in taps],
        )
    finally:
        await producer.stop()


async def journeys_of(
    stub: accounts_pb2_grpc.AccountsServiceStub,
    metadata,
    want,
) -> list[events_pb2.PricedJourney]:
    """The card's history once `want(journeys)` holds (bounded wait)."""
    journeys: list[events_pb2.PricedJourney] = []
    for _ in range(150):
        page = await stub.ListJourneys(
            accounts_pb2.ListJourneysRequest(card_token=CARD), metadata=metadata
        )
        journeys = list(page.journeys)
        if want(journeys):
            return journeys
        await asyncio.sleep(0.2)
    raise AssertionError(f"history never reached the expected state: {journeys}")


async def refusal(call) -> tuple[grpc.StatusCode, str | None]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), reason_of(caught.value.trailing_metadata())


async def test_claimed_missing_exit_is_refunded_in_history_balance_and_claims(
    services: Services,
):
    day = last_wednesday()

    def at(hh: int, mm: int) -> datetime:
        return datetime.combine(day, time(hh, mm), LONDON)

    await send_taps(
        services,
        [
            tap("gate-KGX", 1, at(8, 0), "KGX", events_pb2.TAP_KIND_ENTRY),
            tap("gate-OXC", 1, at(8, 20), "OXC", events_pb2.TAP_KIND_EXIT),
            tap("gate-CMD", 1, at(18, 0), "CMD", events_pb2.TAP_KIND_ENTRY),  # no exit
        ],
    )
    async with services.channel(services.fares) as ch:
        fares = fares_pb2_grpc.FaresServiceStub(ch)
        await fares.CloseServiceDay(
            fares_pb2.CloseServiceDayRequest(service_day=day.isoformat()), timeout=90
        )
        # What the completed journey should cost: CMD at 18:00 to KGX at the estimate.
        quote = await fares.QuoteFare(
            fares_pb2.QuoteFareRequest(
                taps=[
                    tap("q", 1, at(18, 0), "CMD", events_pb2.TAP_KIND_ENTRY),
                    tap("q", 2, at(18, 20), "KGX", events_pb2.TAP_KIND_EXIT),
                ]
            )
        )
    fair = quote.total.amount_minor

    async with services.channel(services.accounts) as ch:
        history = accounts_pb2_grpc.AccountsServiceStub(ch)
        travellers = accounts_pb2_grpc.TravellerServiceStub(ch)
        owner = await sign_in(ch, "claimer@example.org", PASSWORD, sign_up=True, add_card=CARD)
        other = await sign_in(ch, "someone-else@example.org", PASSWORD, sign_up=True)
        await travellers.TopUp(
            accounts_pb2.TopUpRequest(
                card_token=CARD,
                amount=Money(amount_minor=2000, currency="GBP"),
                idempotency_key="claim-test-1",
            ),
            metadata=owner,
        )
        journeys = await journeys_of(history, owner, lambda js: len(js) == 2)
        incomplete, complete = journeys
        assert incomplete.incomplete and incomplete.revision == 1
        maximum = incomplete.charge.amount_minor
        assert maximum == 940 and 0 < fair < maximum
        assert not complete.incomplete
        before = await travellers.GetBalance(
            accounts_pb2.GetBalanceRequest(card_token=CARD), metadata=owner
        )
        assert before.balance.amount_minor == 2000 - complete.charge.amount_minor - maximum

        def claim(journey_id: str, stop: str, metadata=owner):
            return travellers.ClaimMissingExit(
                accounts_pb2.ClaimMissingExitRequest(
                    card_token=CARD, journey_id=journey_id, exit_stop_id=stop
                ),
                metadata=metadata,
            )

        # Refusals that record nothing.
        assert await refusal(claim(incomplete.journey_id, "NOWHERE")) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNKNOWN_STOP",
        )
        # A stop no fare reaches from the entry (an Underground entry, a bus stop's exit):
        # fares would price it at nothing and the claim refund the whole maximum fare.
        assert await refusal(claim(incomplete.journey_id, "BUS_A1")) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "BAD_EXIT_STOP",
        )
        assert await refusal(claim(incomplete.journey_id, "KGX", other)) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "NOT_YOUR_CARD",
        )
        assert await refusal(claim(complete.journey_id, "KGX")) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "NOT_INCOMPLETE",
        )
        assert await refusal(claim("j-not-a-journey", "KGX")) == (
            grpc.StatusCode.NOT_FOUND,
            "UNKNOWN_JOURNEY",
        )

        made = (await claim(incomplete.journey_id, "KGX")).claim
        assert made.status == accounts_pb2.Claim.STATUS_PENDING
        assert made.exited_at_estimated
        assert made.exited_at.ToDatetime(tzinfo=UTC) == at(18, 20)
        assert made.claimed_revision == 1 and made.claimed_charge.amount_minor == maximum
        assert made.tap_id.startswith("claims-accounts:")
        # One claim per journey.
        assert await refusal(claim(incomplete.journey_id, "OXC")) == (
            grpc.StatusCode.ALREADY_EXISTS,
            "CLAIM_EXISTS",
        )

        # fares prices the correction tap: revision 2, the adjustment, in history.
        journeys = await journeys_of(history, owner, lambda js: any(j.revision == 2 for j in js))
        adjusted = next(j for j in journeys if j.journey_id == incomplete.journey_id)
        assert adjusted.revision == 2 and not adjusted.incomplete
        assert [(leg.from_stop_id, leg.to_stop_id) for leg in adjusted.legs] == [("CMD", "KGX")]
        assert made.tap_id in adjusted.legs[0].tap_ids
        assert adjusted.charge.amount_minor == fair
        assert adjusted.delta.amount_minor == fair - maximum

        claims: list[accounts_pb2.Claim] = []
        for _ in range(100):
            claims = list(
                (
                    await travellers.ListClaims(
                        accounts_pb2.ListClaimsRequest(card_token=CARD), metadata=owner
                    )
                ).claims
            )
            if claims and claims[0].status != accounts_pb2.Claim.STATUS_PENDING:
                break
            await asyncio.sleep(0.1)
        assert len(claims) == 1
        assert claims[0].status == accounts_pb2.Claim.STATUS_REFUNDED
        assert claims[0].resulting_revision == 2
        assert claims[0].refund.amount_minor == maximum - fair
        assert claims[0].HasField("resolved_at")

        after = await travellers.GetBalance(
            accounts_pb2.GetBalanceRequest(card_token=CARD), metadata=owner
        )
        assert after.balance.amount_minor == before.balance.amount_minor + (maximum - fair)
        moves = await travellers.ListBalanceMovements(
            accounts_pb2.ListBalanceMovementsRequest(card_token=CARD), metadata=owner
        )
        newest = moves.movements[0]
        assert (newest.kind, newest.source_id, newest.revision) == (
            accounts_pb2.BalanceMovement.KIND_JOURNEY,
            incomplete.journey_id,
            2,
        )
        assert newest.amount.amount_minor == maximum - fair

        # Now complete: another claim is still CLAIM_EXISTS; another traveller sees nothing.
        assert await refusal(claim(incomplete.journey_id, "OXC")) == (
            grpc.StatusCode.ALREADY_EXISTS,
            "CLAIM_EXISTS",
        )
        assert await refusal(
            travellers.ListClaims(accounts_pb2.ListClaimsRequest(card_token=CARD), metadata=other)
        ) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_YOUR_CARD")

    # Settlement posts both revisions: the day settles the completed fare, not the maximum.
    operations = Principal("role", OPERATIONS)
    async with secure_channel(f"127.0.0.1:{services.settlement}", services.pki, operations) as ch:
        closed = await settlement_pb2_grpc.SettlementServiceStub(ch).ClosePeriod(
            settlement_pb2.ClosePeriodRequest(period_id=day.isoformat()), timeout=90
        )
    assert closed.total_charged.amount_minor == complete.charge.amount_minor + fair
    assert sum(s.net.amount_minor for s in closed.statements) == 0
