"""Settlement files against real PostgreSQL, as properties (hypothesis): for random days of
journeys (every method, concessions, late revisions, withdrawals), top-ups and benefit
postings (redemptions at a provider, rewards; some delivered twice), posted in any
batching into an empty ledger, closing gives the same bytes every time and on every
replay; every party's set verifies (signature, every share, every total); fee + shares
= revenue on every journey; net positions sum to zero."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from clearway.db import create_pool
from clearway.money import Money
from clearway.scheme.file import load_scheme
from clearway.scheme.model import BankAccount, Dated, Party, PartyKind, Scheme
from services.settlement.adapters.ledger_repository import Item, LedgerRepository
from services.settlement.domain.benefits import BenefitKind, BenefitPosting
from services.settlement.domain.settle import JourneyBasis, Leg, settle_journey
from services.settlement.domain.top_ups import TopUpSale
from services.settlement.entrypoints.verify_cli import verify_file_set
from services.settlement.service_layer.periods import SettlementPorts, issue_file_sets

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
PROVIDER = "provider:camden-leisure"


def with_provider(scheme: Scheme) -> Scheme:
    """`scheme` with the provider the example names, when its file does not declare it."""
    if any(p.party_id == PROVIDER for p in scheme.parties):
        return scheme
    bank = BankAccount(sort_code="040004", account_number="20937465")
    provider = Party(
        PROVIDER, PartyKind.PROVIDER, "Camden leisure (test)", bank, Dated(date(2025, 1, 1))
    )
    return dataclasses.replace(scheme, parties=(*scheme.parties, provider))


SCHEME = with_provider(load_scheme(REPO / "examples" / "schemes" / "london.toml"))
DAY = date(2026, 11, 25)  # a Wednesday
PERIOD = DAY.isoformat()
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
AGENCIES = {"BUSCO": "BUS", "LUL": "RAIL", "ELIZ": "RAIL", "NATRAIL": "RAIL"}


@st.composite
def journey_streams(draw: st.DrawFn) -> list[Item]:
    """Revisions of random journeys (each revision a full new pricing; sometimes a
    withdrawal) and top-ups, in an arrival order that keeps each source's order."""
    streams: list[list[Item]] = []
    for j in range(draw(st.integers(1, 12))):
        revisions: list[Item] = []
        category = draw(st.sampled_from(["ADULT", "ADULT", "SENIOR", "YOUTH"]))
        start = datetime(2026, 11, 25, 6, tzinfo=UTC) + timedelta(
            minutes=draw(st.integers(0, 16 * 60))
        )
        for rev in range(1, draw(st.integers(1, 3)) + 1):
            withdrawn = rev > 1 and draw(st.booleans()) and draw(st.booleans())
            legs = () if withdrawn else tuple(_legs(draw, f"j{j}r{rev}"))
            charge = 0 if withdrawn else draw(st.integers(0, 1200))
            revisions.append(
                JourneyBasis(f"j-{j:03d}", rev, DAY, start, category, Money(charge, "GBP"), legs)
            )
        streams.append(revisions)
    for t in range(draw(st.integers(0, 3))):
        amount = Money(draw(st.integers(1, 5000)), "GBP")
        streams.append([TopUpSale(f"topup-{t}", "retailer:cornershop", amount, DAY)])
    for b in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(BenefitKind))
        redeemed = kind is BenefitKind.REDEMPTION
        funders = ["funder:camden"] if redeemed else ["funder:camden", "operator:BUSCO"]
        posting = BenefitPosting(
            f"{kind}:bnf_{b:04d}",
            kind,
            draw(st.sampled_from(funders)),
            Money(draw(st.integers(1, 5000)), "GBP"),
            DAY,
            provider_id=PROVIDER if redeemed else "",
            category="leisure" if redeemed else "",
            reward_rule_id="" if redeemed else "a,rule",  # a comma: the field is quoted
        )
        # Delivered once, or twice (a redelivery): posted once either way.
        streams.append([posting] * draw(st.integers(1, 2)))
    order: list[Item] = []
    cursors = [0] * len(streams)
    while any(c < len(s) for c, s in zip(cursors, streams, strict=True)):
        live = [i for i, s in enumerate(streams) if cursors[i] < len(s)]
        pick = draw(st.sampled_from(live))
        order.append(streams[pick][cursors[pick]])
        cursors[pick] += 1
    return order


def _legs(draw: st.DrawFn, prefix: str) -> list[Leg]:
    legs = []
    for i in range(draw(st.integers(1, 3))):
        agency = draw(st.sampled_from(sorted(AGENCIES)))
        standalone = draw(st.integers(0, 900))
        legs.append(
            Leg(
                f"{prefix}-{i}",
                agency,
                AGENCIES[agency],
                draw(st.integers(0, 40_000)),
                Money(standalone, "GBP"),
                Money(standalone + draw(st.integers(0, 300)), "GBP"),
            )
        )
    return legs


async def settle_into(dsn: str, schema: str, items: list[Item], batch: int, root: Path):
    pool = await create_pool(dsn, schema)
    try:
        ledger = LedgerRepository(pool, SCHEME)
        await ledger.migrate()
        for start in range(0, len(items), batch):
            await ledger.post_many(items[start : start + batch])
        await ledger.mark_closed(PERIOD)
        ports = SettlementPorts(ledger, SCHEME, root, KEY, None, None, 0)  # type: ignore[arg-type]
        first = await issue_file_sets(ports, PERIOD, DAY)
        again = await issue_file_sets(ports, PERIOD, DAY)
        assert [dataclasses.replace(s) for s in first] == again
        return await ledger.nets(PERIOD)
    finally:
        await pool.close()


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(items=journey_streams(), batch=st.integers(1, 7))
def test_replaying_into_an_empty_ledger_reproduces_every_file_byte_for_byte(
    pg_dsn: str, tmp_path_factory: pytest.TempPathFactory, items: list[Item], batch: int
) -> None:
    for item in items:
        if isinstance(item, JourneyBasis):
            settled = settle_journey(SCHEME, item)
            if settled.shares:
                net = sum(s.net.amount_minor for s in settled.shares)
                assert net + settled.fee.amount_minor == settled.revenue.amount_minor
            assert sum(m.amount_minor for m in settled.position.values()) == 0
    root_a = tmp_path_factory.mktemp("a")
    root_b = tmp_path_factory.mktemp("b")
    suffix = tmp_path_factory.mktemp("s").name.replace("-", "_").lower()[-12:]

    async def both() -> tuple[dict[str, Money], dict[str, Money]]:
        try:
            a = await settle_into(pg_dsn, f"replay_a_{suffix}", items, len(items) or 1, root_a)
            b = await settle_into(pg_dsn, f"replay_b_{suffix}", items, batch, root_b)
            return a, b
        finally:
            conn = await asyncpg.connect(pg_dsn)
            try:
                for schema in (f"replay_a_{suffix}", f"replay_b_{suffix}"):
                    await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            finally:
                await conn.close()

    nets_a, nets_b = asyncio.run(both())
    assert nets_a == nets_b
    assert sum(n.amount_minor for n in nets_a.values()) == 0
    files = read_tree(root_a)
    assert files == read_tree(root_b)
    for directory in sorted({Path(name).parent for name in files if "/" in name}):
        if (root_a / directory / "manifest.json").exists():
            report = verify_file_set(root_a / directory, SCHEME, KEY.public_key())
            assert report.ok, report.render()
