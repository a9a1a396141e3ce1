"""The local infrastructure and the servers every service relies on, checked for real."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from redis.asyncio import Redis

from clearway.infra.endpoints import (
    KAFKA_BOOTSTRAP_VAR,
    KAFKA_CONTROLLER_PORT_VAR,
    KAFKA_PORT_VAR,
    PG_DSN_VAR,
    PG_PORT_VAR,
    REDIS_PORT_VAR,
    REDIS_URL_VAR,
)
from clearway.infra.kafka import probe_kafka
from clearway.infra.postgres import probe_postgres
from clearway.infra.process import ProcessRecord, cmdline
from clearway.infra.redis import probe_redis
from conftest import free_ports

if TYPE_CHECKING:  # the fixture's type; pytest loads conftest itself
    from conftest import InfraSession

pytestmark = pytest.mark.integration


# -- helpers ---------------------------------------------------------------------------


async def create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
        )
    finally:
        await admin.close()


async def read_values(consumer: AIOKafkaConsumer, count: int, limit_s: float = 30.0) -> list[bytes]:
    values: list[bytes] = []
    async with asyncio.timeout(limit_s):
        while len(values) < count:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                values.extend(r.value for r in records)
    return values


def run_infra(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "infra", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def status_lines(output: str) -> dict[str, str]:
    """component -> its state word, from `clearway infra status` output."""
    lines = {}
    for line in output.splitlines():
        parts = line.split()
        if parts and parts[0] in {"kafka", "postgres", "redis"}:
            lines[parts[0]] = parts[1]
    return lines


@pytest.fixture
def separate_instance() -> Iterator[tuple[Path, dict[str, str]]]:
    """A second, never-started local instance: its own (0700) directory and free ports."""
    base = Path(tempfile.mkdtemp(prefix="cw-infra-"))
    kafka, controller, pg, redis = free_ports(4)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {KAFKA_BOOTSTRAP_VAR, PG_DSN_VAR, REDIS_URL_VAR}
    }
    env.update(
        {
            "CLEARWAY_INFRA_DIR": str(base),
            KAFKA_PORT_VAR: str(kafka),
            KAFKA_CONTROLLER_PORT_VAR: str(controller),
            PG_PORT_VAR: str(pg),
            REDIS_PORT_VAR: str(redis),
        }
    )
    yield base, env
    run_infra(["down"], env)  # in case a test failed half way; a no-op otherwise
    pg_link = base / "postgres"
    if pg_link.is_symlink():  # data kept under /var/lib/clearway-infra/<hash>/postgres
        shutil.rmtree(pg_link.resolve().parent, ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)


# -- the servers -----------------------------------------------------------------------


async def test_kafka_round_trip_commits_the_consumer_group_offset(
    kafka_bootstrap: str, unique_name: str
) -> None:
    await create_topic(kafka_bootstrap, unique_name)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(unique_name, f"tap-{i}".encode(), key=b"card-1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        unique_name,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{unique_name}-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        values = await read_values(consumer, 3)
        await consumer.commit()
        committed = await consumer.committed(TopicPartition(unique_name, 0))
    finally:
        await consumer.stop()

    assert values == [b"tap-0", b"tap-1", b"tap-2"]
    assert committed == 3


async def test_read_committed_consumer_sees_only_committed_transactions(
    kafka_bootstrap: str, unique_name: str
) -> None:
    await create_topic(kafka_bootstrap, unique_name)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=f"{unique_name}-tx"
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(unique_name, b"committed-1")
            await producer.send_and_wait(unique_name, b"committed-2")
        await producer.begin_transaction()
        await producer.send_and_wait(unique_name, b"aborted-1")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(unique_name, b"committed-3")
    finally:
        await producer.stop()

    seen: dict[str, list[bytes]] = {}
    for isolation, expected in (("read_committed", 3), ("read_uncommitted", 4)):
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap, isolation_level=isolation, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(unique_name, 0)])
            await consumer.seek_to_beginning()
            seen[isolation] = await read_values(consumer, expected)
            # Nothing more arrives: the aborted record is not merely late.
            extra = await consumer.getmany(timeout_ms=1000)
            seen[isolation] += [r.value for records in extra.values() for r in records]
        finally:
            await consumer.stop()

    assert seen["read_committed"] == [b"committed-1", b"committed-2", b"committed-3"]
    # The aborted record really was written; only the isolation level hides it.
    assert seen["read_uncommitted"] == [
        b"committed-1",
        b"committed-2",
        b"aborted-1",
        b"committed-3",
    ]


async def test_postgres_answers_queries_in_a_private_schema(pg_dsn: str, unique_name: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {unique_name}")
        await conn.execute(f"CREATE TABLE {unique_name}.fare (id int PRIMARY KEY, pence int)")
        await conn.executemany(
            f"INSERT INTO {unique_name}.fare VALUES ($1, $2)", [(1, 280), (2, 175)]
        )
        total = await conn.fetchval(f"SELECT sum(pence) FROM {unique_name}.fare")
        version = await conn.fetchval("SHOW server_version_num")
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {unique_name} CASCADE")
        await conn.close()
    assert total == 455
    assert int(version) >= 140000


async def test_redis_round_trip(redis_url: str, unique_name: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        assert await client.set(f"{unique_name}:balance", "1250", ex=60)
        assert await client.incrby(f"{unique_name}:balance", -280) == 970
        assert await client.get(f"{unique_name}:balance") == b"970"
        assert 0 < await client.ttl(f"{unique_name}:balance") <= 60
    finally:
        await client.delete(f"{unique_name}:balance")
        await client.aclose()


# -- the `clearway infra` command ------------------------------------------------------


def test_infra_up_twice_succeeds_and_the_second_is_a_no_op(infra_session: InfraSession) -> None:
    first = run_infra(["up"], infra_session.cli_env)
    second = run_infra(["up"], infra_session.cli_env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert second.returncode == 0, second.stdout + second.stderr
    assert status_lines(second.stdout) == {"kafka": "up", "postgres": "up", "redis": "up"}
    if infra_session.source == "local":
        assert second.stdout.count("already up") == 3, second.stdout
        assert "starting" not in second.stdout


def test_infra_status_reports_running_servers_up(infra_session: InfraSession) -> None:
    result = run_infra(["status"], infra_session.cli_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert status_lines(result.stdout) == {"kafka": "up", "postgres": "up", "redis": "up"}
    expected_kind = "(local" if infra_session.source == "local" else "(external"
    assert result.stdout.count(expected_kind) == 3, result.stdout


def test_infra_status_reports_a_never_started_instance_down(
    separate_instance: tuple[Path, dict[str, str]],
) -> None:
    _, env = separate_instance
    result = run_infra(["status"], env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert status_lines(result.stdout) == {"kafka": "down", "postgres": "down", "redis": "down"}


def test_infra_status_says_external_for_env_endpoints_and_tells_the_truth(
    separate_instance: tuple[Path, dict[str, str]], redis_url: str
) -> None:
    _, env = separate_instance
    env = {**env, REDIS_URL_VAR: redis_url, PG_DSN_VAR: "postgresql://x:y@127.0.0.1:1/none"}
    result = run_infra(["status", "--only", "redis,postgres"], env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert status_lines(result.stdout) == {"postgres": "down", "redis": "up"}
    assert result.stdout.count("(external") == 2, result.stdout


def test_infra_down_stops_what_it_started_and_nothing_else(
    separate_instance: tuple[Path, dict[str, str]], endpoints_for_main: dict[str, str]
) -> None:
    base, env = separate_instance
    decoy_port = free_ports(1)[0]
    decoy = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(decoy_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    decoy_url = f"redis://127.0.0.1:{decoy_port}/0"
    try:
        up = run_infra(["up"], env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert status_lines(up.stdout) == {"kafka": "up", "postgres": "up", "redis": "up"}
        records = {
            name: ProcessRecord.load(base / "run" / f"{name}.json")
            for name in ("kafka", "postgres", "redis")
        }
        pids = {name: r.pid for name, r in records.items() if r is not None}
        assert set(pids) == {"kafka", "postgres", "redis"}
        assert all(cmdline(pid) is not None for pid in pids.values())
        if os.geteuid() == 0:
            # The 0700 temp dir is not traversable by the postgres user: data moved out.
            assert (base / "postgres").is_symlink()
            assert str((base / "postgres").resolve()).startswith("/var/lib/clearway-infra/")
        assert _wait_for(lambda: probe_redis(decoy_url) is None), "decoy redis never answered"

        down = run_infra(["down"], env)
        assert down.returncode == 0, down.stdout + down.stderr

        assert {name: cmdline(pid) for name, pid in pids.items()} == dict.fromkeys(pids)
        assert probe_redis(decoy_url) is None, "down stopped a redis-server it did not start"
        assert decoy.poll() is None
        assert probe_kafka(endpoints_for_main["kafka"]) is None
        assert probe_postgres(endpoints_for_main["postgres"]) is None
        assert probe_redis(endpoints_for_main["redis"]) is None
        after = run_infra(["status"], env)
        assert after.returncode == 1
        assert status_lines(after.stdout) == {"kafka": "down", "postgres": "down", "redis": "down"}
        again = run_infra(["down"], env)
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        decoy.send_signal(signal.SIGTERM)
        decoy.wait(timeout=20)


@pytest.fixture
def endpoints_for_main(infra_session: InfraSession) -> dict[str, str]:
    e = infra_session.endpoints
    return {"kafka": e.kafka_bootstrap, "postgres": e.pg_dsn, "redis": e.redis_url}


def _wait_for(check: Callable[[], bool], limit_s: float = 10.0) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_concurrent_ups_of_one_instance_both_succeed(
    separate_instance: tuple[Path, dict[str, str]],
) -> None:
    _, env = separate_instance
    command = [sys.executable, "-m", "services.cli", "infra", "up"]
    procs = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(outputs)
    # Exactly one of them started each server; the other found it running.
    assert sum(out.count("already up") for out in outputs) == 3, "\n---\n".join(outputs)
    down = run_infra(["down"], env)
    assert down.returncode == 0, down.stdout + down.stderr


def test_infra_clean_stops_and_deletes_the_instance_data(
    separate_instance: tuple[Path, dict[str, str]],
) -> None:
    base, env = separate_instance
    up = run_infra(["up", "--only", "postgres,redis"], env)
    assert up.returncode == 0, up.stdout + up.stderr
    pg_data = (base / "postgres").resolve()
    assert (pg_data / "data" / "PG_VERSION").exists()

    clean = run_infra(["clean", "--only", "postgres,redis"], env)

    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert not base.exists()
    assert not pg_data.exists()
    status = run_infra(["status", "--only", "postgres,redis"], env)
    assert status_lines(status.stdout) == {"postgres": "down", "redis": "down"}
