"""The service runner: NOT_SERVING until started, SERVING after, NOT_SERVING when a
background loop dies or a stop begins."""

import asyncio
import dataclasses

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clearway.runtime import Resources, RunningService
from clearway.settings import ServiceSettings


@dataclasses.dataclass
class LoopService:
    """A service whose only work is a background loop that we can make fail."""

    settings: ServiceSettings
    fail: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def grpc_service_names(self) -> list[str]:
        return []

    def register(self, server: grpc.aio.Server) -> None:
        pass

    async def start(self, resources: Resources) -> None:
        async def loop() -> None:
            await self.fail.wait()
            raise RuntimeError("consumer crashed")

        self.task = resources.background("test-loop", loop())


async def status(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        return reply.status


async def test_a_dead_background_loop_turns_health_to_not_serving():
    settings = dataclasses.replace(ServiceSettings.from_env("test"), grpc_port=0, grace_seconds=1.0)
    service = LoopService(settings)
    running = RunningService(service)
    port = await running.start()
    try:
        assert await status(port) == health_pb2.HealthCheckResponse.SERVING
        service.fail.set()
        for _ in range(50):
            if await status(port) == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            await asyncio.sleep(0.05)
        assert await status(port) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await running.stop()
