"""The journeys consumer: post each priced journey revision to the ledger, exactly once in effect.

At-least-once delivery (offsets committed only after the ledger transaction) plus an
idempotent ledger (a replayed revision adds nothing) gives an exactly-once effect.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import CommitFailedError, KafkaError
from opentelemetry import trace

from clearway.telemetry import consumer_span
from services.settlement.adapters.journey_events import decode_journey
from services.settlement.adapters.kafka_out import DeadLetters
from services.settlement.adapters.ledger_repository import LedgerRepository, PostResult
from services.settlement.domain.errors import InvalidJourneyError
from services.settlement.domain.ledger import JourneyRevision

log = logging.getLogger(__name__)
tracer = trace.get_tracer("clearway.settlement")

# Errors that say the record itself is bad, not that the database is unavailable.
_BAD_DATA = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
_MAX_BACKOFF_S = 5.0


@dataclass(slots=True)
class ConsumerStats:
    """Counts since start, for logs and tests."""

    posted: int = 0  # revisions processed (including ones that changed nothing)
    replayed: int = 0  # revisions skipped: not newer than the latest processed
    dead_lettered: int = 0


def _decode(record: ConsumerRecord[bytes, bytes]) -> JourneyRevision:
    return decode_journey(record.value)


def _short_hash(key: bytes | None) -> str:
    """A short hash of a record key (card token): traceable in logs, not the token."""
    return hashlib.sha256(key or b"").hexdigest()[:12]


class JourneyConsumer:
    """Reads `journeys`, posts each revision, dead-letters the unpostable, commits offsets."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        ledger: LedgerRepository,
        dead_letters: DeadLetters,
    ) -> None:
        self._consumer = consumer
        self._ledger = ledger
        self._dead_letters = dead_letters
        self.stats = ConsumerStats()

    async def run(self) -> None:
        """Consume until cancelled."""
        idle_polls = 0
        while True:
            batch = await self._consumer.getmany(timeout_ms=500, max_records=200)
            for records in batch.values():
                for record in records:
                    await self._handle(record)
            idle_polls = 0 if batch else idle_polls + 1
            # Commit after every batch; when idle, now and then too, so the committed
            # offsets also move past transaction markers (what the lag check compares).
            if batch or idle_polls % 4 == 1:
                await self._commit()

    async def _commit(self) -> None:
        try:
            await self._consumer.commit()
        except CommitFailedError:
            # A rebalance took the partitions; their new owner re-reads and the ledger
            # ignores what was already posted.
            log.warning("offset commit failed after a rebalance; records will be re-read")
        except KafkaError:
            log.warning("offset commit failed; will retry on the next batch", exc_info=True)

    async def _handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        with consumer_span(tracer, "settlement.post_journey", record) as span:
            try:
                journey = _decode(record)
                span.set_attribute("clearway.journey_id", journey.journey_id)
                span.set_attribute("clearway.revision", journey.revision)
                result = await self._post(journey)
            except InvalidJourneyError as exc:
                span.set_attribute("clearway.reason_code", exc.code)
                await self._dead_letter(record, exc.code, exc.detail)
                return
            if result.skipped:
                self.stats.replayed += 1
            else:
                self.stats.posted += 1
            log.debug(
                "journey posted",
                extra={
                    "journey_id": journey.journey_id,
                    "revision": journey.revision,
                    "period_id": result.period_id,
                    "inserted": result.inserted,
                    "skipped": result.skipped,
                },
            )

    async def _post(self, journey: JourneyRevision) -> PostResult:
        """Post, retrying while the database is unavailable; bad data becomes a dead letter."""
        backoff = 0.2
        while True:
            try:
                return await self._ledger.post(journey)
            except _BAD_DATA as exc:
                raise InvalidJourneyError("UNPOSTABLE", type(exc).__name__) from exc
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.warning(
                    "ledger unavailable; retrying",
                    extra={"journey_id": journey.journey_id, "backoff_s": backoff},
                    exc_info=True,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], code: str, detail: str
    ) -> None:
        await self._dead_letters.send(record, code, detail)
        self.stats.dead_lettered += 1
        log.warning(
            "journey dead-lettered",
            extra={
                "reason_code": code,
                "detail": detail,
                "card": _short_hash(record.key),
                "partition": record.partition,
                "offset": record.offset,
            },
        )
