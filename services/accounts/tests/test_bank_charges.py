"""Bank-card mode over accounts' real gRPC server, Kafka, PostgreSQL and Redis: a bank
card's day aggregated into one charge exactly once (replays and a restart included), a
decline putting the card in debt and on the deny list (as ingest's follower reads it)
until a retry on the scaled schedule is approved, at most 6 retries, late revisions
billed as adjustments and refunds, and an attempt whose outcome was lost retried with
the same idempotency key."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.events.v1 import events_pb2
from clearway.ingest.v1 import ingest_pb2
from clearway.kafka import idempotent_producer
from clearway.money import Money
from clearway.runtime import RunningService
from clearway.settings import ServiceSettings
from services.accounts.adapters.simulated_acquirer import SimulatedAcquirer
from services.accounts.app import build
from services.accounts.domain.bank_charges import DEFAULT_RETRY_OFFSETS, RecoverySchedule
from services.accounts.service_layer.bank_charging import BankChargeSettings, ChargeResult
from services.accounts.tests.test_stored_value import (
    T0,
    Door,
    gbp,
    journey,
    read_topic,
    refusal,
    stop_door,
    wait_until,
)
from services.ingest.adapters.deny_list_topic import DenyListFollower

pytestmark = pytest.mark.integration

Charge = accounts_pb2.BankCharge
# A day becomes 2 s: the first retries come within a second, the last after 26 s (room
# to flip the acquirer before recovery gives up, on a loaded machine too).
SCALE = 2 / 86_400
# A day becomes 0.2 s: the whole 13-day schedule runs in under 3 seconds.
FAST_SCALE = 0.2 / 86_400


def new_bank_card() -> str:
    # bk_ + 43 base64url characters, the last one of the canonical 32-byte encoding.
    return "bk_" + secrets.token_urlsafe(32)[:42] + "A"


@dataclasses.dataclass
class Clock:
    """The charging loop's clock: real time unless a test holds it."""

    held: datetime | None = None

    def __call__(self) -> datetime:
        return self.held if self.held is not None else datetime.now(UTC)


async def start_bank_door(
    settings: ServiceSettings,
    acquirer: object,
    clock: Clock,
    *,
    scale: float = SCALE,
    lease_s: float = 60.0,
) -> Door:
    app = build(settings)
    app.gateway = acquirer  # type: ignore[assignment]
    app.bank_settings = BankChargeSettings(
        schedule=RecoverySchedule(scale=scale), poll_s=0.05, lease=timedelta(seconds=lease_s)
    )
    running = RunningService(app)
    port = await running.start()
    assert app.bank is not None
    app.bank.clock = clock
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    producer = idempotent_producer(settings.endpoints.kafka_bootstrap)
    await producer.start()
    return Door(
        settings, running, app, channel, producer, accounts_pb2_grpc.TravellerServiceStub(channel)
    )


@dataclasses.dataclass
class Bank:
    door: Door
    acquirer: SimulatedAcquirer
    clock: Clock

    async def charges(self, card: str) -> accounts_pb2.ListBankChargesResponse:
        return await self.door.travellers.ListBankCharges(
            accounts_pb2.ListBankChargesRequest(card_token=card), metadata=self.door.metadata
        )

    async def wait_charges(self, card: str, want: list[tuple[int, int, int]]) -> None:
        """Until the card's charges are `want`: (kind, amount, status), newest first."""

        async def reached() -> bool:
            got = (await self.charges(card)).charges
            return [(c.kind, c.amount.amount_minor, c.status) for c in got] == want

        await wait_until(reached, 30)


@pytest.fixture
async def bank(settings_for) -> AsyncIterator[Bank]:
    acquirer = SimulatedAcquirer()
    clock = Clock()
    door = await start_bank_door(settings_for("accounts"), acquirer, clock)
    try:
        door.session = await door.sign_up_and_in()
        yield Bank(door, acquirer, clock)
    finally:
        await stop_door(door)


async def test_a_bank_cards_day_is_one_charge_of_its_journeys_sum_exactly_once(
    bank: Bank,
) -> None:
    door = bank.door
    card = await door.own(new_bank_card())
    bank.clock.held = T0  # the day is not over: nothing is charged yet
    await door.publish_journeys(
        journey(card, f"a-{card}", 1, 280), journey(card, f"b-{card}", 1, 350)
    )
    await door.wait_stored(2)
    await asyncio.sleep(0.3)
    assert (await bank.charges(card)).charges == []
    bank.clock.held = None  # D+1 04:30 + the delay is long past: the day is due
    await bank.wait_charges(card, [(Charge.KIND_CHARGE, 630, Charge.STATUS_CHARGED)])
    assert [(c[0], c[1]) for c in bank.acquirer.calls] == [(card, 630)]
    # A bank card has no stored value: no balance, no movement, never deny-listed.
    reply = await door.balance(card)
    assert (reply.balance, reply.deny_listed) == (gbp(0), False)
    assert await door.movements(card) == []
    with pytest.raises(grpc.aio.AioRpcError) as top_up:
        await door.top_up(card, 1000, "no-stored-value")
    assert refusal(top_up.value) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "BANK_CARD_NO_STORED_VALUE",
    )
    listing = await bank.charges(card)
    assert listing.charges[0].service_day == T0.date().isoformat()
    assert (listing.charges[0].attempts, listing.outstanding, listing.deny_listed) == (
        1,
        gbp(0),
        False,
    )

    # A replay, then a restart whose new consumer group replays the whole topic.
    await door.publish_journeys(
        journey(card, f"a-{card}", 1, 280), journey(card, f"b-{card}", 1, 350)
    )
    await door.wait_stored(4)
    await stop_door(door)
    settings = dataclasses.replace(
        door.settings, consumer_group=f"{door.settings.consumer_group}-again"
    )
    restarted = await start_bank_door(settings, bank.acquirer, bank.clock)
    restarted.session = door.session
    try:
        await restarted.wait_stored(4)
        assert restarted.app.bank is not None
        await restarted.app.bank.run_once()
        again = Bank(restarted, bank.acquirer, bank.clock)
        await again.wait_charges(card, [(Charge.KIND_CHARGE, 630, Charge.STATUS_CHARGED)])
        assert len(bank.acquirer.calls) == 1
        denylist = await read_topic(
            door.settings.endpoints.kafka_bootstrap, door.settings.topics.denylist
        )
        assert denylist == []
    finally:
        await stop_door(restarted)


async def test_a_declined_day_is_debt_on_the_deny_list_until_a_retry_is_approved(
    bank: Bank,
) -> None:
    door = bank.door
    card = await door.own(new_bank_card())
    bank.acquirer.decline([card])
    bootstrap = door.settings.endpoints.kafka_bootstrap
    follower = DenyListFollower(bootstrap, door.settings.topics.denylist, poll_timeout_ms=100)
    await follower.start()
    following = asyncio.create_task(follower.run())
    try:
        await door.publish_journeys(journey(card, f"a-{card}", 1, 280))

        async def blocked() -> bool:
            return follower.blocked(card)

        await wait_until(blocked, 20)

        async def retried_twice() -> bool:
            charges = (await bank.charges(card)).charges
            return bool(charges) and charges[0].retries >= 2

        await wait_until(retried_twice, 20)
        listing = await bank.charges(card)
        assert listing.charges[0].status == Charge.STATUS_RECOVERING
        assert listing.charges[0].last_reason == "DO_NOT_HONOUR"
        assert (listing.outstanding, listing.deny_listed) == (gbp(280), True)
        assert listing.charges[0].HasField("next_retry_at")

        bank.acquirer.approve([card])  # the traveller's bank pays now
        await bank.wait_charges(card, [(Charge.KIND_CHARGE, 280, Charge.STATUS_RECOVERED)])

        async def unblocked() -> bool:
            return not follower.blocked(card)

        await wait_until(unblocked, 20)
        changes = await read_topic(bootstrap, door.settings.topics.denylist)
        decoded = [events_pb2.DenyListChange.FromString(r.value) for r in changes]
        assert [(c.card_token, c.action) for c in decoded] == [
            (card, events_pb2.DenyListChange.ACTION_ADD),
            (card, events_pb2.DenyListChange.ACTION_REMOVE),
        ]
        assert (decoded[0].reason, decoded[0].changed_by) == (
            ingest_pb2.DENY_REASON_UNPAID_DEBT,
            "service/accounts",
        )
        await _assert_attempts_follow_the_schedule(door, card)
    finally:
        await follower.stop()
        following.cancel()


async def _assert_attempts_follow_the_schedule(door: Door, card: str) -> None:
    """Each automatic retry started no earlier than its scaled offset from the first
    decline; the keys are <charge id>:<attempt>."""
    assert door.app.pool is not None
    async with door.app.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT a.attempt, a.idempotency_key, a.outcome, a.started_at, c.first_declined_at,"
            " c.charge_id FROM bank_charge_attempts a JOIN bank_charges c USING (charge_id)"
            " WHERE c.card_token = $1 ORDER BY a.attempt",
            card,
        )
    assert [r["outcome"] for r in rows][-1] == "approved"
    assert all(r["outcome"] == "declined" for r in rows[:-1])
    first_declined = rows[0]["first_declined_at"]
    for row, offset in zip(rows[1:], DEFAULT_RETRY_OFFSETS, strict=False):
        assert row["idempotency_key"] == f"{row['charge_id']}:{row['attempt']}"
        assert row["started_at"] >= first_declined + offset * SCALE


@pytest.fixture
async def fast_bank(settings_for) -> AsyncIterator[Bank]:
    acquirer = SimulatedAcquirer()
    clock = Clock()
    door = await start_bank_door(settings_for("accounts"), acquirer, clock, scale=FAST_SCALE)
    try:
        door.session = await door.sign_up_and_in()
        yield Bank(door, acquirer, clock)
    finally:
        await stop_door(door)


async def test_a_debt_is_unrecovered_after_six_retries_until_the_traveller_pays(
    fast_bank: Bank,
) -> None:
    bank = fast_bank
    door = bank.door
    card = await door.own(new_bank_card())
    bank.acquirer.decline([card])
    await door.publish_journeys(journey(card, f"a-{card}", 1, 350))
    await bank.wait_charges(card, [(Charge.KIND_CHARGE, 350, Charge.STATUS_UNRECOVERED)])
    await asyncio.sleep(0.3)  # no seventh retry comes
    charge = (await bank.charges(card)).charges[0]
    assert (charge.attempts, charge.retries, charge.HasField("next_retry_at")) == (7, 6, False)
    listing = await bank.charges(card)
    assert (listing.outstanding, listing.deny_listed) == (gbp(350), True)

    with pytest.raises(grpc.aio.AioRpcError) as declined:
        await door.travellers.RetryBankCharge(
            accounts_pb2.RetryBankChargeRequest(card_token=card, charge_id="bc-nope"),
            metadata=door.metadata,
        )
    assert refusal(declined.value) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_IN_DEBT")
    bank.acquirer.approve([card])
    paid = await door.travellers.RetryBankCharge(
        accounts_pb2.RetryBankChargeRequest(card_token=card, charge_id=charge.charge_id),
        metadata=door.metadata,
    )
    assert (paid.charge.status, paid.charge.attempts, paid.charge.retries) == (
        Charge.STATUS_RECOVERED,
        8,
        6,
    )
    assert (await bank.charges(card)).deny_listed is False
    bootstrap = door.settings.endpoints.kafka_bootstrap

    async def add_and_remove() -> bool:
        changes = await read_topic(bootstrap, door.settings.topics.denylist)
        return len(changes) >= 2

    await wait_until(add_and_remove, 20)
    changes = await read_topic(bootstrap, door.settings.topics.denylist)
    assert [events_pb2.DenyListChange.FromString(r.value).action for r in changes] == [
        events_pb2.DenyListChange.ACTION_ADD,
        events_pb2.DenyListChange.ACTION_REMOVE,
    ]
    with pytest.raises(grpc.aio.AioRpcError) as settled:
        await door.travellers.RetryBankCharge(
            accounts_pb2.RetryBankChargeRequest(card_token=card, charge_id=charge.charge_id),
            metadata=door.metadata,
        )
    assert refusal(settled.value)[1] == "NOT_IN_DEBT"


async def test_revisions_after_the_day_was_charged_bill_an_adjustment_then_a_refund(
    bank: Bank,
) -> None:
    door = bank.door
    card = await door.own(new_bank_card())
    jid = f"a-{card}"
    await door.publish_journeys(journey(card, jid, 1, 280))
    await bank.wait_charges(card, [(Charge.KIND_CHARGE, 280, Charge.STATUS_CHARGED)])
    await door.publish_journeys(journey(card, jid, 2, 400))  # a late tap: dearer
    await bank.wait_charges(
        card,
        [
            (Charge.KIND_ADJUSTMENT, 120, Charge.STATUS_CHARGED),
            (Charge.KIND_CHARGE, 280, Charge.STATUS_CHARGED),
        ],
    )
    await door.publish_journeys(journey(card, jid, 3, 0))  # withdrawn: refund it all
    await bank.wait_charges(
        card,
        [
            (Charge.KIND_REFUND, -400, Charge.STATUS_CHARGED),
            (Charge.KIND_ADJUSTMENT, 120, Charge.STATUS_CHARGED),
            (Charge.KIND_CHARGE, 280, Charge.STATUS_CHARGED),
        ],
    )
    assert [c[1] for c in bank.acquirer.calls] == [280, 120, -400]


class LosesAnswers:
    """A gateway whose first answer is lost on the way back (the acquirer took it)."""

    def __init__(self, acquirer: SimulatedAcquirer) -> None:
        self.acquirer = acquirer
        self.lost = 0

    async def charge(self, card_token: str, amount: Money, idempotency_key: str) -> ChargeResult:
        result = await self.acquirer.charge(card_token, amount, idempotency_key)
        if not self.lost:
            self.lost += 1
            raise TimeoutError("the acquirer's answer was lost")
        return result


async def test_an_attempt_whose_answer_was_lost_is_retried_with_the_same_key(
    settings_for,
) -> None:
    acquirer = SimulatedAcquirer()
    door = await start_bank_door(
        settings_for("accounts"), LosesAnswers(acquirer), Clock(), lease_s=0.5
    )
    try:
        door.session = await door.sign_up_and_in()
        bank = Bank(door, acquirer, Clock())
        card = await door.own(new_bank_card())
        await door.publish_journeys(journey(card, f"a-{card}", 1, 280))
        await bank.wait_charges(card, [(Charge.KIND_CHARGE, 280, Charge.STATUS_CHARGED)])
        assert len(acquirer.calls) == 1  # charged once
        charge = (await bank.charges(card)).charges[0]
        assert charge.attempts == 1
        assert door.app.bank is not None
        attempts = await door.app.bank.charges.attempts_of(charge.charge_id)
        assert attempts == [(1, f"{charge.charge_id}:1", "approved")]
    finally:
        await stop_door(door)
