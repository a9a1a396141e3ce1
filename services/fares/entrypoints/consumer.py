"""The fares consumer: taps in, priced journeys and adjustments out, with an exactly-once effect.

Each Kafka record is processed in one PostgreSQL transaction that stores the tap,
re-prices the card, queues the changed revisions in an outbox and advances the
partition's position (row-locked, so a zombie consumer of the same partition skips
what another already did). The outbox is then relayed to `journeys` with an
idempotent producer; a crash before the relay finishes re-sends byte-identical
revisions, which settlement and accounts store idempotently by (journey, revision).
On assignment the consumer seeks to the position kept in PostgreSQL, not Kafka's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from opentelemetry import trace

from clearway.events.v1 import events_pb2
from clearway.kafka import send_dead_letter
from clearway.telemetry import consumer_span
from services.fares.adapters.convert import BadTapError, tap_from_proto
from services.fares.adapters.state_store import StateStore
from services.fares.domain import FaresError, check_tap
from services.fares.domain.model import FareCatalog
from services.fares.service_layer.repricing import reprice_card

log = logging.getLogger(__name__)
tracer = trace.get_tracer("clearway.fares")


class _SeekToStoredPositions(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: AIOKafkaConsumer, pool: asyncpg.Pool, topic: str) -> None:
        self.consumer = consumer
        self.pool = pool
        self.topic = topic

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT partition, next_offset FROM partition_state WHERE topic = $1", self.topic
            )
        stored = {r["partition"]: r["next_offset"] for r in rows}
        for tp in assigned:
            if tp.partition in stored:
                self.consumer.seek(tp, stored[tp.partition])
            else:
                await self.consumer.seek_to_beginning(tp)


class TapPricer:
    """Consumes `taps`, prices, relays the outbox to `journeys`; parks unreadable taps."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        catalog: FareCatalog,
        taps_topic: str,
        journeys_topic: str,
        dlq_topic: str,
    ) -> None:
        self.pool = pool
        self.consumer = consumer
        self.producer = producer
        self.catalog = catalog
        self.taps_topic = taps_topic
        self.journeys_topic = journeys_topic
        self.dlq_topic = dlq_topic
        self.processed = 0
        self.idle = False
        self._outbox_lock = asyncio.Lock()

    def listener(self) -> ConsumerRebalanceListener:
        """The rebalance listener to subscribe with."""
        return _SeekToStoredPositions(self.consumer, self.pool, self.taps_topic)

    async def run(self) -> None:
        """Consume until cancelled. A failing record is retried, never skipped."""
        await self._retrying("relaying the outbox", self.relay_outbox)
        while True:
            batches = await self.consumer.getmany(timeout_ms=500, max_records=200)
            self.idle = not batches
            for tp, records in batches.items():
                for record in records:
                    await self._retrying(
                        "pricing a tap", functools.partial(self.process, tp, record)
                    )
            if batches:
                await self._retrying("relaying the outbox", self.relay_outbox)
                with contextlib.suppress(KafkaError):
                    await self.consumer.commit()  # lag monitoring only; PostgreSQL is the truth

    async def _retrying(self, what: str, step: Callable[[], Awaitable[object]]) -> None:
        """Run `step` until it succeeds (PostgreSQL or Kafka briefly away), backing off."""
        delay = 0.2
        while True:
            try:
                await step()
                return
            except (asyncpg.PostgresError, OSError, KafkaError, TimeoutError):
                log.warning("retrying", extra={"step": what, "backoff_s": delay}, exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def process(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        """Handle one record exactly once (idempotent on the stored partition position)."""
        with consumer_span(tracer, "fares.price_tap", record):
            try:
                tap_pb = events_pb2.Tap.FromString(record.value or b"")
                tap = tap_from_proto(tap_pb)
                check_tap(self.catalog, tap)
            except (BadTapError, FaresError, ValueError) as exc:
                code = getattr(exc, "code", "UNREADABLE_TAP")
                await self._park(tp, record, str(code), str(exc))
                return
            async with self.pool.acquire() as conn, conn.transaction():
                store = StateStore(conn)
                position = await store.lock_position(tp.topic, tp.partition)
                if record.offset < position.next_offset:
                    return  # already processed before a crash or by a fenced-off consumer
                watermark = max(filter(None, [position.watermark, tap.tapped_at]))
                if await store.add_tap(tap.tap_id, tap.card_token, tap.tapped_at, record.value):
                    as_of = await self._as_of(store, watermark)
                    await reprice_card(
                        store,
                        self.catalog,
                        tap.card_token,
                        partition=tp.partition,
                        around=tap.tapped_at,
                        as_of=as_of,
                    )
                    if position.watermark is None or watermark > position.watermark:
                        await self._sweep(store, tp.partition, as_of)
                await store.advance(tp.topic, tp.partition, record.offset + 1, watermark)
            self.processed += 1

    async def _as_of(self, store: StateStore, watermark: datetime) -> datetime:
        closed = await store.closed_through()
        return max(watermark, closed) if closed else watermark

    async def _sweep(self, store: StateStore, partition: int | None, as_of: datetime) -> int:
        """Re-price cards whose waiting entries became incomplete by `as_of`."""
        cards = await store.due_cards(partition, as_of)
        revisions = 0
        for card, card_partition in cards:
            revisions += await reprice_card(
                store,
                self.catalog,
                card,
                partition=card_partition,
                around=as_of,
                as_of=as_of,
            )
        return revisions

    async def close_through(self, service_day_end: datetime, day: str) -> tuple[int, int]:
        """Close pricing up to `service_day_end`: price due waiting entries as incomplete."""
        async with self.pool.acquire() as conn, conn.transaction():
            store = StateStore(conn)
            await conn.execute("LOCK TABLE closed_days IN EXCLUSIVE MODE")
            await store.close_day(datetime.fromisoformat(day).date(), service_day_end)
            cards = await store.due_cards(None, service_day_end)
            with tracer.start_as_current_span("fares.close_service_day"):
                revisions = await self._sweep(store, None, service_day_end)
        await self.relay_outbox()
        return len(cards), revisions

    async def relay_outbox(self) -> int:
        """Publish queued revisions in order; remove them once Kafka has them."""
        sent = 0
        async with self._outbox_lock:
            while True:
                async with self.pool.acquire() as conn:
                    rows = await StateStore(conn).outbox()
                if not rows:
                    return sent
                futures = [
                    await self.producer.send(
                        self.journeys_topic,
                        value=row.body,
                        key=row.card_token.encode(),
                        headers=row.headers,
                    )
                    for row in rows
                ]
                await asyncio.gather(*futures)
                async with self.pool.acquire() as conn:
                    await StateStore(conn).remove_from_outbox([r.id for r in rows])
                sent += len(rows)

    async def _park(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes], code: str, detail: str
    ) -> None:
        """Dead-letter a tap the engine cannot price, and move past it exactly once."""
        async with self.pool.acquire() as conn, conn.transaction():
            store = StateStore(conn)
            position = await store.lock_position(tp.topic, tp.partition)
            if record.offset < position.next_offset:
                return
            await send_dead_letter(self.producer, self.dlq_topic, record, code, detail)
            await store.advance(tp.topic, tp.partition, record.offset + 1, position.watermark)
        log.warning("tap parked", extra={"reason": code, "detail": detail[:200]})
