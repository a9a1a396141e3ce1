"""Batches priced against real PostgreSQL: the revisions published depend only on the
records, in offset order, never on where the consumer cut them into batches; a batch
already processed (a redelivery) publishes nothing."""

from __future__ import annotations

from datetime import date

import pytest

from clearway.db import create_pool, migrate
from services.fares.adapters.convert import tap_from_proto
from services.fares.adapters.state_store import MIGRATIONS, StateStore
from services.fares.app import DEFAULT_FEED, load_catalog
from services.fares.service_layer.batches import TapRecord, price_batch
from services.fares.service_layer.repricing import service_day_of
from services.ingest.simulator.day import Mix, simulate_day

pytestmark = pytest.mark.integration
CATALOG = load_catalog([DEFAULT_FEED])
TOPIC = "taps"


def records() -> list[TapRecord]:
    """A day of 150 cards as validators upload it (device by device: out of time order)."""
    day = simulate_day(
        CATALOG.versions[0], date(2025, 3, 5), 150, seed=4, mix=Mix(malformed=0.0, resend=0.05)
    )
    out = []
    for device in sorted(day.by_device):
        for message in day.by_device[device]:
            message.tap_id = f"{message.device_id}:{message.sequence_number}"
            tap = tap_from_proto(message)
            out.append(
                TapRecord(
                    tap,
                    message.SerializeToString(),
                    len(out),
                    service_day_of(CATALOG, tap.tapped_at),
                )
            )
    return out


async def publish_in_batches(
    dsn: str, schema: str, taps: list[TapRecord], size: int
) -> list[tuple[str, bytes]]:
    pool = await create_pool(dsn, schema)
    try:
        await migrate(pool, MIGRATIONS)
        published: list[tuple[str, bytes]] = []
        for start in range(0, len(taps), size):
            chunk = taps[start : start + size]
            async with pool.acquire() as conn, conn.transaction():
                queued = await price_batch(
                    StateStore(conn),
                    CATALOG,
                    topic=TOPIC,
                    partition=0,
                    records=chunk,
                    next_offset=chunk[-1].offset + 1,
                    headers=[],
                )
            published += [(q.journey_id, q.body) for q in queued.revisions]
        # A redelivery of everything adds nothing.
        async with pool.acquire() as conn, conn.transaction():
            again = await price_batch(
                StateStore(conn),
                CATALOG,
                topic=TOPIC,
                partition=0,
                records=taps,
                next_offset=taps[-1].offset + 1,
                headers=[],
            )
        assert again.revisions == [] and again.ids == []
        return published
    finally:
        await pool.close()


async def test_revisions_do_not_depend_on_where_batches_are_cut(pg_dsn, unique_name):
    taps = records()
    one_by_one = await publish_in_batches(pg_dsn, f"{unique_name}_a", taps, 1)
    assert len(one_by_one) > len({jid for jid, _ in one_by_one})  # late taps: adjustments
    for size in (17, 400, len(taps)):
        cut = await publish_in_batches(pg_dsn, f"{unique_name}_b{size}", taps, size)
        assert cut == one_by_one, f"batches of {size} published other revisions"
