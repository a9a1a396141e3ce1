"""End to end: a council's officer grants a youth allowance, a provider's till redeems
part of it, and the settlement files show the council owing the provider.

accounts and settlement run in-process against real Kafka, PostgreSQL and Redis, under the
example scheme (Camden's `camden-youth-leisure`, providers `provider:camden-leisure` and
`provider:soundbox`). The officer and the till are provisioned as the scheme's engineers
do; the redemption's posting goes from accounts' outbox to `benefits`, settlement posts it
once, and ClosePeriod writes each party's signed file set.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest

from clearway.auth import OPERATIONS, Principal
from clearway.benefits.v1 import benefits_pb2, benefits_pb2_grpc
from clearway.money import Money
from clearway.pki import secure_channel
from clearway.rpc import reason_of
from clearway.runtime import RunningService
from clearway.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from services.accounts.app import build as build_accounts
from services.accounts.entrypoints.cli import sign_in
from services.accounts.redemption_device import RedemptionDevice
from services.accounts.service_layer.benefits_admin import add_officer, register_device
from services.settlement.app import build as build_settlement

pytestmark = pytest.mark.integration
LONDON = ZoneInfo("Europe/London")
COUNCIL = "funder:camden"
LEISURE = "provider:camden-leisure"
STUDIO = "provider:soundbox"
PASSWORD = "a traveller's password"


@dataclass
class Services:
    accounts_app: object
    accounts: int
    settlement: int
    pki: Path
    statements: Path


@pytest.fixture
async def services(settings_for, tmp_path: Path, pki: Path) -> AsyncIterator[Services]:
    settlement = RunningService(
        build_settlement(
            settings_for("settlement"),
            statements_dir=tmp_path / "statements",
            signing_key=pki / "signing.key.pem",
        )
    )
    accounts_app = build_accounts(settings_for("accounts"))
    accounts = RunningService(accounts_app)
    try:
        settlement_port = await settlement.start()
        accounts_port = await accounts.start()
        yield Services(accounts_app, accounts_port, settlement_port, pki, tmp_path / "statements")
    finally:
        await accounts.stop()
        await settlement.stop()


def lines_of(directory: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((directory / "lines.csv").read_text("utf-8"))))


async def test_grant_redeem_and_the_files_show_the_council_owing_the_provider(
    services: Services,
) -> None:
    # Two days ago: its period may close (cut-off 10:00 the next day), and a till may still
    # send a visit it took then (72 hours); the officer backdates the grant to that day.
    day = datetime.now(UTC).date() - timedelta(days=2)
    visit = datetime.combine(day, time(15, 30), LONDON).astimezone(UTC)
    app = services.accounts_app
    scheme = app.benefits.scheme  # type: ignore[attr-defined]
    pool = app.pool  # type: ignore[attr-defined]
    await add_officer(pool, "officer@camden.example", COUNCIL, create_with_password=PASSWORD)
    till = RedemptionDevice.generate("pos-e2e-leisure-1")
    await register_device(pool, till.device_id, LEISURE, till.public_key, scheme)
    studio = RedemptionDevice.generate("pos-e2e-studio-1")
    await register_device(pool, studio.device_id, STUDIO, studio.public_key, scheme)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{services.accounts}") as ch:
        card = "sc_04a2b9c1d25e80"
        young = await sign_in(ch, "young@example.org", PASSWORD, sign_up=True, add_card=card)
        officer = await sign_in(ch, "officer@camden.example", PASSWORD)
        born = date(day.year - 15, 1, 1)
        granted = await benefits_pb2_grpc.OfficerServiceStub(ch).GrantEntitlement(
            benefits_pb2.GrantEntitlementRequest(
                traveller_email="young@example.org",
                scheme_id="camden-youth-leisure",
                date_of_birth=born.isoformat(),
                residence_area="camden",
                evidence="school letter",
                idempotency_key="e2e-grant",
                valid_from=day.isoformat(),
            ),
            metadata=officer,
        )
        assert granted.entitlement.balance.amount_minor == 2000

        gbp = lambda minor: Money(minor, "GBP")  # noqa: E731
        swim = await till.redeem(ch, card, "swimming", gbp(750), "visit-1", requested_at=visit)
        again = await till.redeem(ch, card, "swimming", gbp(750), "visit-1", requested_at=visit)
        assert (again.replayed, again.redemption_id) == (True, swim.redemption_id)
        studio_hire = await studio.redeem(
            ch, card, "studio_hire", gbp(1000), "session-1", requested_at=visit
        )
        assert (swim.service_day, studio_hire.service_day) == (day.isoformat(),) * 2
        assert studio_hire.balance_after.amount_minor == 2000 - 750 - 1000
        # Over what is left, and a category the provider does not sell: refused, nothing moves.
        for device, category, minor, reason in (
            (till, "gym", 300, "INSUFFICIENT_ENTITLEMENT"),
            (studio, "swimming", 100, "CATEGORY_NOT_OFFERED"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await device.redeem(
                    ch, card, category, gbp(minor), f"refused-{reason}", requested_at=visit
                )
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert reason_of(refused.value.trailing_metadata()) == reason
        mine = await benefits_pb2_grpc.BenefitsServiceStub(ch).ListEntitlements(
            benefits_pb2.ListEntitlementsRequest(), metadata=young
        )
        assert [e.scheme_id for e in mine.entitlements] == ["camden-youth-leisure"]

    operations = Principal("role", OPERATIONS)
    async with secure_channel(f"127.0.0.1:{services.settlement}", services.pki, operations) as ch:
        closed = await settlement_pb2_grpc.SettlementServiceStub(ch).ClosePeriod(
            settlement_pb2.ClosePeriodRequest(period_id=day.isoformat()), timeout=90
        )
    assert closed.total_vouchers_redeemed.amount_minor == 1750
    assert closed.total_vouchers_funded.amount_minor == 1750
    assert sum(s.net.amount_minor for s in closed.statements) == 0
    nets = {s.party_id: s.net.amount_minor for s in closed.statements}
    assert (nets[COUNCIL], nets[LEISURE], nets[STUDIO]) == (-1750, 750, 1000)

    period = services.statements / day.isoformat()
    council_lines = [ln for ln in lines_of(period / COUNCIL) if ln["source"] == "redemption"]
    assert sorted(int(ln["amount_minor"]) for ln in council_lines) == [-1000, -750]
    assert {ln["provider"] for ln in council_lines} == {LEISURE, STUDIO}
    assert {ln["category"] for ln in council_lines} == {"swimming", "studio_hire"}
    leisure_lines = lines_of(period / LEISURE)
    assert [(ln["source"], int(ln["amount_minor"]), ln["funder"]) for ln in leisure_lines] == [
        ("redemption", 750, COUNCIL)
    ]
    council = json.loads((period / COUNCIL / "summary.json").read_text("utf-8"))
    provider = json.loads((period / LEISURE / "summary.json").read_text("utf-8"))
    assert council["vouchers_funded_minor"] == -1750  # signed as the party sees it: owes
    assert provider["vouchers_redeemed_minor"] == 750
    # No card, account or device identifier in any party's files.
    for party_dir in period.iterdir():
        for file in party_dir.iterdir():
            text = file.read_bytes()
            for secret in (card, "young@example.org", till.device_id, studio.device_id):
                assert secret.encode() not in text, (file, secret)
