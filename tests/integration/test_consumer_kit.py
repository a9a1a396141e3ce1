"""The consumer kit (clearway.consumer) on its own, over real Kafka and PostgreSQL: a handler
that stores UTF-8 integers in one transaction per batch, with poison records, a database
that goes away mid-batch, a cooperative stop, stored positions and a defect in the code."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from clearway.consumer import (
    CommitPolicy,
    ConsumerConfig,
    ConsumerLoop,
    KafkaCommits,
    PartitionBatch,
    PoisonRecordError,
    Record,
    RetryPolicy,
    StoredPositions,
    dead_letter_topic,
)
from clearway.db import create_pool
from clearway.infra.endpoints import (
    KAFKA_BOOTSTRAP_VAR,
    PG_DSN_VAR,
    REDIS_URL_VAR,
    LocalPorts,
)
from clearway.infra.manager import LocalInfra
from clearway.kafka import REASON_HEADER, ensure_topics, idempotent_producer
from conftest import free_ports

pytestmark = pytest.mark.integration

SERVICE = "kittest"
PARTITIONS = 2
FAST_RETRY = RetryPolicy(first_s=0.05, max_s=0.3)
SCHEMA_SQL = (
    "CREATE TABLE numbers ("
    " n bigint PRIMARY KEY CHECK (n >= 0), part int NOT NULL, off bigint NOT NULL);"
    "CREATE TABLE positions ("
    " topic text NOT NULL, part int NOT NULL, next_offset bigint NOT NULL,"
    " PRIMARY KEY (topic, part));"
)


# -- the handler under test ------------------------------------------------------------


@dataclass
class NumberSink:
    """Stores each batch of numbers (and, optionally, the partition position) in ONE
    transaction; counts what it really inserted once the transaction committed."""

    pool: asyncpg.Pool
    store_positions: bool = False
    slow_s: float = 0.0
    defect: str | None = None  # "python" or "sql" while broken
    hold: asyncio.Event | None = None  # wait inside the open transaction, once
    lookup_s: float = 0.0  # how long the stored-positions query takes
    refuse_all: bool = False  # fail every batch, empty ones too, with a non-outage error
    name: str = "kittest.store_numbers"
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    held: asyncio.Event = field(default_factory=asyncio.Event)
    inserts: Counter[int] = field(default_factory=Counter)
    conflicts: int = 0
    seen: list[int] = field(default_factory=list)  # every value handed to `handle`
    handled_batches: int = 0
    released: list[tuple[str, int]] = field(default_factory=list)  # positions_released

    def decode(self, record: Record) -> int:
        try:
            return int(bytes(record.value).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise PoisonRecordError("NOT_A_NUMBER", f"{record.value!r} is no number") from None

    async def handle(self, batch: PartitionBatch[int]) -> None:
        self.entered.set()
        self.seen.extend(item.value for item in batch.items)
        if self.slow_s:
            await asyncio.sleep(self.slow_s)
        if self.refuse_all:
            raise ValueError("the sink refuses every batch")
        if self.defect == "python":
            raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")
        inserted: list[int] = []
        async with self.pool.acquire() as conn, conn.transaction():
            if self.defect == "sql":
                await conn.execute("SELECT count(*) FROM no_such_table")
            for item in batch.items:
                n = await conn.fetchval(
                    "INSERT INTO numbers (n, part, off) VALUES ($1, $2, $3)"
                    " ON CONFLICT (n) DO NOTHING RETURNING n",
                    item.value,
                    batch.partition,
                    item.offset,
                )
                if n is None:
                    self.conflicts += 1
                else:
                    inserted.append(n)
            if self.store_positions:
                await conn.execute(
                    "INSERT INTO positions (topic, part, next_offset) VALUES ($1, $2, $3)"
                    " ON CONFLICT (topic, part) DO UPDATE SET next_offset = $3",
                    batch.topic,
                    batch.partition,
                    batch.next_offset,
                )
            hold, self.hold = self.hold, None
            if hold is not None:
                self.held.set()
                await hold.wait()
        self.inserts.update(inserted)
        self.handled_batches += 1

    async def stored_positions(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        await asyncio.sleep(self.lookup_s)
        rows = await self.pool.fetch(
            "SELECT part, next_offset FROM positions WHERE topic = $1 AND part = any($2)",
            topic,
            list(partitions),
        )
        return {r["part"]: r["next_offset"] for r in rows}

    async def positions_released(self, topic: str, partitions: Sequence[int]) -> None:
        self.released.extend((topic, p) for p in partitions)


# -- helpers ---------------------------------------------------------------------------


async def eventually(check: Callable[[], Awaitable[bool]], what: str, limit_s: float = 20.0):
    deadline = asyncio.get_running_loop().time() + limit_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never happened within {limit_s}s: {what}")
        await asyncio.sleep(0.05)


async def stored(pool: asyncpg.Pool) -> list[int]:
    return [r["n"] for r in await pool.fetch("SELECT n FROM numbers ORDER BY n")]


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: m.offset for tp, m in offsets.items() if tp.topic == topic}


async def read_topic(
    bootstrap: str, topic: str, partitions: int, want: int, limit_s: float = 15.0
) -> list[ConsumerRecord]:
    """Every record of `topic` once `want` arrived (and nothing more came for 1 s)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        async with asyncio.timeout(limit_s):
            while len(records) < want:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
        for batch in (await consumer.getmany(timeout_ms=1000)).values():
            records.extend(batch)
    finally:
        await consumer.stop()
    return records


@dataclass
class Kit:
    bootstrap: str
    topic: str
    group: str
    partitions: int
    producer: AIOKafkaProducer
    loops: list[tuple[ConsumerLoop[Any], asyncio.Task[None]]] = field(default_factory=list)

    @property
    def dlq(self) -> str:
        return dead_letter_topic(self.topic, SERVICE)

    async def send(self, values: Sequence[bytes], partition: int = 0) -> list[int]:
        """Produce `values` to `partition`, in order; their offsets."""
        offsets = []
        for value in values:
            meta = await self.producer.send_and_wait(
                self.topic, value, key=b"k" + value, partition=partition
            )
            offsets.append(meta.offset)
        return offsets

    async def start_loop(
        self,
        handler: NumberSink,
        *,
        commits: CommitPolicy | None = None,
        group: str | None = None,
        retry: RetryPolicy = FAST_RETRY,
    ) -> tuple[ConsumerLoop[int], asyncio.Task[None]]:
        config = ConsumerConfig(
            self.bootstrap, group or self.group, (self.topic,), service=SERVICE, max_records=500
        )
        loop = ConsumerLoop(
            config, handler, commits=commits or KafkaCommits(), producer=self.producer, retry=retry
        )
        await loop.start()
        task = asyncio.create_task(loop.run(), name="consumer under test")
        self.loops.append((loop, task))
        return loop, task

    async def committed(self, group: str | None = None) -> dict[int, int]:
        return await committed(self.bootstrap, group or self.group, self.topic)

    async def dead_letters(self, want: int) -> list[ConsumerRecord]:
        return await read_topic(self.bootstrap, self.dlq, self.partitions, want)

    async def close(self) -> None:
        for loop, task in self.loops:
            await loop.stop(timeout_s=2)
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def kit(kafka_bootstrap: str, unique_name: str) -> AsyncIterator[Kit]:
    """A two-partition topic with its dead-letter topic, and a producer; the loops a test
    starts are stopped at the end."""
    topic = f"{unique_name}.numbers"
    dlq = dead_letter_topic(topic, SERVICE)
    await ensure_topics(kafka_bootstrap, [topic, dlq], partitions=PARTITIONS)
    producer = idempotent_producer(kafka_bootstrap, linger_ms=0)
    await producer.start()
    made = Kit(kafka_bootstrap, topic, f"{unique_name}-group", PARTITIONS, producer)
    try:
        yield made
    finally:
        await made.close()
        await producer.stop()


async def numbers_pool(dsn: str, schema: str) -> asyncpg.Pool:
    pool = await create_pool(dsn, schema)
    await pool.execute(SCHEMA_SQL)
    return pool


@pytest.fixture
async def pool(pg_dsn: str, unique_name: str) -> AsyncIterator[asyncpg.Pool]:
    schema = f"{unique_name}_kit"
    pool = await numbers_pool(pg_dsn, schema)
    try:
        yield pool
    finally:
        await pool.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await pool.close()


@pytest.fixture
def separate_postgres() -> Iterator[LocalInfra]:
    """A PostgreSQL of this test's own (never the shared one), which the test may stop."""
    base = Path(tempfile.mkdtemp(prefix="cw-kit-"))
    kafka, controller, pg, redis = free_ports(4)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {KAFKA_BOOTSTRAP_VAR, PG_DSN_VAR, REDIS_URL_VAR}
    }
    env["CLEARWAY_INFRA_DIR"] = str(base)
    infra = LocalInfra(base, LocalPorts(kafka, controller, pg, redis), env, ("postgres",))
    try:
        infra.up()
        yield infra
    finally:
        infra.down()
        pg_link = base / "postgres"
        if pg_link.is_symlink():  # data kept under /var/lib/clearway-infra/<hash>/postgres
            shutil.rmtree(pg_link.resolve().parent, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


def numbers(*values: int) -> list[bytes]:
    return [str(v).encode() for v in values]


def headers_of(record: ConsumerRecord) -> dict[str, bytes]:
    return {k: bytes(v) for k, v in record.headers}


# -- (a) poison records ----------------------------------------------------------------


async def test_poison_records_are_parked_with_their_reason_and_the_rest_stored_once(kit, pool):
    values = [b"1", b"2", b"abc", b"3", b"-5", b"4", b"5"]
    offsets = await kit.send(values)
    sink = NumberSink(pool)
    loop, task = await kit.start_loop(sink)

    async def first_five_stored() -> bool:
        return await stored(pool) == [1, 2, 3, 4, 5]

    await eventually(first_five_stored, "1..5 stored")
    later = await kit.send(numbers(6, 7))

    async def all_stored() -> bool:
        return await stored(pool) == [1, 2, 3, 4, 5, 6, 7]

    await eventually(all_stored, "the records produced after the poison stored")

    async def all_committed() -> bool:
        return await kit.committed() == {0: later[-1] + 1}

    await eventually(all_committed, "offsets committed past every record")
    dead = await kit.dead_letters(2)

    assert not task.done(), "the loop must go on after a poison record"
    assert sink.inserts == Counter(dict.fromkeys(range(1, 8), 1))
    assert sink.conflicts == 0
    assert loop.stats.dead_letters == 2
    assert loop.stats.dead_letter_reasons == {"NOT_A_NUMBER": 1, "CONSTRAINT_VIOLATION": 1}
    # Parked unchanged (key and value), each once; the dead-letter topic has two partitions.
    assert sorted((r.key, r.value) for r in dead) == [(b"k-5", b"-5"), (b"kabc", b"abc")]
    by_value = {r.value: headers_of(r) for r in dead}
    not_a_number, negative = by_value[b"abc"], by_value[b"-5"]
    assert not_a_number[REASON_HEADER] == b"NOT_A_NUMBER"
    assert b"abc" in not_a_number["clearway-reason-detail"]
    # A CheckViolationError carries no `code`: its SQLSTATE class (23) names the reason,
    # and the detail keeps the constraint PostgreSQL named as well as the row.
    assert negative[REASON_HEADER] == b"CONSTRAINT_VIOLATION"
    assert b"-5" in negative["clearway-reason-detail"]
    assert b"CheckViolationError" in negative["clearway-reason-detail"]
    for value, original_offset in ((b"abc", offsets[2]), (b"-5", offsets[4])):
        headers = by_value[value]
        assert headers["clearway-source-topic"] == kit.topic.encode()
        assert headers["clearway-source-partition"] == b"0"
        assert headers["clearway-source-offset"] == str(original_offset).encode()
    rows = await pool.fetch("SELECT n, off FROM numbers ORDER BY n")
    good_offsets = [offsets[i] for i in (0, 1, 3, 5, 6)]
    expected_offsets = dict(zip([1, 2, 3, 4, 5], good_offsets, strict=True))
    assert {r["n"]: r["off"] for r in rows if r["n"] <= 5} == expected_offsets


async def test_a_failure_that_no_single_record_causes_does_not_kill_the_loop(kit, pool):
    """A handler that fails every batch (the empty one the kit hands over after parking a
    record too) with an error that is neither an outage nor a defect: the loop must not
    die ("never a crash loop"), and goes on once the handler works again."""
    await kit.send(numbers(1, 2, 3))
    sink = NumberSink(pool, refuse_all=True)
    loop, task = await kit.start_loop(sink)
    await asyncio.wait_for(sink.entered.wait(), 15)
    await asyncio.sleep(3.0)

    died = task.exception() if task.done() else None
    assert not task.done(), f"run() died: {died!r}"
    assert loop.stats.dead_letters <= 3

    sink.refuse_all = False
    await kit.send(numbers(4))

    async def four_stored() -> bool:
        return 4 in await stored(pool)

    await eventually(four_stored, "a record produced after the handler recovered stored")
    assert not task.done()


# -- (b) PostgreSQL away mid-batch -----------------------------------------------------


async def test_postgres_stopped_mid_batch_retries_commits_nothing_and_resumes(
    kit, separate_postgres: LocalInfra, unique_name: str
):
    private_pool = await numbers_pool(separate_postgres.endpoints.pg_dsn, f"{unique_name}_kit")
    try:
        sink = NumberSink(private_pool)
        loop, task = await kit.start_loop(sink)
        first = await kit.send(numbers(*range(1, 11)))

        async def first_wave_done() -> bool:
            return await kit.committed() == {0: first[-1] + 1}

        await eventually(first_wave_done, "first wave stored and committed")
        assert await stored(private_pool) == list(range(1, 11))

        # The next batch waits inside its open transaction while PostgreSQL goes away.
        release = asyncio.Event()
        sink.hold = release
        await kit.send(numbers(*range(11, 21)))
        await asyncio.wait_for(sink.held.wait(), 15)
        await asyncio.to_thread(separate_postgres.down)
        release.set()
        retries_at_stop = loop.stats.retries
        await kit.send(numbers(*range(21, 31)))

        async def retrying() -> bool:
            return loop.stats.retries >= retries_at_stop + 3

        await eventually(retrying, "the batch retried while PostgreSQL is down")
        await asyncio.sleep(1.0)  # time for a wrong commit to show
        assert await kit.committed() == {0: first[-1] + 1}
        assert not task.done()
        assert loop.stats.dead_letters == 0

        await asyncio.to_thread(separate_postgres.up)

        async def all_stored() -> bool:
            try:
                return await stored(private_pool) == list(range(1, 31))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return False

        await eventually(all_stored, "every record stored after PostgreSQL came back")

        async def all_committed() -> bool:
            return await kit.committed() == {0: first[-1] + 21}

        await eventually(all_committed, "the loop resumed and committed everything")
        assert sink.inserts == Counter(dict.fromkeys(range(1, 31), 1))
        assert loop.stats.dead_letters == 0
        assert loop.stats.retries > retries_at_stop
        assert not task.done()
        assert await kit.dead_letters(0) == []
    finally:
        await kit.close()
        private_pool.terminate()


# -- (c) cooperative stop --------------------------------------------------------------


async def test_stop_lets_the_batch_in_hand_finish_and_commit_then_a_new_loop_goes_on(kit, pool):
    first = await kit.send(numbers(*range(1, 11)))
    slow = NumberSink(pool, slow_s=1.5)
    loop, task = await kit.start_loop(slow)
    await asyncio.wait_for(slow.entered.wait(), 15)

    await loop.stop(timeout_s=10)

    # The batch in hand finished and was committed before stop() returned.
    handled = sorted(slow.seen)
    assert handled, "the batch in hand was dropped"
    assert await stored(pool) == handled
    assert await kit.committed() == {0: first[len(handled) - 1] + 1}
    assert await asyncio.wait_for(task, 5) is None  # run() returned, it did not raise

    later = await kit.send(numbers(*range(11, 21)))
    fresh = NumberSink(pool)
    await kit.start_loop(fresh)

    async def all_stored() -> bool:
        return await stored(pool) == list(range(1, 21))

    await eventually(all_stored, "the next loop of the group stored the rest")

    async def all_committed() -> bool:
        return await kit.committed() == {0: later[-1] + 1}

    await eventually(all_committed, "the next loop committed the rest")
    rest = [n for n in range(1, 21) if n not in handled]
    assert sorted(fresh.seen) == rest, "a record was handed over twice"
    assert slow.inserts == Counter(dict.fromkeys(handled, 1))
    assert fresh.inserts == Counter(dict.fromkeys(rest, 1))
    assert slow.conflicts == fresh.conflicts == 0


async def test_stop_while_idle_returns_from_run(kit, pool):
    sink = NumberSink(pool)
    loop, task = await kit.start_loop(sink)
    await kit.send(numbers(1))

    async def stored_one() -> bool:
        return await stored(pool) == [1]

    await eventually(stored_one, "the record stored")
    await asyncio.sleep(0.5)  # the loop is now polling an empty partition

    await loop.stop(timeout_s=5)

    assert await asyncio.wait_for(task, 5) is None


async def test_stop_during_back_off_returns_from_run_without_committing(kit, pool):
    await kit.send(numbers(1, 2, 3))
    broken = NumberSink(pool, defect="python")
    loop, task = await kit.start_loop(broken, retry=RetryPolicy(first_s=0.05, max_s=10.0))

    async def retrying() -> bool:
        return loop.stats.retries >= 3

    await eventually(retrying, "the defect retried")

    await loop.stop(timeout_s=5)

    assert await asyncio.wait_for(task, 2) is None
    assert await kit.committed() == {}
    assert await stored(pool) == []


# -- (d) stored positions --------------------------------------------------------------


async def rewind_group(bootstrap: str, group: str, topic: str, partitions: int) -> None:
    """Set the group's Kafka offsets back to 0 (Kafka now lags the stored positions)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.commit(dict.fromkeys(tps, 0))
    finally:
        await consumer.stop()


# A position lookup is a database round trip; under load one takes a few hundred ms.
SLOW_LOOKUP_S = 0.5


@pytest.mark.parametrize("kafka_offsets", ["rewound", "fresh-group"])
async def test_stored_positions_win_over_a_kafka_offset_that_lags_behind(kit, pool, kafka_offsets):
    p0 = await kit.send([*numbers(1, 2, 3, 4, 5, 6), b"abc"], partition=0)
    p1 = await kit.send(numbers(7, 8, 9, 10, 11, 12), partition=1)
    first = NumberSink(pool, store_positions=True)
    loop, _ = await kit.start_loop(first, commits=StoredPositions(first))

    async def first_positions() -> bool:
        positions = await first.stored_positions(kit.topic, [0, 1])
        return positions == {0: p0[-1] + 1, 1: p1[-1] + 1}

    await eventually(first_positions, "positions stored past both partitions")
    assert await stored(pool) == list(range(1, 13))
    assert loop.stats.dead_letters == 1
    await loop.stop()

    group = kit.group
    if kafka_offsets == "rewound":
        await rewind_group(kit.bootstrap, kit.group, kit.topic, kit.partitions)
        assert await kit.committed() == {0: 0, 1: 0}
    else:
        group = f"{kit.group}-fresh"
        assert await kit.committed(group) == {}
    q0 = await kit.send(numbers(13, 14, 15), partition=0)
    q1 = await kit.send(numbers(16), partition=1)

    second = NumberSink(pool, store_positions=True, lookup_s=SLOW_LOOKUP_S)
    resumed, _ = await kit.start_loop(second, commits=StoredPositions(second), group=group)

    async def second_positions() -> bool:
        positions = await second.stored_positions(kit.topic, [0, 1])
        return positions == {0: q0[-1] + 1, 1: q1[-1] + 1}

    await eventually(second_positions, "the second loop stored its positions")
    assert await stored(pool) == list(range(1, 17))
    assert sorted(second.seen) == [13, 14, 15, 16], "already handled records redelivered"
    assert second.inserts == Counter({13: 1, 14: 1, 15: 1, 16: 1})
    assert resumed.stats.dead_letters == 0, "the parked record was parked again"
    assert resumed.stats.records == 4
    assert len(await kit.dead_letters(1)) == 1


# -- (e) a defect ----------------------------------------------------------------------


@pytest.mark.parametrize("defect", ["python", "sql"])
async def test_a_defect_is_retried_never_dead_lettered_and_stored_once_fixed(
    kit, pool, defect, caplog
):
    caplog.set_level(logging.INFO, logger="clearway.consumer")
    last = (await kit.send(numbers(1, 2, 3, 4, 5)))[-1]
    sink = NumberSink(pool, defect=defect)
    loop, task = await kit.start_loop(sink)

    async def retried() -> bool:
        return loop.stats.retries >= 4

    await eventually(retried, "the defect retried with back-off")
    assert loop.stats.dead_letters == 0
    assert await stored(pool) == []
    assert await kit.committed() == {}
    defects = [r for r in caplog.records if r.getMessage() == "batch failed on a defect; retrying"]
    assert defects and all(r.levelno == logging.ERROR for r in defects)
    assert all(getattr(r, "reason", None) == "DEFECT" for r in defects)

    sink.defect = None  # the fix is deployed

    async def all_stored() -> bool:
        return await stored(pool) == [1, 2, 3, 4, 5]

    await eventually(all_stored, "the records stored once the handler is fixed")

    async def all_committed() -> bool:
        return await kit.committed() == {0: last + 1}

    await eventually(all_committed, "offsets committed once fixed")
    assert sink.inserts == Counter(dict.fromkeys(range(1, 6), 1))
    assert loop.stats.dead_letters == 0
    assert not task.done()
    assert await kit.dead_letters(0) == []


# -- (f) transactional producers -------------------------------------------------------


@pytest.mark.parametrize("policy", ["stored", "kafka"])
async def test_a_partition_written_in_transactions_is_read_to_its_end_offset(
    kit, pool, policy, unique_name
):
    """Commit markers and aborted records take offsets the handler never sees: the stored
    position (or committed offset) must still reach the partition's end offset, which is
    what fares' close of a day waits for (ingest writes taps in transactions)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=kit.bootstrap,
        transactional_id=f"{unique_name}-txn",
        enable_idempotence=True,
        acks="all",
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(kit.topic, b"1", partition=0)
            await producer.send_and_wait(kit.topic, b"2", partition=0)
        await producer.begin_transaction()
        await producer.send_and_wait(kit.topic, b"666", partition=0)
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(kit.topic, b"3", partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kit.bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(kit.topic, 0)
        end = (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()
    assert end == 7  # 1, 2, commit marker, 666, abort marker, 3, commit marker

    sink = NumberSink(pool, store_positions=True)
    commits = StoredPositions(sink) if policy == "stored" else KafkaCommits()
    await kit.start_loop(sink, commits=commits)

    async def at_the_end() -> bool:
        if policy == "stored":
            return (await sink.stored_positions(kit.topic, [0])).get(0) == end
        return (await kit.committed()).get(0) == end

    await eventually(at_the_end, f"the position of partition 0 reached its end {end}")
    assert await stored(pool) == [1, 2, 3]
    assert sorted(sink.seen) == [1, 2, 3]


async def test_new_topics_have_a_leader_for_every_partition_when_ensure_topics_returns(
    endpoints, unique_name
):
    """The first consumer of a brand-new topic must not meet NotLeaderForPartition (which
    aiokafka's fetcher logs as an ERROR, as a soak run found at ingest's start)."""
    names = [f"{unique_name}.a", f"{unique_name}.b"]
    await ensure_topics(endpoints.kafka_bootstrap, names, partitions=4)
    admin = AIOKafkaAdminClient(bootstrap_servers=endpoints.kafka_bootstrap)
    await admin.start()
    try:
        topics = await admin.describe_topics(names)
    finally:
        await admin.close()
    assert sorted(t["topic"] for t in topics) == sorted(names)
    for topic in topics:
        assert len(topic["partitions"]) == 4
        assert all(p["error_code"] == 0 and p["leader"] >= 0 for p in topic["partitions"])
