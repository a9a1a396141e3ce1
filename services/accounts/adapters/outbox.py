"""The outbox: events written in the same PostgreSQL transaction as the change they
announce, relayed to Kafka afterwards.

`enqueue` adds rows inside the caller's transaction. `OutboxRelay.run` (a background
task) sends them oldest first with the idempotent producer (acks=all) and deletes them in
one transaction that holds an advisory lock, so instances of the service never relay at
the same time (no reordering, no double sends); a crash between the send and the delete
sends those rows again on restart (at least once: every consumer of these topics applies
a repeat as a no-op). Rows of one card are queued while its balance row is locked, so
their ids follow the order of its changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaProducer

from clearway.consumer import RetryPolicy, back_off_after
from clearway.kafka import publish_many
from clearway.telemetry import kafka_headers_with_trace

log = logging.getLogger(__name__)

# One relay at a time per schema (instances of one service share a schema).
_TRY_RELAY_LOCK = (
    "SELECT pg_try_advisory_xact_lock(hashtext('clearway.outbox.' || current_schema()))"
)
BATCH_ROWS = 500
IDLE_POLL_S = 1.0


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A Kafka record to send once the transaction that queued it commits; a value of None
    is a tombstone (a compacted topic then forgets the key)."""

    topic: str
    key: bytes
    value: bytes | None


async def enqueue(conn: asyncpg.Connection, messages: Sequence[OutboxMessage]) -> None:
    """Queue `messages` in the caller's transaction."""
    if not messages:
        return
    await conn.execute(
        "INSERT INTO outbox (topic, key, value)"
        " SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[])",
        [m.topic for m in messages],
        [m.key for m in messages],
        [m.value for m in messages],
    )


def _value(stored: bytes | None) -> bytes | None:
    """A row's value as `publish_many` takes it; a tombstone (NULL) stays None."""
    return None if stored is None else bytes(stored)


class OutboxRelay:
    """Sends what the outbox holds to Kafka; woken by `notify` after a commit, and polls
    every second for rows left by a crash or queued by another instance."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        retry: RetryPolicy | None = None,
        idle_poll_s: float = IDLE_POLL_S,
    ) -> None:
        self.pool = pool
        self.producer = producer
        self.retry = retry or RetryPolicy()
        self.idle_poll_s = idle_poll_s
        self.relayed = 0
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """Something was queued and committed: relay soon."""
        self._wake.set()

    async def run(self) -> None:
        """Relay until cancelled; failures (Kafka or PostgreSQL away) are retried."""
        delays = self.retry.delays()
        while True:
            try:
                while await self.relay_once():
                    pass
                delays = self.retry.delays()
            except Exception as exc:
                await back_off_after("outbox relay failed", exc, delays, log)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.idle_poll_s)

    async def relay_once(self) -> int:
        """Send and delete up to BATCH_ROWS of the oldest rows; how many (0 when empty, or
        when another instance is relaying)."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(_TRY_RELAY_LOCK):
                return 0
            rows = await conn.fetch(
                "SELECT outbox_id, topic, key, value FROM outbox ORDER BY outbox_id LIMIT $1",
                BATCH_ROWS,
            )
            if not rows:
                return 0
            headers = kafka_headers_with_trace()
            by_topic: dict[str, list[tuple[bytes, bytes | None, list[tuple[str, bytes]]]]] = {}
            for r in rows:
                by_topic.setdefault(r["topic"], []).append(
                    (bytes(r["key"]), _value(r["value"]), headers)
                )
            for topic, messages in by_topic.items():
                await publish_many(self.producer, topic, messages)
            await conn.execute(
                "DELETE FROM outbox WHERE outbox_id = ANY($1::bigint[])",
                [r["outbox_id"] for r in rows],
            )
        self.relayed += len(rows)
        return len(rows)

    async def drain(self) -> None:
        """Relay everything queued so far (tests, and a graceful stop)."""
        while await self.relay_once():
            pass
