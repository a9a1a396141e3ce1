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

from clearway.consumer import (
    PartitionBatch,
    PoisonRecordError,
    Record,
    RetryPolicy,
    back_off_after,
)
from clearway.events.v1 import events_pb2
from clearway.kafka import publish_many
from clearway.telemetry import kafka_headers_with_trace
from services.fares.adapters.convert import BadTapError, tap_from_proto
from services.fares.adapters.state_store import StateStore
from services.fares.domain import FaresError, check_tap
from services.fares.domain.model import FareCatalog
from services.fares.service_layer.batches import Queued, TapRecord, price_batch
from services.fares.service_layer.repricing import service_day_of

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PricingStats:
    """Counts since start, for logs and tests."""

    taps: int = 0
    revisions: int = 0


class OutboxRelay:
    """Publishes queued revisions in outbox order and forgets them once Kafka has them.

    Each partition's relays run one after another in the background, so a batch's
    revisions go out while the next batch is priced; `submit` waits for the partition's
    previous relay first (order, and at most one batch per partition waiting in memory).
    A relay that fails (Kafka away) retries with back-off from the outbox table, oldest
    first, so nothing is lost or reordered; a crash leaves the rows for the next owner.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        topic: str,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.pool = pool
        self.producer = producer
        self.topic = topic
        self.retry = retry or RetryPolicy()
        self.relayed = 0
        self._chains: dict[int, asyncio.Task[None]] = {}
        self._from_table: set[int] = set()  # partitions whose outbox must be drained first
        self._drain_lock = asyncio.Lock()

    def recover(self, partitions: Sequence[int]) -> None:
        """Relay what earlier owners of these partitions left in the outbox."""
        for partition in partitions:
            self._from_table.add(partition)
            self._chain(partition, None)

    async def submit(self, queued: Queued) -> None:
        """Relay a committed batch's revisions after the partition's previous relay."""
        previous = self._chains.get(queued.partition)
        if previous is not None:
            await asyncio.shield(previous)
        if queued.ids or queued.partition in self._from_table:
            self._chain(queued.partition, queued)

    def _chain(self, partition: int, queued: Queued | None) -> None:
        previous = self._chains.get(partition)
        self._chains[partition] = asyncio.create_task(
            self._relay(partition, queued, previous), name=f"outbox relay {partition}"
        )

    async def _relay(
        self, partition: int, queued: Queued | None, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:
            await asyncio.shield(previous)
        delays = self.retry.delays()
        while True:
            try:
                if partition in self._from_table:
                    self.relayed += await self.drain([partition])
                    self._from_table.discard(partition)
                elif queued is not None and queued.ids:
                    await publish_many(
                        self.producer,
                        self.topic,
                        [(q.card_token.encode(), q.body, q.headers) for q in queued.revisions],
                    )
                    await self._forget(queued.ids)
                    self.relayed += len(queued.ids)
                return
            except Exception as exc:
                self._from_table.add(partition)  # retry from the table, in order
                await back_off_after("outbox relay failed", exc, delays, log, partition=partition)

    async def drain(self, partitions: Sequence[int] | None = None) -> int:
        """Relay what is in the outbox (of those partitions, or all), oldest first."""
        sent = 0
        async with self._drain_lock:
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

    async def flush(self, partitions: Sequence[int] | None = None) -> None:
        """Wait for the relays under way (of those partitions, or all)."""
        chains = [
            chain
            for partition, chain in self._chains.items()
            if partitions is None or partition in partitions
        ]
        if chains:
            await asyncio.gather(*(asyncio.shield(c) for c in chains))

    async def close(self, timeout_s: float = 5.0) -> None:
        """Flush (bounded); what is left stays in the outbox for the next owner."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.flush()
        except TimeoutError:
            log.warning("outbox relay unfinished at stop; the next owner relays it")
        for chain in self._chains.values():
            chain.cancel()

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
        return TapRecord(
            tap, value, int(record.offset), service_day_of(self.catalog, tap.tapped_at)
        )

    async def stored_positions(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        """Where each partition's processing stands (PositionStore); what earlier owners
        left in the outbox of newly assigned partitions is relayed first."""
        self.relay.recover(partitions)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT partition, next_offset FROM partition_state WHERE topic = $1", topic
            )
        return {r["partition"]: r["next_offset"] for r in rows}

    async def positions_released(self, topic: str, partitions: Sequence[int]) -> None:
        """Partitions are taken away: finish relaying their revisions first, so the next
        owner does not find them in the outbox and send them again."""
        await self.relay.flush(partitions)

    async def handle(self, batch: PartitionBatch[TapRecord]) -> None:
        """Price the batch in one transaction, then hand its revisions to the relay."""
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
        await self.relay.submit(queued)
