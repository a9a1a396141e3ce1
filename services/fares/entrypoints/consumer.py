"""The taps handler: priced journeys and adjustments out, with an exactly-once effect.

The kit's loop (clearway.consumer) hands this handler a batch of one `taps` partition.
One PostgreSQL transaction row-locks the partition's stored position (fencing off a
zombie consumer of the same partition), stores the new taps, re-prices each touched card
in memory as if the records came one by one (services/fares/service_layer/repricing.py),
writes what changed, queues the revisions in an outbox and advances the stored position.
After the commit the revisions are relayed to `journeys` (idempotent producer, acks=all)
and removed from the outbox. A crash before the relay finishes re-sends byte-identical
revisions, which settlement and accounts store idempotently by (journey, revision).
Positions live in PostgreSQL (`StoredPositions`); the consumer seeks there on assignment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaProducer
from google.protobuf.message import DecodeError

from clearway.consumer import PartitionBatch, PoisonRecordError, Record
from clearway.events.v1 import events_pb2
from clearway.kafka import publish_many
from clearway.telemetry import kafka_headers_with_trace
from services.fares.adapters.convert import BadTapError, tap_from_proto
from services.fares.adapters.state_store import StateStore
from services.fares.domain import FaresError, check_tap
from services.fares.domain.model import FareCatalog
from services.fares.service_layer.batches import Queued, TapRecord, price_batch

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PricingStats:
    """Counts since start, for logs and tests."""

    taps: int = 0
    revisions: int = 0
    relayed: int = 0


class OutboxRelay:
    """Publishes queued revisions in outbox order and forgets them once Kafka has them."""

    def __init__(self, pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str) -> None:
        self.pool = pool
        self.producer = producer
        self.topic = topic
        self._lock = asyncio.Lock()

    async def publish(self, queued: Queued) -> int:
        """Relay revisions just committed (from memory)."""
        if not queued.ids:
            return 0
        async with self._lock:
            await publish_many(
                self.producer,
                self.topic,
                [(q.card_token.encode(), q.body, q.headers) for q in queued.revisions],
            )
            await self._forget(queued.ids)
        return len(queued.ids)

    async def drain(self, partitions: Sequence[int] | None = None) -> int:
        """Relay what is left in the outbox (of those partitions, or all) after a crash or
        an interrupted relay, oldest first."""
        sent = 0
        async with self._lock:
            while True:
                async with self.pool.acquire() as conn:
                    rows = await StateStore(conn).outbox(partitions)
                if not rows:
                    return sent
                await publish_many(
                    self.producer,
                    self.topic,
                    [(r.card_token.encode(), r.body, r.headers) for r in rows],
                )
                await self._forget([r.id for r in rows])
                sent += len(rows)

    async def _forget(self, ids: Sequence[int]) -> None:
        async with self.pool.acquire() as conn:
            await StateStore(conn).remove_from_outbox(ids)


class TapPricer:
    """Decodes taps, prices each partition batch, relays the outbox (a `BatchHandler` that
    is also the `PositionStore` of its commit policy)."""

    name = "fares.price_taps"

    def __init__(
        self, *, pool: asyncpg.Pool, catalog: FareCatalog, relay: OutboxRelay, taps_topic: str
    ) -> None:
        self.pool = pool
        self.catalog = catalog
        self.relay = relay
        self.taps_topic = taps_topic
        self.stats = PricingStats()
        # Partitions whose outbox may hold rows a previous owner (or an interrupted
        # relay) left behind: drained before their next batch.
        self._unrelayed: set[int] = set()

    def decode(self, record: Record) -> TapRecord:
        """A tap the fare data can price; PoisonRecordError with its reason if not."""
        value: bytes = record.value or b""
        try:
            tap = tap_from_proto(events_pb2.Tap.FromString(value))
            check_tap(self.catalog, tap)
        except DecodeError as exc:
            raise PoisonRecordError("UNREADABLE_TAP", f"not a Tap: {exc}") from None
        except (BadTapError, FaresError) as exc:
            raise PoisonRecordError(str(exc.code), str(exc)) from None
        return TapRecord(tap, value, int(record.offset))

    async def stored_positions(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        """Where each partition's processing stands (PositionStore); the outbox of newly
        assigned partitions is drained before their first batch."""
        self._unrelayed.update(partitions)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT partition, next_offset FROM partition_state WHERE topic = $1", topic
            )
        return {r["partition"]: r["next_offset"] for r in rows}

    async def handle(self, batch: PartitionBatch[TapRecord]) -> None:
        """Price the batch in one transaction, then relay its revisions."""
        if batch.partition in self._unrelayed:
            await self.relay.drain([batch.partition])
            self._unrelayed.discard(batch.partition)
        headers = kafka_headers_with_trace()
        async with self.pool.acquire() as conn, conn.transaction():
            queued = await price_batch(
                StateStore(conn),
                self.catalog,
                topic=batch.topic,
                partition=batch.partition,
                records=[item.value for item in batch.items],
                next_offset=batch.next_offset,
                headers=headers,
            )
        self.stats.taps += len(batch.items)
        self.stats.revisions += len(queued.ids)
        try:
            self.stats.relayed += await self.relay.publish(queued)
        except BaseException:
            self._unrelayed.add(batch.partition)  # committed but not relayed: drain first
            raise
