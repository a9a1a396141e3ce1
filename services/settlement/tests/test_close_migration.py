"""The close over bases posted before migration v4 (no rendered columns, the period and
the targets still only in the JSON): migrating a v3 ledger and closing gives the bytes a
ledger posted under v4 gives, and so do bases whose rendered columns are missing. Bases
rendered under v4, before lines.csv had the benefit columns, close after migration v5
into the bytes of bases rendered now."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck, Phase, given, settings

from clearway.db import create_pool, migrate
from services.settlement.adapters.ledger_repository import MIGRATIONS, Item, LedgerRepository
from services.settlement.domain.benefits import BenefitPosting
from services.settlement.domain.settle import JourneyBasis
from services.settlement.service_layer.periods import SettlementPorts, issue_file_sets

from .test_files_replay import DAY, KEY, PERIOD, SCHEME, journey_streams, read_tree

pytestmark = pytest.mark.integration

NEXT_DAY = DAY + timedelta(days=1)
NEXT = NEXT_DAY.isoformat()
_V3_COPY = (
    "INSERT INTO {to}.periods SELECT * FROM {of}.periods;"
    " INSERT INTO {to}.journey_positions SELECT * FROM {of}.journey_positions;"
    " INSERT INTO {to}.ledger_entries (entry_id, period_id, journey_id, revision, party_id,"
    " account, amount_minor, currency, description, created_at, source)"
    " SELECT entry_id, period_id, journey_id, revision, party_id, account, amount_minor,"
    " currency, description, created_at, source FROM {of}.ledger_entries;"
    " INSERT INTO {to}.bases (source, source_id, revision, basis)"
    " SELECT source, source_id, revision, basis FROM {of}.bases"
)


async def _close(ledger: LedgerRepository, root: Path) -> None:
    ports = SettlementPorts(ledger, SCHEME, root, KEY, None, None, 0)  # type: ignore[arg-type]
    for day in (DAY, NEXT_DAY):
        await ledger.mark_closed(day.isoformat())
        await issue_file_sets(ports, day.isoformat(), day)


async def _post_and_close(dsn: str, schema: str, items: list[Item], root: Path) -> None:
    """Post `items`, close the day, post their revisions again as late adjustments (into
    the next period), close that too."""
    pool = await create_pool(dsn, schema)
    try:
        ledger = LedgerRepository(pool, SCHEME)
        await ledger.migrate()
        await ledger.post_many(items)
        await ledger.mark_closed(PERIOD)
        late = [
            dataclasses.replace(item, revision=item.revision + 10)
            for item in items
            if isinstance(item, JourneyBasis)
        ]
        await ledger.post_many(late)
        await _close(ledger, root)
    finally:
        await pool.close()


async def _as_v3_then_close(dsn: str, of: str, schema: str, root: Path) -> None:
    """Copy schema `of` into a new v3 schema (bases as v3 stored them), migrate it with
    the service's migrations and close both periods again."""
    pool = await create_pool(dsn, schema)
    try:
        await migrate(pool, MIGRATIONS[:3])
        await pool.execute(_V3_COPY.format(to=schema, of=of))
        ledger = LedgerRepository(pool, SCHEME)
        await ledger.migrate()
        await _close(ledger, root)
        await pool.execute("UPDATE bases SET line_columns = NULL, line_tail = NULL")
        await _close(ledger, root.parent / f"{root.name}-unrendered")
    finally:
        await pool.close()


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(items=journey_streams())
def test_bases_of_before_v4_close_into_the_same_bytes(
    pg_dsn: str, tmp_path_factory: pytest.TempPathFactory, items: list[Item]
) -> None:
    base = tmp_path_factory.mktemp("m")
    suffix = base.name.replace("-", "_").lower()[-12:]
    schemas = (f"mig_new_{suffix}", f"mig_old_{suffix}")

    async def run() -> None:
        try:
            await _post_and_close(pg_dsn, schemas[0], items, base / "v4")
            await _as_v3_then_close(pg_dsn, schemas[0], schemas[1], base / "v3")
        finally:
            conn = await asyncpg.connect(pg_dsn)
            try:
                for schema in schemas:
                    await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            finally:
                await conn.close()

    asyncio.run(run())
    posted = read_tree(base / "v4")
    assert any(name.endswith("lines.csv") for name in posted)
    assert read_tree(base / "v3") == posted
    assert read_tree(base / "v3-unrendered") == posted


async def _as_v4_then_close(dsn: str, schema: str, root: Path) -> None:
    """Take schema `schema` back to v4 (bases' rendered tails without the benefit columns,
    as v4 rendered them), migrate it with the service's migrations and close again."""
    pool = await create_pool(dsn, schema)
    try:
        await pool.execute(
            "UPDATE bases SET line_tail = regexp_replace(line_tail, ',,,,,,$', '');"
            " DELETE FROM schema_version WHERE version > 4"
        )
        ledger = LedgerRepository(pool, SCHEME)
        await ledger.migrate()
        await _close(ledger, root)
    finally:
        await pool.close()


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(items=journey_streams())
def test_bases_rendered_before_benefit_postings_close_into_the_same_bytes(
    pg_dsn: str, tmp_path_factory: pytest.TempPathFactory, items: list[Item]
) -> None:
    items = [item for item in items if not isinstance(item, BenefitPosting)]
    base = tmp_path_factory.mktemp("m5")
    schema = f"mig_v4_{base.name.replace('-', '_').lower()[-12:]}"

    async def run() -> None:
        try:
            await _post_and_close(pg_dsn, schema, items, base / "v5")
            await _as_v4_then_close(pg_dsn, schema, base / "v4")
        finally:
            conn = await asyncpg.connect(pg_dsn)
            try:
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            finally:
                await conn.close()

    asyncio.run(run())
    assert read_tree(base / "v4") == read_tree(base / "v5")
