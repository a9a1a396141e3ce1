"""Kafka consumer loop: `journeys` → PostgreSQL (+ cache invalidation), DLQ for the unstorable.

Offsets are committed only after the database write (or the dead-letter send), so a
crash redelivers; the store is idempotent, so a redelivery or a replay adds nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from google.protobuf.message import DecodeError
from opentelemetry import trace

from clearway.events.v1.events_pb2 import PricedJourney
from clearway.kafka import send_dead_letter
from clearway.telemetry import consumer_span
from services.accounts.domain.errors import InvalidJourneyError
from services.accounts.domain.history import JourneyRevision, journey_revision
from services.accounts.domain.paging import card_tag
from services.accounts.service_layer.journey_history import JourneyHistory

log = logging.getLogger(__name__)
tracer = trace.get_tracer("clearway.accounts")

MAX_DETAIL_CHARS = 500
_RETRY_FIRST_S = 0.2
_RETRY_MAX_S = 5.0


def parse_journey(record: ConsumerRecord[Any, Any]) -> JourneyRevision:
    """The revision a record carries; InvalidJourneyError (with a reason code) if none."""
    value: bytes = record.value or b""
    try:
        journey = PricedJourney.FromString(value)
    except DecodeError as exc:
        raise InvalidJourneyError("UNDECODABLE", f"not a PricedJourney: {exc}") from None
    return journey_revision(journey, record.key, value)


class JourneyConsumer:
    """Consumes `journeys` for the accounts group until `stop()`."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        history: JourneyHistory,
        dlq_topic: str,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._history = history
        self.dlq_topic = dlq_topic
        self._stopping = asyncio.Event()
        self.stored = 0
        self.dead_lettered = 0

    def stop(self) -> None:
        """Ask the loop to finish the record in hand, commit, and return."""
        self._stopping.set()

    async def run(self) -> None:
        """Poll, handle each record in partition order, commit what was handled."""
        while not self._stopping.is_set():
            batches = await self._consumer.getmany(timeout_ms=500, max_records=200)
            for tp, records in batches.items():
                done = await self._handle_all(records)
                if done is not None:
                    await self._commit(tp, done.offset + 1)
                if self._stopping.is_set():
                    return

    async def _handle_all(
        self, records: list[ConsumerRecord[Any, Any]]
    ) -> ConsumerRecord[Any, Any] | None:
        last = None
        for record in records:
            if not await self._retrying(record):
                break
            last = record
        return last

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        try:
            await self._consumer.commit({tp: offset})
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partition; its new owner replays (the store is idempotent).
            log.warning(
                "offset commit failed", extra={"partition": tp.partition, "error": str(exc)}
            )

    async def _retrying(self, record: ConsumerRecord[Any, Any]) -> bool:
        """Handle one record, retrying infrastructure failures; False if stopped first."""
        delay = _RETRY_FIRST_S
        while True:
            try:
                await self._handle(record)
                return True
            except Exception:
                log.exception(
                    "storing a journey failed; retrying",
                    extra={"partition": record.partition, "offset": record.offset},
                )
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
                return False
            except TimeoutError:
                delay = min(delay * 2, _RETRY_MAX_S)

    async def _handle(self, record: ConsumerRecord[Any, Any]) -> None:
        with consumer_span(tracer, "accounts.store_journey", record) as span:
            try:
                rev = parse_journey(record)
            except InvalidJourneyError as exc:
                span.set_attribute("accounts.reason_code", exc.code)
                await self._dead_letter(record, exc)
                return
            span.set_attribute("accounts.journey_id", rev.journey_id)
            span.set_attribute("accounts.revision", rev.revision)
            outcome = await self._history.record(rev)
            self.stored += 1
            log.info(
                "journey stored",
                extra={
                    "journey_id": rev.journey_id,
                    "revision": rev.revision,
                    "card": card_tag(rev.card_token),
                    "new_revision": outcome.new_revision,
                    "became_latest": outcome.became_latest,
                },
            )

    async def _dead_letter(
        self, record: ConsumerRecord[Any, Any], exc: InvalidJourneyError
    ) -> None:
        await send_dead_letter(
            self._producer, self.dlq_topic, record, exc.code, exc.detail[:MAX_DETAIL_CHARS]
        )
        self.dead_lettered += 1
        log.warning(
            "journey dead-lettered",
            extra={"reason_code": exc.code, "partition": record.partition, "offset": record.offset},
        )
