"""Run a Clearway service: grpc.aio server, health, reflection, graceful SIGTERM.

A service implements `Service`: it connects to its infrastructure in `start()`,
adds its servicers in `register()`, and releases everything in `stop()`. The runner
reports NOT_SERVING until `start()` has returned, SERVING after, and NOT_SERVING
again as soon as a SIGTERM arrives, then stops within the configured grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from clearway.logs import configure_logging
from clearway.settings import ServiceSettings
from clearway.telemetry import setup_tracing

log = logging.getLogger(__name__)
ServingStatus = health_pb2.HealthCheckResponse.ServingStatus.ValueType


class Service(Protocol):
    """What the runner needs from a service's composition root."""

    settings: ServiceSettings

    @property
    def grpc_service_names(self) -> list[str]:
        """Full names of the gRPC services this process serves (for health and reflection)."""
        ...

    def register(self, server: grpc.aio.Server) -> None:
        """Add the servicers to `server`."""
        ...

    async def start(self) -> None:
        """Connect to Kafka/PostgreSQL/Redis and start background loops."""
        ...

    async def stop(self) -> None:
        """Stop background loops and close connections."""
        ...

    def background_tasks(self) -> list[asyncio.Task[None]]:
        """Loops that must run for the service to be healthy (e.g. a Kafka consumer)."""
        ...


class RunningService:
    """A started service with its gRPC server; used by `run` and by in-process tests."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.health = HealthServicer()
        self.server = grpc.aio.server()
        self.port = 0
        self._stopped = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None

    async def _set_all(
        self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None:
        for name in ["", *self.service.grpc_service_names]:
            await self.health.set(name, status)

    async def start(self) -> int:
        """Bind, serve health as NOT_SERVING, start the service, then report SERVING."""
        settings = self.service.settings
        self.service.register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [
            *self.service.grpc_service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ]
        reflection.enable_server_reflection(names, self.server)
        address = f"{settings.grpc_host}:{settings.grpc_port}"
        self.port = self.server.add_insecure_port(address)
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        log.info("listening", extra={"address": f"{settings.grpc_host}:{self.port}"})
        await self.service.start()
        await self._set_all(health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"service": settings.service})
        tasks = self.service.background_tasks()
        if tasks:
            self._watchdog = asyncio.create_task(self._watch(tasks), name="health-watchdog")
        return self.port

    async def _watch(self, tasks: list[asyncio.Task[None]]) -> None:
        """A background loop that ends while serving makes the service NOT_SERVING, so a
        liveness probe restarts it instead of leaving a live server that does no work."""
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if self._stopped.is_set():
            return
        for task in done:
            error = None if task.cancelled() else task.exception()
            log.error(
                "background loop ended; NOT_SERVING",
                extra={"task": task.get_name()},
                exc_info=error,
            )
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stop(self) -> None:
        """NOT_SERVING first, then drain RPCs within the grace, then stop the service."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._watchdog is not None:
            self._watchdog.cancel()
        await self.health.enter_graceful_shutdown()
        grace = self.service.settings.grace_seconds
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        log.info("draining", extra={"grace_seconds": grace})
        # One budget for the whole stop: in-flight RPCs get most of it, the service the rest.
        await self.server.stop(grace * 0.7)
        try:
            await asyncio.wait_for(self.service.stop(), max(0.5, deadline - loop.time()))
        except Exception:
            log.exception("service did not stop cleanly within the grace")
        log.info("stopped")


async def serve_until_signalled(service: Service) -> None:
    """Run `service` until SIGTERM/SIGINT, then stop it gracefully."""
    running = RunningService(service)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    start = asyncio.create_task(running.start())
    stop_wait = asyncio.create_task(stop_requested.wait())
    done, _ = await asyncio.wait({start, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    if start in done:
        start.result()  # a failed start raises here and the process exits non-zero
        await stop_wait
    else:
        start.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await start
    log.info("signal received; shutting down")
    await running.stop()


def run(service: Service) -> int:
    """Process entry point: logging, tracing, serve, exit code 0 on a clean stop."""
    configure_logging(service.settings.service, service.settings.log_level)
    setup_tracing(f"clearway-{service.settings.service}")
    try:
        asyncio.run(serve_until_signalled(service))
    except Exception:
        log.exception("service failed")
        return 1
    return 0
