"""The service skeleton: grpc.aio server, health, reflection, the readiness gate, the
RPC interceptor, resources closed in reverse order, graceful SIGTERM.

A service implements `Service`: it adds its servicers in `register()` and opens its
connections through `Resources` in `start()`; it has no stop of its own. The runner
reports NOT_SERVING until `start()` has returned, SERVING after (and opens the gate),
NOT_SERVING again as soon as a SIGTERM arrives or a background loop dies, then stops
within the configured grace: RPCs drain, consumer loops finish their batch in hand, and
the resources close newest first. A failed start closes what it had opened.

With `CLEARWAY_TLS_CERT`/`CLEARWAY_TLS_KEY` the gRPC port is served with TLS (mutual TLS
with `CLEARWAY_TLS_CLIENT_CA`), and a second, plaintext server answers health and
reflection only, on `CLEARWAY_HEALTH_PORT` (default: the gRPC port + 1000), because
Kubernetes gRPC probes cannot do TLS. Both servers share one HealthServicer.

Every service also serves its metrics at `/metrics` (Prometheus' text format) on a plaintext
HTTP port, `CLEARWAY_METRICS_PORT` (default: the gRPC port + 3000; 0 turns it off): it
listens from before start-up (a service stuck starting can be looked at) until after the
resources closed, like the health port. Gauges a service registers through its resources
stop being reported when they close.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, Protocol, TypeVar

import asyncpg
import grpc
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from clearway.auth import Authentication
from clearway.consumer import (
    BatchHandler,
    CommitPolicy,
    ConsumerConfig,
    ConsumerLoop,
    dead_letter_topic,
)
from clearway.db import create_pool, migrate
from clearway.kafka import ensure_topics, idempotent_producer
from clearway.logs import configure_logging
from clearway.pki import server_credentials
from clearway.rpc import Readiness, ServiceInterceptor
from clearway.settings import ServiceSettings, SettingsError
from clearway.telemetry import (
    GaugePoints,
    MetricsServer,
    ObservedGauge,
    setup_metrics,
    setup_tracing,
)

T = TypeVar("T")

log = logging.getLogger(__name__)
ServingStatus = health_pb2.HealthCheckResponse.ServingStatus.ValueType


class Resources:
    """Everything a service opened, closed in reverse order: after a stop, and also after a
    start-up that failed half-way (a pool opened before Kafka refused is still closed).

    Services open their connections through it (`postgres`, `redis`, `producer`,
    `consume`, `background`, `observe` for a gauge read from their state) or register
    any other closer with `on_close`; the runner closes it. Background tasks registered
    here are the ones health watches.
    """

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.tasks: list[asyncio.Task[None]] = []
        self.loops: list[ConsumerLoop[Any]] = []
        self._closers: list[tuple[str, Callable[[], Awaitable[object]]]] = []

    def on_close(self, name: str, closer: Callable[[], Awaitable[object]]) -> None:
        """Run `closer` at close, before everything registered earlier."""
        self._closers.append((name, closer))

    async def postgres(self, migrations: Sequence[str] = ()) -> asyncpg.Pool:
        """A pool on the service's own schema, migrated; closed last."""
        s = self.settings
        pool = await create_pool(s.endpoints.pg_dsn, s.db_schema, max_size=s.pg_pool_size)
        self.on_close("postgres", pool.close)
        if migrations:
            await migrate(pool, migrations)
        return pool

    async def redis(self) -> aioredis.Redis:
        """A Redis client that answered PING."""
        client = aioredis.from_url(self.settings.endpoints.redis_url)
        self.on_close("redis", client.aclose)
        await client.ping()
        return client

    async def topics(self, names: Iterable[str]) -> None:
        """Create the topics that do not exist yet, with the configured partition count."""
        await ensure_topics(
            self.settings.endpoints.kafka_bootstrap,
            names,
            partitions=self.settings.topic_partitions,
        )

    async def producer(self, **overrides: object) -> AIOKafkaProducer:
        """An idempotent `acks=all` producer, flushed and stopped at close."""
        producer = idempotent_producer(self.settings.endpoints.kafka_bootstrap, **overrides)
        self.on_close("kafka producer", producer.stop)
        await producer.start()
        return producer

    async def consume(
        self,
        handler: BatchHandler[T],
        *,
        topics: Sequence[str],
        commits: CommitPolicy,
        producer: AIOKafkaProducer,
    ) -> ConsumerLoop[T]:
        """Start the kit's consumer loop for `handler` in the service's group; its dead
        letters go to `<topic>.<service>.dlq` (created here). Stopped cooperatively first."""
        s = self.settings
        await self.topics([*topics, *(dead_letter_topic(t, s.service) for t in topics)])
        config = ConsumerConfig(
            bootstrap=s.endpoints.kafka_bootstrap,
            group_id=s.consumer_group,
            topics=tuple(topics),
            service=s.service,
            max_records=s.consumer_max_records,
        )
        loop = ConsumerLoop(config, handler, commits=commits, producer=producer)
        self.on_close(f"consumer {handler.name}", lambda: loop.stop(s.grace_seconds / 2))
        await loop.start()
        self.loops.append(loop)
        self.background(f"consumer {handler.name}", loop.run())
        return loop

    def observe(self, gauge: ObservedGauge, points: GaugePoints) -> None:
        """Report `points()` on `gauge` at every collection until the resources close."""
        unwatch = gauge.watch(points)

        async def stop_observing() -> None:
            unwatch()

        self.on_close(f"gauge {gauge.name}", stop_observing)

    def background(self, name: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` as a task that health watches; cancelled at close if still running."""
        task = asyncio.create_task(work, name=name)
        self.tasks.append(task)

        async def cancel() -> None:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

        self.on_close(name, cancel)
        return task

    async def close(self) -> None:
        """Close everything, newest first; a failing closer is logged and the rest still run."""
        while self._closers:
            name, closer = self._closers.pop()
            try:
                await closer()
            except Exception:
                log.warning("closing failed", extra={"resource": name}, exc_info=True)


class Service(Protocol):
    """What the runner needs from a service's composition root: wiring only.

    A service may also declare `authentication: Authentication` (default
    `Authentication.NONE`); with `REQUIRED` every RPC but health and reflection needs a
    verified client certificate of the scheme, and the service will not start without
    mutual TLS configured. A service whose callers are not all certificate holders (ingest:
    validators prove themselves by signing) may instead declare `authenticated_services`,
    the full names of its gRPC services for certificate holders only (the operations
    role's): those are served on an extra mutual-TLS port, the admin port, and refused
    with UNAUTHENTICATED on the main port.
    """

    settings: ServiceSettings

    @property
    def grpc_service_names(self) -> list[str]:
        """Full names of the gRPC services this process serves (for health and reflection)."""
        ...

    def register(self, server: grpc.aio.Server) -> None:
        """Add the servicers to `server` (before start; they read their ports from a Slot)."""
        ...

    async def start(self, resources: Resources) -> None:
        """Open connections through `resources`, fill the servicers' slots, start loops."""
        ...


def authentication_of(service: object) -> Authentication:
    """The service's declared `authentication` (NONE when it declares none)."""
    return Authentication(getattr(service, "authentication", Authentication.NONE))


def authenticated_services_of(service: object) -> frozenset[str]:
    """The gRPC services of `service` that only certificate holders may call."""
    return frozenset(getattr(service, "authenticated_services", ()))


def check_transport(
    settings: ServiceSettings,
    authentication: Authentication,
    authenticated_services: frozenset[str] = frozenset(),
) -> None:
    """Refuse to start a service that requires identities without mutual TLS: every call
    would be refused, which is worse than a clear start-up error."""
    needs_mtls = authentication is Authentication.REQUIRED or bool(authenticated_services)
    if needs_mtls and settings.tls_client_ca is None:
        raise SettingsError(
            f"{settings.service} requires authenticated callers: set CLEARWAY_TLS_CERT, "
            "CLEARWAY_TLS_KEY and CLEARWAY_TLS_CLIENT_CA (see `clearway pki init`)"
        )


HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class RunningService:
    """A started service with its gRPC server (and, with TLS, its plaintext health server);
    used by `run` and by in-process tests."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.health = HealthServicer()
        self.readiness = Readiness()
        self.resources = Resources(service.settings)
        self.authentication = authentication_of(service)
        self.authenticated_services = authenticated_services_of(service)
        self.server = grpc.aio.server(
            interceptors=[
                ServiceInterceptor(self.readiness, self.authentication, self.authenticated_services)
            ]
        )
        self.admin_port: int | None = None  # the mutual-TLS admin port, when there is one
        self.health_server: grpc.aio.Server | None = None
        self.port = 0
        self.health_port: int | None = None  # the plaintext health port, with TLS only
        self.metrics_server = MetricsServer()
        self.metrics_port: int | None = None  # where /metrics answers, unless turned off
        self._stopped = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None

    async def _set_all(
        self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None:
        for name in ["", *self.service.grpc_service_names]:
            await self.health.set(name, status)

    async def start(self) -> int:
        """Bind, serve health as NOT_SERVING, start the service, then open the gate and
        report SERVING. A failed start releases what it had opened and raises."""
        settings = self.service.settings
        check_transport(settings, self.authentication, self.authenticated_services)
        self.service.register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [*self.service.grpc_service_names, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, self.server)
        self.port = self._bind(settings)
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
        try:
            await self._serve_metrics(settings)
        except BaseException:
            await self.server.stop(0)
            await self._stop_health_server()
            raise
        log.info(
            "listening",
            extra={
                "address": f"{settings.grpc_host}:{self.port}",
                "tls": settings.tls_enabled,
                "mutual_tls": settings.tls_client_ca is not None,
                "health_port": self.health_port,
                "admin_port": self.admin_port,
                "metrics_port": self.metrics_port,
                "authentication": self.authentication.value,
            },
        )
        try:
            await self.service.start(self.resources)
        except BaseException:
            await self.resources.close()
            await self.server.stop(0)
            await self._stop_health_server()
            await self.metrics_server.stop()
            raise
        self.readiness.open()
        await self._set_all(health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"service": settings.service})
        if self.resources.tasks:
            self._watchdog = asyncio.create_task(
                self._watch(self.resources.tasks), name="health-watchdog"
            )
        return self.port

    def _bind(self, settings: ServiceSettings) -> int:
        """Add the gRPC port (TLS when configured: mutual for a service that authenticates
        every caller), with TLS the plaintext health server, and the mutual-TLS admin port
        of a service with authenticated services; return the bound gRPC port."""
        address = f"{settings.grpc_host}:{settings.grpc_port}"
        if self.authenticated_services:
            self.admin_port = self.server.add_secure_port(
                f"{settings.grpc_host}:{settings.mutual_tls_admin_port}",
                self._credentials(settings, mutual=True),
            )
        if settings.tls_cert is None or settings.tls_key is None:
            return self.server.add_insecure_port(address)
        mutual = self.authentication is Authentication.REQUIRED
        port = self.server.add_secure_port(address, self._credentials(settings, mutual=mutual))
        # Probes cannot do TLS: health (and reflection) alone, in plaintext, on a port of
        # its own. A second tiny server, so nothing else is ever reachable without TLS.
        health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, health_server)
        reflection.enable_server_reflection(
            [HEALTH_SERVICE_NAME, reflection.SERVICE_NAME], health_server
        )
        self.health_port = health_server.add_insecure_port(
            f"{settings.grpc_host}:{settings.plaintext_health_port}"
        )
        self.health_server = health_server
        return port

    async def _serve_metrics(self, settings: ServiceSettings) -> None:
        """/metrics on its HTTP port (the process's metrics, set up once per process)."""
        setup_metrics(f"clearway-{settings.service}")
        port = settings.http_metrics_port
        if port is None:
            return
        try:
            self.metrics_port = await self.metrics_server.start(settings.grpc_host, port)
        except OSError as exc:
            raise SettingsError(
                f"cannot serve /metrics on {settings.grpc_host}:{port} ({exc.strerror}):"
                " set CLEARWAY_METRICS_PORT to a free port, or 0 to turn it off"
            ) from exc

    @staticmethod
    def _credentials(settings: ServiceSettings, *, mutual: bool) -> grpc.ServerCredentials:
        assert settings.tls_cert is not None and settings.tls_key is not None
        try:
            return server_credentials(
                settings.tls_cert, settings.tls_key, settings.tls_client_ca if mutual else None
            )
        except OSError as exc:
            raise SettingsError(f"cannot read the TLS files: {exc}") from exc

    async def _stop_health_server(self) -> None:
        if self.health_server is not None:
            await self.health_server.stop(0)

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
        """NOT_SERVING first, then drain RPCs within the grace, then close the resources
        (consumer loops finish their batch in hand first)."""
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
        for consumer in self.resources.loops:
            consumer.request_stop()  # finish the batch in hand while RPCs drain
        # One budget for the whole stop: in-flight RPCs get most of it, the service the rest.
        await self.server.stop(grace * 0.7)
        self.readiness.close()
        try:
            await asyncio.wait_for(self.resources.close(), max(0.5, deadline - loop.time()))
        except Exception:
            log.exception("service did not stop cleanly within the grace")
        # Health answers NOT_SERVING on the plaintext port until the very end, and the
        # last metrics stay readable as long.
        await self._stop_health_server()
        await self.metrics_server.stop()
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
        gc.freeze()  # what start-up built (fare data, pools) lives as long as the process
        await stop_wait
    else:
        start.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await start
    log.info("signal received; shutting down")
    await running.stop()


def tune_garbage_collector(thresholds: tuple[int, int, int]) -> None:
    """Collect young objects less often than CPython's default (700 allocations): a busy
    consumer allocates hundreds of thousands of short-lived objects per batch and spent
    a fifth of its CPU in the collector."""
    gc.set_threshold(*thresholds)


def run(service: Service) -> int:
    """Process entry point: logging, tracing, serve, exit code 0 on a clean stop."""
    configure_logging(service.settings.service, service.settings.log_level)
    tune_garbage_collector(service.settings.gc_thresholds)
    setup_tracing(f"clearway-{service.settings.service}")
    setup_metrics(f"clearway-{service.settings.service}")
    try:
        asyncio.run(serve_until_signalled(service))
    except Exception:
        log.exception("service failed")
        return 1
    return 0
