"""Following a one-partition compacted topic into memory: the deny list (`denylist`) and
the cards' concessions (`concessions`) are each kept whole in every ingest process.

A `TopicFollower` reads its topic from the beginning before the process reports SERVING
(`start`), then follows it (`run`) until `stop`, feeding every record, in offset order, to
a `FollowedRecords`: the topic's own decoding and the pure state it keeps. The state's
version is the offset of the last record applied + 1 (the topic has one partition, so
offsets number its versions); `wait_beyond` wakes on every change. Card tokens are never
logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError

from clearway.errors import is_infrastructure_error
from clearway.kafka import client_options

log = logging.getLogger(__name__)

# Short polls: a change must reach a subscribed validator (or the next tap) within seconds.
POLL_TIMEOUT_MS = 200
# How long `stop` waits for `run` to notice and return.
STOP_GRACE_S = 5.0
# After a failed poll (Kafka away), wait this long before the next.
RETRY_DELAY_S = 1.0


class TopicLayoutError(RuntimeError):
    """The topic cannot carry the state (more than one partition: offsets would not number
    versions)."""


class FollowedRecords(Protocol):
    """What a follower feeds: a topic's records decoded into the state they build."""

    @property
    def version(self) -> int:
        """The offset of the last record applied + 1 (0: none yet)."""
        ...

    def __len__(self) -> int:
        """How many entries the state holds (for the start-up log line)."""
        ...

    def apply(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Apply `records` (in offset order); each moves the version to its offset + 1,
        also one that carries nothing usable."""
        ...


class TopicFollower:
    """This process's copy of a one-partition compacted topic's state.

    `start` rebuilds it up to the end of the topic seen at start, `run` (a background task)
    follows it until `stop`; `wait_beyond` wakes on every applied record.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        records: FollowedRecords,
        *,
        what: str,
        poll_timeout_ms: int = POLL_TIMEOUT_MS,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._records = records
        self._what = what  # how logs name the state: "deny list", "concessions"
        self._partition = TopicPartition(topic, 0)
        self._poll_timeout_ms = poll_timeout_ms
        self._consumer: AIOKafkaConsumer | None = None
        # Replaced on every change: a waiter waits on the one current when it looked.
        self._changed = asyncio.Event()
        self._stopping = False
        self._running = False
        self._run_done = asyncio.Event()

    @property
    def version(self) -> int:
        """The state's version (0: empty, never changed)."""
        return self._records.version

    @property
    def stopped(self) -> bool:
        """True once `stop` was called: waiters should end."""
        return self._stopping

    async def start(self) -> None:
        """Read the topic from the beginning and return once everything up to its end at
        start is applied (only then may ingest report SERVING)."""
        consumer = AIOKafkaConsumer(
            **client_options(self._bootstrap),
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
                raise TopicLayoutError(
                    f"the {self._what} topic {self._topic} has {len(partitions)} partitions;"
                    " it must have exactly one"
                )
            while await consumer.position(self._partition) < end:
                await self._poll(consumer)
        except BaseException:
            self._consumer = None
            await consumer.stop()
            raise
        log.info(
            f"{self._what} loaded",
            extra={"topic": self._topic, "version": self.version, "entries": len(self._records)},
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
                        f"{self._what} poll failed; retrying",
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
                log.warning(
                    f"{self._what} follower did not stop in time", extra={"topic": self._topic}
                )
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def wait_beyond(self, version: int, timeout_s: float) -> bool:
        """True as soon as the state's version is above `version`; False when `timeout_s`
        passes first, or the follower stops."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._records.version <= version:
            remaining = deadline - loop.time()
            if self._stopping or remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return self._records.version > version
        return True

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        batches = await consumer.getmany(self._partition, timeout_ms=self._poll_timeout_ms)
        records = batches.get(self._partition, [])
        if records:
            self._records.apply(records)
            self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
