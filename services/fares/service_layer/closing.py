"""Close a service day for pricing, whichever fares instance is asked and however many run.

The taps topic's partitions are shared between the instances of the consumer group. The
close waits until every partition's *stored* position (PostgreSQL, shared by all
instances) has reached the end the topic had when the close was asked, records the closed
day (so every instance prices later batches as of it too), then sweeps each partition's
due entries in a transaction that row-locks the partition's position, exactly as its
owner's batches do, so a close and a batch of the same partition never interleave.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import asyncpg

from clearway.telemetry import kafka_headers_with_trace
from services.fares.adapters.state_store import StateStore
from services.fares.domain.errors import CatchUpTimeoutError
from services.fares.domain.model import FareCatalog
from services.fares.entrypoints.consumer import OutboxRelay
from services.fares.service_layer.batches import sweep_partition
from services.fares.service_layer.repricing import incomplete_after

log = logging.getLogger(__name__)

EndOffsets = Callable[[str], Awaitable[dict[int, int]]]


@dataclass(frozen=True, slots=True)
class FaresPorts:
    """What the fares use cases talk to, once the service has started."""

    catalog: FareCatalog
    pool: asyncpg.Pool
    relay: OutboxRelay
    end_offsets: EndOffsets
    taps_topic: str


@dataclass(frozen=True, slots=True)
class ClosedDay:
    """What closing a service day did."""

    service_day: date
    cards_repriced: int
    revisions_published: int


def day_closes_at(catalog: FareCatalog, day: date) -> datetime:
    """End of `day` (the next day's boundary) plus the longest wait for an exit."""
    data = catalog.version_at(datetime.combine(day, time(12), catalog.versions[0].timezone))
    boundary = timedelta(seconds=data.settings.service_day_start_s)
    end = datetime.combine(day + timedelta(days=1), time(0), data.timezone) + boundary
    return end + incomplete_after(catalog, end)


async def stored_positions(pool: asyncpg.Pool, topic: str) -> dict[int, int]:
    """partition -> next offset to price, as stored by whichever instance owns it."""
    rows = await pool.fetch(
        "SELECT partition, next_offset FROM partition_state WHERE topic = $1", topic
    )
    return {r["partition"]: r["next_offset"] for r in rows}


async def wait_caught_up(ports: FaresPorts, timeout_s: float) -> bool:
    """True once every partition of the taps topic is priced up to the end it had when
    called (by any instance); False after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    ends = await ports.end_offsets(ports.taps_topic)
    while True:
        done = await stored_positions(ports.pool, ports.taps_topic)
        if all(done.get(p, 0) >= end for p, end in ends.items()):
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.1)


async def close_service_day(ports: FaresPorts, day: date, timeout_s: float) -> ClosedDay:
    """Price every entry of `day` still waiting for its exit as incomplete and publish."""
    if not await wait_caught_up(ports, timeout_s):
        raise CatchUpTimeoutError(f"taps not all priced within {timeout_s:g} s")
    close_at = day_closes_at(ports.catalog, day)
    async with ports.pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE closed_days IN EXCLUSIVE MODE")
        await StateStore(conn).close_day(day, close_at)
        rows = await conn.fetch(
            "SELECT DISTINCT partition FROM pending_cards WHERE due_at <= $1 ORDER BY 1",
            close_at,
        )
    cards = revisions = 0
    headers = kafka_headers_with_trace()
    for partition in [r["partition"] for r in rows]:
        async with ports.pool.acquire() as conn, conn.transaction():
            queued = await sweep_partition(
                StateStore(conn),
                ports.catalog,
                topic=ports.taps_topic,
                partition=partition,
                headers=headers,
            )
        cards += queued.cards_repriced
        revisions += len(queued.ids)
    # Relay what the sweeps queued (and anything an interrupted relay left behind).
    await ports.relay.flush()
    await ports.relay.drain()
    log.info(
        "service day closed",
        extra={"service_day": day.isoformat(), "cards": cards, "revisions": revisions},
    )
    return ClosedDay(day, cards, revisions)
