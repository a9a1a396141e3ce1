"""The deny list on Kafka: its changes are `DenyListChange` events on the `denylist` topic
(key = card token, one partition, compacted), so the list's version is the offset of its
latest change + 1 and reading the topic from the beginning rebuilds the whole list.

`DenyListPublisher` writes changes (acks=all); `DenyListFollower` keeps this process's copy
of the list up to date and wakes whoever waits for a change. Card tokens are never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError
from google.protobuf.message import DecodeError

from clearway.errors import is_infrastructure_error
from clearway.events.v1 import events_pb2
from clearway.telemetry import kafka_headers_with_trace
from services.ingest.domain.deny_list import MAX_KEPT_CHANGES, DenyList

log = logging.getLogger(__name__)

ADD = events_pb2.DenyListChange.ACTION_ADD
REMOVE = events_pb2.DenyListChange.ACTION_REMOVE
# Short polls: a change must reach a subscribed validator within seconds.
POLL_TIMEOUT_MS = 200
# How long `stop` waits for `run` to notice and return.
STOP_GRACE_S = 5.0
# After a failed poll (Kafka away), wait this long before the next.
RETRY_DELAY_S = 1.0


class DenyListTopicError(RuntimeError):
    """The topic cannot carry the list (more than one partition: offsets would not number
    versions)."""


class DenyListPublisher:
    """Publishes deny-list changes and answers with the version that holds each one."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def publish(
        self, card_token: str, add: bool, reason: int, changed_by: str, at: datetime
    ) -> int:
        """Write one change and return the list's version once it is applied (its offset +
        1), once every in-sync replica holds it (with the producer's acks=all)."""
        change = events_pb2.DenyListChange(
            card_token=card_token,
            action=ADD if add else REMOVE,
            reason=reason if add else 0,
            changed_by=changed_by,
        )
        change.changed_at.FromDatetime(at)
        metadata = await self._producer.send_and_wait(
            self._topic,
            key=card_token.encode(),
            value=change.SerializeToString(deterministic=True),
            partition=0,  # the one partition: its offsets number the versions
            headers=kafka_headers_with_trace(),
        )
        return int(metadata.offset) + 1


def _decoded(record: ConsumerRecord[bytes, bytes]) -> events_pb2.DenyListChange | None:
    """The change a record carries; None (logged, never with the token) when it carries
    none that can be applied."""
    change = events_pb2.DenyListChange()
    try:
        change.ParseFromString(record.value or b"")
    except DecodeError:
        problem = "the value is not a DenyListChange"
    else:
        if change.action not in (ADD, REMOVE):
            problem = "the action is neither ADD nor REMOVE"
        elif not change.card_token:
            problem = "the card token is empty"
        elif record.key != change.card_token.encode():
            # Compaction goes by key: a key that is not the card token would lose changes.
            problem = "the key is not the card token"
        else:
            return change
    log.warning(
        "deny-list change skipped",
        extra={"offset": record.offset, "problem": problem, "topic": record.topic},
    )
    return None


def _changed_at(
    change: events_pb2.DenyListChange, record: ConsumerRecord[bytes, bytes]
) -> datetime:
    """When the change was made; the record's timestamp when the change does not say."""
    if change.HasField("changed_at"):
        try:
            return change.changed_at.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):
            pass  # out of datetime's range: the record's own time will do
    return datetime.fromtimestamp(record.timestamp / 1000, tz=UTC)


class DenyListFollower:
    """This process's copy of the deny list, following the topic (implements the tap path's
    DenyListView: `blocked`, `version`).

    `start` rebuilds the list up to the end of the topic seen at start, `run` (a background
    task) follows it until `stop`; `wait_beyond` wakes on every applied change.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        max_changes: int = MAX_KEPT_CHANGES,
        poll_timeout_ms: int = POLL_TIMEOUT_MS,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._partition = TopicPartition(topic, 0)
        self._poll_timeout_ms = poll_timeout_ms
        self._list = DenyList(max_changes)
        self._consumer: AIOKafkaConsumer | None = None
        # Replaced on every change: a waiter waits on the one current when it looked.
        self._changed = asyncio.Event()
        self._stopping = False
        self._running = False
        self._run_done = asyncio.Event()

    @property
    def deny_list(self) -> DenyList:
        """The list as applied so far (read it; only the follower applies changes)."""
        return self._list

    @property
    def version(self) -> int:
        """The list's version (0: empty, never changed)."""
        return self._list.version

    @property
    def stopped(self) -> bool:
        """True once `stop` was called: waiters should end."""
        return self._stopping

    def blocked(self, card_token: str) -> bool:
        """True when the card is on the list."""
        return self._list.blocked(card_token)

    async def start(self) -> None:
        """Read the topic from the beginning and return once everything up to its end at
        start is applied (only then may ingest report SERVING)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        self._consumer = consumer
        try:
            consumer.assign([self._partition])
            await consumer.seek_to_beginning(self._partition)
            end = (await consumer.end_offsets([self._partition]))[self._partition]
            partitions = consumer.partitions_for_topic(self._topic)
            if partitions is not None and len(partitions) != 1:
                raise DenyListTopicError(
                    f"the deny-list topic {self._topic} has {len(partitions)} partitions; "
                    "it must have exactly one"
                )
            while await consumer.position(self._partition) < end:
                await self._poll(consumer)
        except BaseException:
            self._consumer = None
            await consumer.stop()
            raise
        log.info(
            "deny list loaded",
            extra={"topic": self._topic, "version": self.version, "entries": len(self._list)},
        )

    async def run(self) -> None:
        """Follow the topic until `stop`; a failed poll (Kafka away) is retried."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("start the follower before running it")
        self._running = True
        self._run_done.clear()
        try:
            while not self._stopping:
                try:
                    await self._poll(consumer)
                except ConsumerStoppedError:
                    return
                except Exception as exc:
                    if not (isinstance(exc, KafkaError) or is_infrastructure_error(exc)):
                        raise  # a defect: let whoever runs the task see it
                    log.warning(
                        "deny-list poll failed; retrying",
                        extra={"topic": self._topic, "error": type(exc).__name__},
                    )
                    await asyncio.sleep(RETRY_DELAY_S)
        finally:
            self._running = False
            self._run_done.set()

    async def stop(self) -> None:
        """Stop following: waiters wake and end, `run` returns, the consumer closes."""
        self._stopping = True
        self._wake()
        if self._running:
            try:
                await asyncio.wait_for(self._run_done.wait(), STOP_GRACE_S)
            except TimeoutError:
                log.warning("deny-list follower did not stop in time", extra={"topic": self._topic})
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def wait_beyond(self, version: int, timeout_s: float) -> bool:
        """True as soon as the list's version is above `version`; False when `timeout_s`
        passes first, or the follower stops."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._list.version <= version:
            remaining = deadline - loop.time()
            if self._stopping or remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return self._list.version > version
        return True

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        batches = await consumer.getmany(self._partition, timeout_ms=self._poll_timeout_ms)
        records = batches.get(self._partition, [])
        if records:
            self._apply(records)
            self._wake()

    def _apply(self, records: Iterable[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:
            version = record.offset + 1
            change = _decoded(record)
            if change is None:
                self._list.advance(version)  # the version still counts the record
                continue
            self._list.apply(
                version,
                change.card_token,
                change.action == ADD,
                change.reason,
                _changed_at(change, record),
            )

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
