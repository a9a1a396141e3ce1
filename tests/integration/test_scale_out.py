"""Scale-out: two instances each of fares, settlement and accounts in one consumer group per
service, over topics of at least six partitions, issue the same statements and keep the same
journey history, byte for byte, as one instance of each, also when one instance of each
service is SIGKILLed mid-stream and its group rebalances; CloseServiceDay works on any one
of several fares instances."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clearway.auth import OPERATIONS, Principal
from clearway.events.v1 import events_pb2
from clearway.infra.endpoints import Endpoints
from clearway.kafka import Topics, ensure_topics
from clearway.pki import secure_channel
from clearway.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from conftest import tls_env
from services.settlement.adapters.journey_lag import GroupLag
from tests.integration.test_fares_exactly_once import (
    close_day,
    day_taps,
    env_for,
    free_port,
    processed,
    publish,
    read_all,
    wait_processed,
)

pytestmark = pytest.mark.integration

SERVICES = ("fares", "settlement", "accounts")
MIN_PARTITIONS = 6
CARDS = 3000
# Fares must have priced this share of the taps before the kill (and not all of them).
KILL_AFTER_SHARE = 0.15


@dataclass
class Instance:
    """One service process."""

    service: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    health_port: int


@dataclass
class Deployment:
    """One run's topics, schemas and consumer groups, and the processes started for it."""

    endpoints: Endpoints
    name: str
    work_dir: Path
    pki: Path
    instances: list[Instance] = field(default_factory=list)

    @property
    def topics(self) -> Topics:
        return Topics(prefix=f"{self.name}.")

    @property
    def statements_dir(self) -> Path:
        return self.work_dir / "statements"

    def schema(self, service: str) -> str:
        return f"{self.name}_{service}"

    def group(self, service: str) -> str:
        return f"{self.name}-{service}"

    def start(self, service: str) -> Instance:
        """Spawn one more instance of `service` (same prefix, schema and group; own port).
        Settlement serves mutual TLS, with its health on a plaintext port of its own."""
        port = free_port()
        health_port = port
        extra = {}
        if service == "settlement":
            health_port = free_port()
            extra = {**tls_env(self.pki), "CLEARWAY_HEALTH_PORT": str(health_port)}
        env = env_for(
            self.endpoints,
            self.topics,
            self.schema(service),
            self.group(service),
            port,
            CLEARWAY_STATEMENTS_DIR=str(self.statements_dir),
            CLEARWAY_GRACE_SECONDS="5",
            **extra,
        )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        log = self.work_dir / f"{service}-{len(self.instances)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "serve", service],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        instance = Instance(service, port, process, log, health_port)
        self.instances.append(instance)
        return instance

    def stop(self) -> None:
        """SIGTERM every process still running, then kill what has not stopped."""
        for instance in self.instances:
            if instance.process.poll() is None:
                instance.process.send_signal(signal.SIGTERM)
        for instance in self.instances:
            try:
                instance.process.wait(20)
            except subprocess.TimeoutExpired:
                instance.process.kill()
                instance.process.wait(10)


@dataclass(frozen=True)
class Outcome:
    """What a run produced for the period."""

    statements: dict[str, tuple[str, bytes]]  # party -> (sha256, body)
    files: dict[str, bytes]  # path under the statements directory -> bytes
    history: dict[str, tuple[int, bytes]]  # journey -> (latest revision, body)
    revisions: int  # distinct (journey_id, revision) published on `journeys`


def last_line(log: Path) -> str:
    """The last line a process logged (its fatal error, if it died of one), and where."""
    lines = log.read_text(errors="replace").splitlines()
    return f"{lines[-1][-800:] if lines else '(nothing logged)'} (see {log})"


async def wait_serving(instance: Instance, timeout_s: float = 60.0) -> None:
    """Until the instance answers SERVING on the standard health check."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with grpc.aio.insecure_channel(f"127.0.0.1:{instance.health_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            code = instance.process.poll()
            assert code is None, f"{instance.service} exited with {code}: {last_line(instance.log)}"
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            assert loop.time() < deadline, f"{instance.service} not SERVING; see {instance.log}"
            await asyncio.sleep(0.1)


async def wait_group_stable(
    bootstrap: str, group: str, members: int, timeout_s: float = 60.0
) -> None:
    """Until the consumer group is Stable with `members` members (partitions assigned)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        while True:
            [response] = await admin.describe_consumer_groups([group])
            _error, _group, state, _kind, _protocol, in_group = response.groups[0][:6]
            if state == "Stable" and len(in_group) == members:
                return
            assert loop.time() < deadline, f"{group}: {state} with {len(in_group)} members"
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def partition_counts(bootstrap: str, topics: list[str]) -> dict[str, int]:
    """topic -> number of partitions, once the brokers' metadata shows every topic (a topic
    just created may be described for a moment with an error code and no partitions)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        while True:
            described = await admin.describe_topics(topics)
            if all(t["error_code"] == 0 and t["partitions"] for t in described):
                return {t["topic"]: len(t["partitions"]) for t in described}
            assert loop.time() < deadline, described
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def close_period(
    port: int, pki: Path, period: str, timeout_s: float = 90.0
) -> settlement_pb2.ClosePeriodResponse:
    """SettlementService.ClosePeriod as the operations role, retried while settlement is
    UNAVAILABLE (e.g. still CONSUMER_LAGGING behind the journeys topic)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    operations = Principal("role", OPERATIONS)
    async with secure_channel(f"127.0.0.1:{port}", pki, operations) as channel:
        stub = settlement_pb2_grpc.SettlementServiceStub(channel)
        while True:
            try:
                return await stub.ClosePeriod(
                    settlement_pb2.ClosePeriodRequest(period_id=period), timeout=60
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or loop.time() > deadline:
                    raise
                await asyncio.sleep(0.5)


def statement_files(root: Path) -> dict[str, bytes]:
    """Path under `root` -> bytes of every settlement file (every party's file set)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def count_rows(dsn: str, table: str) -> int:
    """Rows of `schema.table`; 0 while the table does not exist yet."""
    conn = await asyncpg.connect(dsn)
    try:
        if await conn.fetchval("SELECT to_regclass($1)", table) is None:
            return 0
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


async def settle(
    d: Deployment, fares: Instance, settlement: Instance, period: str, total: int
) -> Outcome:
    """Once every tap is priced: close the day on one fares instance and the period on one
    settlement instance; wait for accounts to catch up; what the run produced."""
    dsn, bootstrap, topics = d.endpoints.pg_dsn, d.endpoints.kafka_bootstrap, d.topics
    done = await wait_processed(dsn, d.schema("fares"), topics.taps, total, 90)
    assert done == total, f"fares priced {done} of {total} taps"
    await close_day(fares.port, period)
    closed = await close_period(settlement.port, d.pki, period)
    lag = GroupLag(bootstrap, d.group("accounts"), topics.journeys)
    await lag.start()
    try:
        assert await lag.wait_caught_up(60) == 0, "accounts never caught up with journeys"
    finally:
        await lag.stop()

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            f"SELECT party_id, manifest_sha256, directory FROM {d.schema('settlement')}"
            ".file_sets WHERE period_id = $1",
            period,
        )
        statements = {
            r["party_id"]: (r["manifest_sha256"], (Path(r["directory"]) / "manifest.json"))
            for r in rows
        }
        rows = await conn.fetch(
            f"SELECT journey_id, revision, body FROM {d.schema('accounts')}.journeys_latest"
        )
        history = {r["journey_id"]: (r["revision"], bytes(r["body"])) for r in rows}
    finally:
        await conn.close()
    # The reply, the recorded file sets and the files agree.
    assert {s.party_id: s.sha256 for s in closed.statements} == {
        party: sha for party, (sha, _) in statements.items()
    }
    files = statement_files(d.statements_dir)
    manifests = {
        party: files[str(path.relative_to(d.statements_dir))]
        for party, (_, path) in statements.items()
    }

    seen: dict[tuple[str, int], bytes] = {}
    for value in await read_all(bootstrap, topics.journeys):
        j = events_pb2.PricedJourney.FromString(value)
        key = (j.journey_id, j.revision)
        assert seen.setdefault(key, value) == value, f"{d.name}: {key} published twice, differing"
    return Outcome(
        {party: (sha, manifests[party]) for party, (sha, _) in statements.items()},
        files,
        history,
        len(seen),
    )


async def prepare(d: Deployment) -> None:
    """Create the run's topics and check they have enough partitions to share out."""
    bootstrap = d.endpoints.kafka_bootstrap
    await ensure_topics(bootstrap, d.topics.all())
    counts = await partition_counts(bootstrap, [d.topics.taps, d.topics.journeys])
    assert all(n >= MIN_PARTITIONS for n in counts.values()), counts


async def one_instance_each(d: Deployment, taps: list[events_pb2.Tap], period: str) -> Outcome:
    """The reference: every tap published first, then one instance of each service."""
    await prepare(d)
    await publish(d.endpoints.kafka_bootstrap, d.topics.taps, taps)
    fares, settlement, accounts = (d.start(service) for service in SERVICES)
    for instance in (fares, settlement, accounts):
        await wait_serving(instance)
    return await settle(d, fares, settlement, period, len(taps))


async def two_instances_each_one_killed(
    d: Deployment, taps: list[events_pb2.Tap], period: str
) -> Outcome:
    """Two instances of each service share the partitions; taps are published while they
    consume; one instance of each service is SIGKILLed mid-stream, the survivors take its
    partitions over, and the killed ones are started again (another rebalance)."""
    await prepare(d)
    dsn, bootstrap, topics = d.endpoints.pg_dsn, d.endpoints.kafka_bootstrap, d.topics
    pairs = {service: (d.start(service), d.start(service)) for service in SERVICES}
    for instance in d.instances:
        await wait_serving(instance)
    for service in SERVICES:
        await wait_group_stable(bootstrap, d.group(service), 2)

    publishing = asyncio.create_task(publish(bootstrap, topics.taps, taps))
    try:
        total = len(taps)
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            done = await processed(dsn, d.schema("fares"), topics.taps)
            posted = await count_rows(dsn, f"{d.schema('settlement')}.journey_positions")
            stored = await count_rows(dsn, f"{d.schema('accounts')}.journeys_latest")
            if done >= total * KILL_AFTER_SHARE and posted and stored:
                break
            assert asyncio.get_running_loop().time() < deadline, (done, posted, stored)
            await asyncio.sleep(0.02)
        for victim, _ in pairs.values():
            victim.process.send_signal(signal.SIGKILL)
        for victim, _ in pairs.values():
            victim.process.wait(10)
        done = await processed(dsn, d.schema("fares"), topics.taps)
        assert 0 < done < total, f"the kill did not land mid-stream ({done}/{total})"
        journeys_at_kill = sum((await partition_ends(bootstrap, topics.journeys)).values())
    finally:
        await publishing
    for service in SERVICES:
        d.start(service)  # the killed instance comes back under a new member id
    for instance in d.instances:
        if instance.process.returncode is None:
            await wait_serving(instance)

    outcome = await settle(d, pairs["fares"][1], pairs["settlement"][1], period, len(taps))
    # Fares went on publishing after the kill, so settlement and accounts were mid-stream too.
    assert sum((await partition_ends(bootstrap, topics.journeys)).values()) > journeys_at_kill
    return outcome


async def partition_ends(bootstrap: str, topic: str) -> dict[int, int]:
    """partition -> end offset of `topic` now."""
    [count] = (await partition_counts(bootstrap, [topic])).values()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(count)])
    finally:
        await consumer.stop()
    return {tp.partition: end for tp, end in ends.items()}


async def test_two_instances_of_each_service_killed_mid_stream_settle_byte_identical(
    endpoints, unique_name, tmp_path, pki
):
    period, taps = day_taps(CARDS)
    one = Deployment(endpoints, f"{unique_name}a", tmp_path / "one", pki)
    two = Deployment(endpoints, f"{unique_name}b", tmp_path / "two", pki)
    try:
        reference = await one_instance_each(one, taps, period)
    finally:
        one.stop()
    try:
        scaled = await two_instances_each_one_killed(two, taps, period)
    finally:
        two.stop()

    assert len(reference.statements) >= 4  # the issuer and at least three operators
    assert scaled.statements.keys() == reference.statements.keys()
    differing = [p for p in reference.statements if scaled.statements[p] != reference.statements[p]]
    assert not differing, f"statements differ for {differing}"
    assert scaled.files == reference.files
    assert len(reference.history) > CARDS
    assert scaled.history.keys() == reference.history.keys()
    differing = [j for j in reference.history if scaled.history[j] != reference.history[j]]
    assert not differing, f"{len(differing)} journeys differ, e.g. {differing[:5]}"
    assert scaled.revisions == reference.revisions
