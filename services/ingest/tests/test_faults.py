"""Exactly once at the edge when the infrastructure fails: Kafka stopped mid-stream, Redis
stopped mid-stream, each followed by resends. Each test runs its own Kafka or Redis (the
shared ones are never stopped) and checks the taps topic itself: every tap sent is on it
exactly once.

Validators behave as the protocol asks: a batch whose call fails (UNAVAILABLE, or no answer
in time) is resent, with the same sequence numbers, until every tap of it is acknowledged
ACCEPTED or DUPLICATE."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from clearway.infra.endpoints import (
    KAFKA_BOOTSTRAP_VAR,
    PG_DSN_VAR,
    REDIS_URL_VAR,
    Endpoints,
    LocalPorts,
)
from clearway.infra.manager import LocalInfra, default_base_dir
from clearway.infra.process import free_ports
from clearway.ingest.v1 import ingest_pb2
from services.ingest.tests.ingest_harness import (
    Ingest,
    read_topic,
    start_ingest,
    status_of,
    tap,
    taps_on,
)

pytestmark = pytest.mark.integration

DEVICES = 4
BATCHES = 25
BATCH = 20
# What a failing call may answer while the infrastructure is away: all mean "resend".
RESEND_REASONS = {"KAFKA_UNAVAILABLE", "DEDUP_UNAVAILABLE", "TAP_IN_FLIGHT"}
DONE = {ingest_pb2.ACK_STATUS_ACCEPTED, ingest_pb2.ACK_STATUS_DUPLICATE}


@contextlib.contextmanager
def own_server(component: str) -> Iterator[LocalInfra]:
    """A Kafka or Redis of this test's own, which the test may stop and start again."""
    base = Path(tempfile.mkdtemp(prefix=f"cw-ingest-{component}-"))
    kafka, controller, pg, redis = free_ports(4)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {KAFKA_BOOTSTRAP_VAR, PG_DSN_VAR, REDIS_URL_VAR}
    }
    env["CLEARWAY_INFRA_DIR"] = str(base)
    fetched = default_base_dir() / "kafka" / "libs"
    if component == "kafka" and fetched.is_dir():  # the jars `infra up` fetched: reuse them
        (base / "kafka").mkdir(parents=True)
        (base / "kafka" / "libs").symlink_to(fetched)
    infra = LocalInfra(base, LocalPorts(kafka, controller, pg, redis), env, (component,))
    try:
        infra.up()
        yield infra
    finally:
        infra.down()
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class Validators:
    """Devices that send their batches in order and resend whatever was not acknowledged."""

    ingest: Ingest
    batches: dict[str, list[list]] = field(default_factory=dict)
    acked: dict[str, int] = field(default_factory=Counter)  # device -> batches done
    statuses: Counter[str] = field(default_factory=Counter)  # failed calls, by reason
    accepted: Counter[tuple[str, int]] = field(default_factory=Counter)

    async def register(self) -> None:
        for d in range(DEVICES):
            device = f"gate-fault-{d}"
            await self.ingest.register(device)
            self.batches[device] = [
                [tap(device, b * BATCH + i + 1) for i in range(BATCH)] for b in range(BATCHES)
            ]

    @property
    def sent(self) -> int:
        return sum(self.acked.values())

    async def run(self, pace_s: float) -> None:
        await asyncio.gather(*(self._device(d, pace_s) for d in self.batches))

    async def _device(self, device: str, pace_s: float) -> None:
        identity = self.ingest.devices[device]
        for batch in self.batches[device]:
            signed = identity.sign_batch(batch)
            for attempt in range(400):
                try:
                    acks = await asyncio.wait_for(self.ingest.stream([signed]), 15)
                except grpc.aio.AioRpcError as exc:
                    code, reason = status_of(exc)
                    assert code == grpc.StatusCode.UNAVAILABLE, (code, reason)
                    assert reason in RESEND_REASONS, reason
                    self.statuses[reason] += 1
                    await asyncio.sleep(min(0.1 * (attempt + 1), 1.0))
                    continue
                except TimeoutError:
                    self.statuses["NO_ANSWER"] += 1
                    continue
                (answer,) = acks
                assert len(answer) == len(batch)
                assert {a.status for a in answer} <= DONE, answer
                for t, a in zip(batch, answer, strict=True):
                    if a.status == ingest_pb2.ACK_STATUS_ACCEPTED:
                        self.accepted[(device, t.sequence_number)] += 1
                break
            else:
                raise AssertionError(f"{device}: a batch was never acknowledged")
            self.acked[device] += 1
            await asyncio.sleep(pace_s)

    def expected(self) -> set[tuple[str, int]]:
        return {(d, t.sequence_number) for d, bs in self.batches.items() for b in bs for t in b}


async def wait_for_batches(validators: Validators, count: int) -> None:
    async with asyncio.timeout(60):
        while validators.sent < count:  # noqa: ASYNC110 (polling a counter, test only)
            await asyncio.sleep(0.05)


def assert_exactly_once(validators: Validators, records) -> None:
    on_topic = Counter((t.device_id, t.sequence_number) for t in taps_on(records))
    twice = {pair: n for pair, n in on_topic.items() if n > 1}
    assert twice == {}, f"stored more than once: {sorted(twice)[:5]}"
    assert set(on_topic) == validators.expected()
    # Every tap was acknowledged ACCEPTED exactly once (later resends answered DUPLICATE).
    assert set(validators.accepted) == validators.expected()
    assert set(validators.accepted.values()) == {1}


async def test_kafka_stopped_mid_stream_then_resends_store_every_tap_exactly_once(
    settings_for, endpoints: Endpoints, pki: Path
):
    with own_server("kafka") as kafka:
        own = dataclasses.replace(endpoints, kafka_bootstrap=kafka.endpoints.kafka_bootstrap)
        settings = dataclasses.replace(settings_for("ingest"), endpoints=own)
        ingest = await start_ingest(settings, pki)
        try:
            validators = Validators(ingest)
            await validators.register()
            sending = asyncio.create_task(validators.run(pace_s=0.02))
            await wait_for_batches(validators, DEVICES * 5)
            await asyncio.to_thread(kafka.down)  # mid-stream: streams are sending
            await asyncio.sleep(12)  # long enough for the writer to give up and say so
            assert not sending.done()
            await asyncio.to_thread(kafka.up)
            async with asyncio.timeout(240):
                await sending
            # Validators were told to resend (not left without an answer).
            assert validators.statuses["KAFKA_UNAVAILABLE"] > 0, validators.statuses
            records = await read_topic(own.kafka_bootstrap, settings.topics.taps)
        finally:
            await ingest.stop()
    assert_exactly_once(validators, records)


async def test_redis_stopped_mid_stream_then_resends_store_every_tap_exactly_once(
    settings_for, endpoints: Endpoints, pki: Path
):
    with own_server("redis") as redis:
        own = dataclasses.replace(endpoints, redis_url=redis.endpoints.redis_url)
        settings = dataclasses.replace(settings_for("ingest"), endpoints=own)
        ingest = await start_ingest(settings, pki)
        try:
            validators = Validators(ingest)
            await validators.register()
            sending = asyncio.create_task(validators.run(pace_s=0.02))
            await wait_for_batches(validators, DEVICES * 5)
            await asyncio.to_thread(redis.down)
            await asyncio.sleep(2)
            assert not sending.done()
            await asyncio.to_thread(redis.up)
            async with asyncio.timeout(240):
                await sending
            assert validators.statuses["DEDUP_UNAVAILABLE"] > 0
            records = await read_topic(own.kafka_bootstrap, settings.topics.taps)
        finally:
            await ingest.stop()
    assert_exactly_once(validators, records)
