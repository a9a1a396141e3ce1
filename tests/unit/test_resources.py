"""`Resources` closes what a service opened newest first, whatever fails on the way, and a
start-up that fails half-way leaves nothing open or served."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clearway.runtime import Resources, RunningService
from clearway.settings import ServiceSettings


def probe_settings() -> ServiceSettings:
    return dataclasses.replace(
        ServiceSettings.from_env("probe"), grpc_host="127.0.0.1", grpc_port=0, grace_seconds=0.5
    )


def recorder(closed: list[str], name: str, fail: bool = False):
    async def close() -> None:
        await asyncio.sleep(0)
        closed.append(name)
        if fail:
            raise RuntimeError(f"{name} would not close")

    return close


async def test_close_runs_closers_newest_first_and_goes_on_after_a_failure(caplog):
    caplog.set_level(logging.DEBUG)
    resources = Resources(probe_settings())
    closed: list[str] = []
    resources.on_close("postgres", recorder(closed, "postgres"))
    resources.on_close("kafka producer", recorder(closed, "kafka producer", fail=True))
    resources.on_close("redis", recorder(closed, "redis"))

    await resources.close()

    assert closed == ["redis", "kafka producer", "postgres"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [getattr(r, "resource", None) for r in warnings] == ["kafka producer"]
    assert warnings[0].exc_info is not None


async def test_close_twice_closes_each_resource_once():
    resources = Resources(probe_settings())
    closed: list[str] = []
    resources.on_close("postgres", recorder(closed, "postgres"))

    await resources.close()
    await resources.close()

    assert closed == ["postgres"]


async def test_a_background_task_is_cancelled_at_close_in_its_place_in_the_order():
    resources = Resources(probe_settings())
    events: list[str] = []
    running = asyncio.Event()

    async def forever() -> None:
        running.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("task cancelled")
            raise

    async def pool_close() -> None:
        events.append(f"pool closed (task done: {task.done()})")

    resources.on_close("postgres", pool_close)
    task = resources.background("consumer", forever())
    resources.on_close("redis", recorder(events, "redis closed"))
    await asyncio.wait_for(running.wait(), 5)

    await resources.close()

    assert task.cancelled()
    assert events == ["redis closed", "task cancelled", "pool closed (task done: True)"]
    assert resources.tasks == [task]


async def test_a_background_task_that_already_failed_does_not_stop_the_close():
    resources = Resources(probe_settings())
    closed: list[str] = []
    resources.on_close("postgres", recorder(closed, "postgres"))

    async def crash() -> None:
        raise RuntimeError("loop died")

    task = resources.background("consumer", crash())
    await asyncio.sleep(0.01)
    assert task.done()

    await resources.close()

    assert closed == ["postgres"]


@dataclasses.dataclass
class FailingStart:
    """A service that opens two resources and a background loop, then fails to start."""

    settings: ServiceSettings
    closed: list[str] = dataclasses.field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @property
    def grpc_service_names(self) -> list[str]:
        return []

    def register(self, server: grpc.aio.Server) -> None:
        pass

    async def start(self, resources: Resources) -> None:
        resources.on_close("postgres", recorder(self.closed, "postgres"))
        resources.on_close("kafka producer", recorder(self.closed, "kafka producer"))
        self.task = resources.background("consumer", asyncio.sleep(3600))
        raise ConnectionRefusedError(111, "Kafka said no")


async def serves(port: int) -> bool:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.aio.AioRpcError as exc:
            assert exc.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
            return False
        return True


async def test_a_failed_start_closes_what_it_opened_in_reverse_and_stops_serving():
    service = FailingStart(probe_settings())
    running = RunningService(service)

    with pytest.raises(ConnectionRefusedError, match="Kafka said no"):
        await running.start()

    assert service.closed == ["kafka producer", "postgres"]
    assert service.task is not None and service.task.cancelled()
    assert running.port > 0
    assert not running.readiness.ready
    assert not await serves(running.port)


async def test_a_started_service_serves_then_stop_closes_its_resources():
    """The counterpart of the failed start: the same probe sees a live port."""

    @dataclasses.dataclass
    class Fine(FailingStart):
        async def start(self, resources: Resources) -> None:
            resources.on_close("postgres", recorder(self.closed, "postgres"))
            resources.on_close("kafka producer", recorder(self.closed, "kafka producer"))

    service = Fine(probe_settings())
    running = RunningService(service)
    port = await running.start()
    try:
        assert await serves(port)
        assert service.closed == []
    finally:
        await running.stop()
    assert service.closed == ["kafka producer", "postgres"]
    assert not await serves(port)
