"""The consumer kit: every Kafka consumer in Clearway is a `BatchHandler` given to one loop.

The loop owns what every consumer must get right, once:
- polling, and handing the handler a *batch of records of one partition* in offset order;
- decoding each record first; a record that cannot be decoded is a poison record;
- one retry policy: an infrastructure error (PostgreSQL, Kafka, Redis or the network
  briefly away, see `clearway.errors`) retries the same batch with back-off and commits
  nothing; any other error isolates the failing record by splitting the batch, parks
  that record on the dead-letter topic with a reason and goes on (never a crash loop);
  a defect in the code (SQL the database refuses, a Python TypeError...) is retried
  like an outage and logged at ERROR, so a bug never dead-letters the stream;
- a pluggable commit policy: `KafkaCommits` (commit the offset after the handler's sink
  committed; at-least-once + idempotent sink) or `StoredPositions` (the handler stores
  the partition's position in its own transaction; the loop seeks there on assignment);
- a cooperative stop: `request_stop()` lets the batch in hand finish, then the loop ends;
- one CONSUMER span per batch, linked to the trace context of each record;
- metrics (OpenTelemetry, served at /metrics): records, batches, dead letters and retries
  by consumer group and topic, a batch-size histogram, lag per partition (docs/metrics.md).

Dead-letter topics follow one rule: `<source topic>.<service>.dlq` (`dead_letter_topic`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeAlias, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from opentelemetry import metrics, trace

from clearway.errors import ClearwayError, infrastructure_reason, is_defect, reason_code
from clearway.kafka import client_options, send_dead_letter
from clearway.telemetry import ObservedGauge, context_from_kafka_headers

log = logging.getLogger(__name__)
tracer = trace.get_tracer("clearway.consumer")
meter = metrics.get_meter("clearway.consumer")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
Record: TypeAlias = Any  # aiokafka's ConsumerRecord[bytes, bytes] (aiokafka is untyped)

MAX_LINKS = 64  # span links per batch span (OpenTelemetry's default limit is 128)
MAX_DETAIL_CHARS = 500


def dead_letter_topic(source_topic: str, service: str) -> str:
    """The one naming rule: records of `source_topic` that `service` parks go to
    `<source_topic>.<service>.dlq` (the source topic already carries any prefix)."""
    return f"{source_topic}.{service}.dlq"


class PoisonRecordError(Exception):
    """A record that can never be handled; raise it from `decode` (or `handle`) with a code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Item(Generic[T_co]):
    """A decoded record: the record as read, and what `decode` made of it."""

    record: Record
    value: T_co

    @property
    def offset(self) -> int:
        """The record's offset in its partition."""
        return int(self.record.offset)


@dataclass(frozen=True, slots=True)
class PartitionBatch(Generic[T_co]):
    """Decoded records of one partition in offset order, and the position after them.

    `next_offset` also covers records of the range that were dead-lettered: a handler
    that stores positions stores `next_offset`, whatever `items` holds (possibly none).
    """

    topic: str
    partition: int
    items: Sequence[Item[T_co]]
    next_offset: int


class BatchHandler(Protocol[T]):
    """What a consumer supplies: decode one record, handle a batch of one partition."""

    @property
    def name(self) -> str:
        """Span and metric name, e.g. `settlement.post_journeys`."""
        ...

    def decode(self, record: Record) -> T:
        """The record's value for the handler; raise (ideally PoisonRecordError) if unusable."""
        ...

    async def handle(self, batch: PartitionBatch[T]) -> None:
        """Apply the batch in one transaction, idempotently (a batch may be redelivered)."""
        ...


class PositionStore(Protocol):
    """Where a handler keeps partition positions (`StoredPositions`)."""

    async def stored_positions(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        """partition -> next offset to process, for the partitions that have one; called
        when `partitions` of `topic` are assigned to this consumer."""
        ...

    async def positions_released(self, topic: str, partitions: Sequence[int]) -> None:
        """`partitions` of `topic` are being taken away (their batches in hand are done):
        finish what follows a batch (e.g. relaying its output) before the next owner
        starts."""
        ...


class CommitPolicy(Protocol):
    """How progress is made durable."""

    async def on_assigned(
        self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """Position the consumer on newly assigned partitions; return the positions it
        sought (records before them are never handed to the handler)."""
        ...

    async def after_batch(self, consumer: AIOKafkaConsumer, tp: TopicPartition, nxt: int) -> None:
        """Record that everything before `nxt` in `tp` is done (the handler has committed)."""
        ...

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Partitions are being taken away; the batches in hand are done."""
        ...


async def _commit_quietly(consumer: AIOKafkaConsumer, tp: TopicPartition, nxt: int) -> bool:
    try:
        await consumer.commit({tp: nxt})
        return True
    except KafkaError as exc:
        # A rebalance took the partition (its new owner re-reads; the sink is idempotent)
        # or Kafka is away (the next batch commits a later offset).
        log.info(
            "offset commit failed",
            extra={"partition": tp.partition, "error": type(exc).__name__},
        )
        return False


class KafkaCommits:
    """Commit the Kafka offset after the handler's sink committed (at-least-once)."""

    async def on_assigned(
        self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """Kafka's committed offsets apply (`auto_offset_reset=earliest` when none)."""
        return {}

    async def after_batch(self, consumer: AIOKafkaConsumer, tp: TopicPartition, nxt: int) -> None:
        """Commit `nxt`; a failed commit means a redelivery, which the sink ignores."""
        await _commit_quietly(consumer, tp, nxt)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Nothing to do: each batch was committed after its sink."""
        return None


@dataclass(slots=True)
class StoredPositions:
    """The handler stores positions with its data; the consumer seeks there on assignment.

    Kafka offsets are still committed after each batch, best effort, so lag monitoring
    that reads the group's committed offsets keeps working.
    """

    store: PositionStore

    async def on_assigned(
        self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """Seek every assigned partition to its stored position (offset 0 when none)."""
        by_topic: dict[str, dict[int, int]] = {}
        for topic in sorted({tp.topic for tp in assigned}):
            mine = sorted(tp.partition for tp in assigned if tp.topic == topic)
            by_topic[topic] = await self.store.stored_positions(topic, mine)
        sought = {}
        for tp in sorted(assigned):
            # Offset 0 when nothing is stored: a position set now, not a reset the fetcher
            # resolves later (which could rewind a batch already fetched); an offset
            # below the log start falls back to `auto_offset_reset=earliest`.
            sought[tp] = by_topic[tp.topic].get(tp.partition, 0)
            consumer.seek(tp, sought[tp])
        return sought

    async def after_batch(self, consumer: AIOKafkaConsumer, tp: TopicPartition, nxt: int) -> None:
        """Best-effort Kafka commit, for lag monitoring only."""
        await _commit_quietly(consumer, tp, nxt)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Tell the store, so it finishes what follows its batches before the next owner."""
        for topic in sorted({tp.topic for tp in revoked}):
            mine = sorted(tp.partition for tp in revoked if tp.topic == topic)
            await self.store.positions_released(topic, mine)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Back-off for infrastructure errors: first, doubling, capped."""

    first_s: float = 0.2
    max_s: float = 5.0

    def delays(self) -> DelaySequence:
        """A fresh sequence of delays."""
        return DelaySequence(self.first_s, self.max_s)


async def back_off_after(
    failure: str,
    exc: Exception,
    delays: DelaySequence,
    logger: logging.Logger,
    **extra: object,
) -> None:
    """What a background loop (an outbox relay, a charging loop) does when a round fails:
    log it (WARNING for an outage, ERROR with the traceback for a defect), then sleep the
    next back-off delay before the next round."""
    reason = infrastructure_reason(exc)
    level = logging.WARNING if reason else logging.ERROR
    logger.log(
        level,
        f"{failure}; retrying",
        extra={**extra, "error": type(exc).__name__, "reason": reason or "DEFECT"},
        exc_info=level == logging.ERROR,
    )
    await asyncio.sleep(delays.next())


@dataclass(slots=True)
class DelaySequence:
    """first, then doubling, up to max."""

    current: float
    max_s: float

    def next(self) -> float:
        """The next delay."""
        delay = self.current
        self.current = min(self.current * 2, self.max_s)
        return delay


@dataclass(slots=True)
class ConsumerStats:
    """What the loop did since it started (also exported as OpenTelemetry metrics)."""

    records: int = 0
    batches: int = 0
    dead_letters: int = 0
    retries: int = 0
    # (topic, partition) -> records behind the partition's end, as of its last fetch.
    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def total_lag(self) -> int:
        """Records behind the end, over the assigned partitions (as last seen)."""
        return sum(self.lag.values())


# Every instrument carries the handler's name, the service, the consumer group and the
# topic; the lag also the partition. Names and units: docs/metrics.md.
_RECORDS = meter.create_counter(
    "clearway.consumer.records", unit="{record}", description="Records handled (dead letters too)"
)
_BATCHES = meter.create_counter(
    "clearway.consumer.batches", unit="{batch}", description="Partition batches handled"
)
_DEAD = meter.create_counter(
    "clearway.consumer.dead_letters",
    unit="{record}",
    description="Records parked on the dead-letter topic, by reason code",
)
_RETRIES = meter.create_counter(
    "clearway.consumer.retries",
    unit="{retry}",
    description="Batch retries after an outage or a defect, by reason",
)
_LAG = ObservedGauge(
    meter,
    "clearway.consumer.lag",
    unit="{record}",
    description="Records behind the end of each assigned partition, as of its last fetch",
)
_BATCH_SIZE = meter.create_histogram(
    "clearway.consumer.batch_size",
    unit="{record}",
    description="Records per partition batch handed to the handler",
    explicit_bucket_boundaries_advisory=[1, 10, 50, 100, 500, 1000, 2500, 5000, 10000],
)


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    """Where and how to consume."""

    bootstrap: str
    group_id: str
    topics: tuple[str, ...]
    service: str
    max_records: int = 2000
    poll_timeout_ms: int = 200
    max_partition_fetch_bytes: int = 4 * 1024 * 1024
    summary_interval_s: float = 30.0


class _StopRequestedError(Exception):
    """A stop was requested while a batch was waiting to be retried."""


class ConsumerLoop(Generic[T]):
    """The one consumer loop. `start()`, run `run()` as a task, `stop()` to end cooperatively."""

    def __init__(
        self,
        config: ConsumerConfig,
        handler: BatchHandler[T],
        *,
        commits: CommitPolicy,
        producer: AIOKafkaProducer,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.config = config
        self.handler = handler
        self.commits = commits
        self.producer = producer
        self.retry = retry or RetryPolicy()
        self.stats = ConsumerStats()
        self.idle = False
        self.consumer = AIOKafkaConsumer(
            **client_options(config.bootstrap),
            group_id=config.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=config.max_partition_fetch_bytes,
        )
        self._stop = asyncio.Event()
        self._summary_at = time.monotonic()
        self._summary_counts = (0, 0, 0)
        self._busy = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._positions: dict[TopicPartition, int] = {}
        # Partitions whose assignment callback (and its seek) has finished. aiokafka starts
        # fetching a new assignment before the callback returns, so records can arrive
        # from a position the commit policy is about to replace.
        self._ready: set[TopicPartition] = set()
        self._floor: dict[TopicPartition, int] = {}
        self._attrs = {
            "clearway.consumer": handler.name,
            "clearway.service": config.service,
            "messaging.consumer.group.name": config.group_id,
        }
        self._unwatch_lag: Callable[[], None] | None = None

    async def start(self) -> None:
        """Connect and subscribe (assignment happens while `run` polls); report the lag of
        the partitions assigned until `stop`."""
        self.consumer.subscribe(list(self.config.topics), listener=_Listener(self))
        await self.consumer.start()
        self._unwatch_lag = _LAG.watch(self._lag_points)

    def _lag_points(self) -> list[tuple[int, dict[str, str | int]]]:
        return [
            (
                lag,
                {
                    **self._attrs,
                    "messaging.destination.name": topic,
                    "messaging.kafka.partition": partition,
                },
            )
            for (topic, partition), lag in list(self.stats.lag.items())
        ]

    def request_stop(self) -> None:
        """Finish the batch in hand, then leave `run`."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stop.is_set()

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Cooperative stop (bounded wait for the batch in hand), then disconnect."""
        self.request_stop()
        try:
            async with asyncio.timeout(timeout_s):
                await self._quiet.wait()
        except TimeoutError:
            log.warning("a batch was still in hand at stop; it will be redelivered")
        if self._unwatch_lag is not None:
            self._unwatch_lag()
        await self.consumer.stop()

    async def run(self) -> None:
        """Poll and handle until a stop is requested. The batches of one poll (one per
        partition) are handled concurrently, so one partition's database and Kafka
        round trips overlap another's work; each partition stays in offset order."""
        while not self._stop.is_set():
            batches = await self.consumer.getmany(
                timeout_ms=self.config.poll_timeout_ms, max_records=self.config.max_records
            )
            self.idle = not batches
            if batches:
                outcomes = await asyncio.gather(
                    *(self._guarded(tp, records) for tp, records in batches.items()),
                    return_exceptions=True,
                )
                for outcome in outcomes:
                    if isinstance(outcome, _StopRequestedError):
                        return
                    if isinstance(outcome, BaseException):
                        raise outcome
            try:
                await self._pass_unseen_offsets()
            except _StopRequestedError:
                return
            self._observe_lag()  # local state only: cheap on an idle poll too
            if batches:
                self._summarise()

    async def _pass_unseen_offsets(self) -> None:
        """Offsets the handler never sees (a producer transaction's commit marker, an
        aborted transaction's records) still count: once the consumer's position is past
        them, store or commit it as an empty batch, so a partition read to its end stands at
        its end offset (what fares' close of a day waits for)."""
        for tp in sorted(self._ready & self.consumer.assignment()):
            known = self._positions.get(tp, self._floor.get(tp))
            if known is None or self._stop.is_set():
                continue
            position = await self.consumer.position(tp)
            if position <= known or tp not in self._ready:
                continue
            self._busy += 1
            self._quiet.clear()
            try:
                await self._deliver(PartitionBatch(tp.topic, tp.partition, [], position))
                await self.commits.after_batch(self.consumer, tp, position)
            finally:
                self._busy -= 1
                if self._busy == 0:
                    self._quiet.set()
            self._positions[tp] = position
            if tp in self._floor:
                self._floor[tp] = position

    def _summarise(self) -> None:
        """One INFO line per interval with what happened since the last one (records are
        logged one by one only at DEBUG: a busy consumer must not flood its logs)."""
        now = time.monotonic()
        if now - self._summary_at < self.config.summary_interval_s:
            return
        current = (self.stats.records, self.stats.batches, self.stats.dead_letters)
        before = self._summary_counts
        self._summary_at, self._summary_counts = now, current
        if current == before:
            return
        log.info(
            "consumer progress",
            extra={
                "consumer": self.handler.name,
                "records": current[0] - before[0],
                "batches": current[1] - before[1],
                "dead_letters": current[2] - before[2],
                "retries": self.stats.retries,
                "lag": self.stats.total_lag,
            },
        )

    async def _guarded(self, tp: TopicPartition, records: list[Record]) -> None:
        if self._stop.is_set() or tp not in self.consumer.assignment():
            return  # stopping, or revoked while we were busy: the new owner has it
        if tp not in self._ready:
            # Fetched before the commit policy positioned the partition: hand nothing over,
            # fetch again (the policy's seek, when it comes, wins over this one).
            self.consumer.seek(tp, records[0].offset)
            return
        floor = self._floor.get(tp)
        if floor is not None and records[0].offset < floor:
            # Fetched from before the position the policy sought (a fetch that started
            # before its seek): the same log, so only what lies at or after it is kept.
            records = [r for r in records if r.offset >= floor]
            if not records:
                return
        self._busy += 1
        self._quiet.clear()
        try:
            await self._process(tp, records)
        finally:
            self._busy -= 1
            if self._busy == 0:
                self._quiet.set()

    def _observe_lag(self) -> None:
        """Each assigned partition's end (as last fetched) less the position handled (or
        sought, before the first batch)."""
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            position = self._positions.get(tp, self._floor.get(tp))
            if high is None or position is None:
                continue
            self.stats.lag[(tp.topic, tp.partition)] = max(0, high - position)

    async def _process(self, tp: TopicPartition, records: list[Record]) -> None:
        links = [_link(r) for r in records[:MAX_LINKS]]
        with tracer.start_as_current_span(
            f"{self.handler.name} process",
            kind=trace.SpanKind.CONSUMER,
            links=[lk for lk in links if lk is not None],
        ) as span:
            span.set_attribute("messaging.system", "kafka")
            span.set_attribute("messaging.destination.name", tp.topic)
            span.set_attribute("messaging.kafka.partition", tp.partition)
            span.set_attribute("messaging.batch.message_count", len(records))
            span.set_attribute("messaging.kafka.offset.first", records[0].offset)
            span.set_attribute("messaging.kafka.offset.last", records[-1].offset)
            items: list[Item[T]] = []
            for record in records:
                try:
                    items.append(Item(record, self.handler.decode(record)))
                except Exception as exc:  # any decode failure makes the record poison
                    await self._dead_letter(record, exc)
            nxt = records[-1].offset + 1
            await self._deliver(PartitionBatch(tp.topic, tp.partition, items, nxt))
            await self.commits.after_batch(self.consumer, tp, nxt)
            self._positions[tp] = nxt
            if tp in self._floor:
                self._floor[tp] = nxt
            self.stats.records += len(records)
            self.stats.batches += 1
            attrs = {**self._attrs, "messaging.destination.name": tp.topic}
            _RECORDS.add(len(records), attrs)
            _BATCHES.add(1, attrs)
            _BATCH_SIZE.record(len(records), attrs)

    async def _deliver(self, batch: PartitionBatch[T]) -> None:
        """Hand `batch` to the handler: retry outages, isolate and park poison records."""
        delays = self.retry.delays()
        while True:
            try:
                await self.handler.handle(batch)
                return
            except Exception as exc:
                # An empty batch (only a position to store) cannot hold a poison record:
                # whatever makes it fail is treated like an outage, never isolated again.
                if infrastructure_reason(exc) is not None or is_defect(exc) or not batch.items:
                    await self._back_off(batch, exc, delays.next())
                    continue
                await self._isolate(batch, exc)
                return

    async def _isolate(self, batch: PartitionBatch[T], exc: Exception) -> None:
        """Split until the failing record is alone, park it, and advance past it."""
        items = list(batch.items)
        if len(items) <= 1:
            if items:
                await self._dead_letter(items[0].record, exc)
            # Advance past it (a handler that stores positions needs the empty batch).
            await self._deliver(PartitionBatch(batch.topic, batch.partition, [], batch.next_offset))
            return
        middle = len(items) // 2
        left, right = items[:middle], items[middle:]
        await self._deliver(PartitionBatch(batch.topic, batch.partition, left, right[0].offset))
        await self._deliver(PartitionBatch(batch.topic, batch.partition, right, batch.next_offset))

    async def _back_off(self, batch: PartitionBatch[T], exc: Exception, delay: float) -> None:
        self.stats.retries += 1
        _RETRIES.add(
            1,
            {
                **self._attrs,
                "messaging.destination.name": batch.topic,
                "clearway.reason": infrastructure_reason(exc) or "DEFECT",
            },
        )
        extra = {
            "partition": batch.partition,
            "next_offset": batch.next_offset,
            "records": len(batch.items),
            "backoff_s": delay,
            "error": type(exc).__name__,
            "reason": infrastructure_reason(exc) or "DEFECT",
        }
        if is_defect(exc):
            log.error("batch failed on a defect; retrying", extra=extra, exc_info=exc)
        else:
            log.warning("batch failed on an outage; retrying", extra=extra)
        try:
            await asyncio.wait_for(self._stop.wait(), delay)
        except TimeoutError:
            return
        raise _StopRequestedError from exc

    async def _dead_letter(self, record: Record, exc: BaseException) -> None:
        code = reason_code(exc, "UNDECODABLE" if isinstance(exc, UnicodeError) else "UNPROCESSABLE")
        detail = _detail_of(exc)
        topic = dead_letter_topic(record.topic, self.config.service)
        delays = self.retry.delays()
        while True:
            try:
                await send_dead_letter(
                    self.producer, topic, record, code, str(detail)[:MAX_DETAIL_CHARS]
                )
                break
            except Exception as send_exc:
                if infrastructure_reason(send_exc) is None:
                    raise
                await self._back_off(
                    PartitionBatch(record.topic, record.partition, [], record.offset + 1),
                    send_exc,
                    delays.next(),
                )
        self.stats.dead_letters += 1
        self.stats.dead_letter_reasons[code] = self.stats.dead_letter_reasons.get(code, 0) + 1
        _DEAD.add(
            1,
            {**self._attrs, "messaging.destination.name": record.topic, "clearway.reason": code},
        )
        log.debug(
            "record dead-lettered",
            extra={
                "reason_code": code,
                "dlq": topic,
                "partition": record.partition,
                "offset": record.offset,
            },
        )

    async def _quiesce(self, timeout_s: float = 30.0) -> None:
        """Wait (bounded) for the batches in hand, so a revoked partition is left committed."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._quiet.wait()
        except TimeoutError:
            log.warning("rebalance went ahead with a batch still in hand")


def _detail_of(exc: BaseException) -> str:
    """What a dead letter says about its failure: a domain error's own detail, else the
    exception's type and message (with the database's DETAIL line when it has one)."""
    if isinstance(exc, PoisonRecordError | ClearwayError) and getattr(exc, "detail", None):
        return str(getattr(exc, "detail"))  # noqa: B009 - not every ClearwayError has one
    text = f"{type(exc).__name__}: {exc}"
    extra = getattr(exc, "detail", None)
    return f"{text} ({extra})" if isinstance(extra, str) and extra not in text else text


def _link(record: Record) -> trace.Link | None:
    ctx = trace.get_current_span(context_from_kafka_headers(record.headers)).get_span_context()
    return trace.Link(ctx) if ctx.is_valid else None


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: ConsumerLoop[Any]) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.loop._ready -= revoked
        if revoked:
            await self.loop._quiesce()
            try:
                async with asyncio.timeout(30.0):
                    await self.loop.commits.on_revoked(revoked)
            except Exception:
                log.warning("finishing revoked partitions failed", exc_info=True)
        for tp in revoked:
            self.loop.stats.lag.pop((tp.topic, tp.partition), None)
            self.loop._positions.pop(tp, None)
            self.loop._floor.pop(tp, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        started = time.monotonic()
        sought = await self.loop.commits.on_assigned(self.loop.consumer, assigned)
        self.loop._floor.update(sought)
        self.loop._ready |= assigned
        log.info(
            "partitions assigned",
            extra={
                "partitions": sorted(tp.partition for tp in assigned),
                "seek_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
