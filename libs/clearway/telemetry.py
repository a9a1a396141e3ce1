"""OpenTelemetry set-up (traces and metrics), the `/metrics` endpoint every service serves,
and W3C trace context carried in Kafka headers and gRPC metadata."""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.util.types import Attributes
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.aiohttp import make_aiohttp_handler

KafkaHeaders = list[tuple[str, bytes]]
log = logging.getLogger(__name__)


def setup_tracing(service: str, extra_processors: Sequence[SpanProcessor] = ()) -> TracerProvider:
    """Install a TracerProvider for `service` once per process.

    OTLP export only when OTEL_EXPORTER_OTLP_ENDPOINT is set; otherwise nothing leaves
    the process. When a provider is already installed (tests running several services
    in one process) it is reused, and `extra_processors` are added to it.
    """
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        for processor in extra_processors:
            current.add_span_processor(processor)
        return current
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    for processor in extra_processors:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


def otlp_metrics_wanted() -> bool:
    """Whether metrics are pushed over OTLP: when OTEL_EXPORTER_OTLP_ENDPOINT is set (as for
    traces) and OTEL_METRICS_EXPORTER (the standard variable) does not say `none`."""
    exporters = {
        name.strip().lower()
        for name in os.environ.get("OTEL_METRICS_EXPORTER", "otlp").split(",")
        if name.strip()
    }
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")) and "none" not in exporters


# The registry `/metrics` serves: the OpenTelemetry metrics of this process (one Prometheus
# reader) and the process itself (CPU, resident memory, open files, garbage collector).
_REGISTRY = CollectorRegistry()
ProcessCollector(registry=_REGISTRY)
PlatformCollector(registry=_REGISTRY)
GCCollector(registry=_REGISTRY)
_METRICS_LOCK = threading.Lock()


def setup_metrics(service: str) -> MeterProvider:
    """Install a MeterProvider for `service` once per process (later calls, e.g. several
    services started in one test process, reuse it).

    It always has a Prometheus reader: what `MetricsServer` serves at `/metrics`, collected
    when scraped. Metrics are also pushed over OTLP (every OTEL_METRIC_EXPORT_INTERVAL ms,
    default 60 s) when `otlp_metrics_wanted()`. Instruments created at import time (module
    level, on the API's proxy meter) start recording once this has run.
    """
    with _METRICS_LOCK:
        current = metrics.get_meter_provider()
        if isinstance(current, MeterProvider):
            return current
        readers: list[MetricReader] = [
            # Scope labels (otel_scope_name, ...) would only repeat the metric's prefix.
            PrometheusMetricReader(registry=_REGISTRY, scope_info_enabled=False)
        ]
        if otlp_metrics_wanted():
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # noqa: PLC0415
                OTLPMetricExporter,
            )

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        provider = MeterProvider(
            metric_readers=readers, resource=Resource.create({"service.name": service})
        )
        metrics.set_meter_provider(provider)
        return provider


class MetricsServer:
    """`GET /metrics` in Prometheus' text format (OpenMetrics when asked) on a plaintext HTTP
    port of its own, served on the service's event loop: observable gauges are read there,
    so their callbacks see the service's state between two of its awaits."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on `host:port` (0: any free port); the bound port."""
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(_REGISTRY))
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(64)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runner = runner
        await web.SockSite(runner, sock).start()
        self.port = int(sock.getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop listening (idempotent)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


GaugePoints = Callable[[], Iterable[tuple[int | float, Attributes]]]


class ObservedGauge:
    """An observable gauge read from whatever is registered now.

    A service registers a reader of its state with `watch` when it starts and removes it
    with the function `watch` returns when it stops (through `Resources.on_close`), so a
    stopped service (or a revoked partition) stops being reported, and several services in
    one process (tests) each report their own points. A reader runs on the thread that
    collects (the event loop for `/metrics`, the OTLP exporter's thread for a push): it
    must only read plain values, never await or lock.
    """

    def __init__(self, meter: metrics.Meter, name: str, *, unit: str, description: str) -> None:
        self.name = name
        self._readers: dict[int, GaugePoints] = {}
        self._ids = itertools.count()
        meter.create_observable_gauge(
            name, callbacks=[self._observe], unit=unit, description=description
        )

    def watch(self, points: GaugePoints) -> Callable[[], None]:
        """Report `points()` at every collection until the returned function is called."""
        key = next(self._ids)
        self._readers[key] = points

        def unwatch() -> None:
            self._readers.pop(key, None)

        return unwatch

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        observations = []
        for points in list(self._readers.values()):
            try:
                observations += [Observation(value, attrs) for value, attrs in points()]
            except Exception:  # one broken reader must not hide the others' points
                log.warning("gauge reader failed", extra={"metric": self.name}, exc_info=True)
        return observations


class _HeaderSetter(Setter[KafkaHeaders]):
    def set(self, carrier: KafkaHeaders, key: str, value: str) -> None:
        carrier.append((key, value.encode()))


class _HeaderGetter(Getter[Iterable[tuple[str, bytes]] | None]):
    def get(self, carrier: Iterable[tuple[str, bytes]] | None, key: str) -> list[str] | None:
        values = [v.decode() for k, v in (carrier or ()) if k.lower() == key.lower()]
        return values or None

    def keys(self, carrier: Iterable[tuple[str, bytes]] | None) -> list[str]:
        return [k for k, _ in (carrier or ())]


def kafka_headers_with_trace(ctx: otel_context.Context | None = None) -> KafkaHeaders:
    """Kafka headers carrying the W3C traceparent of `ctx` (default: the current context)."""
    headers: KafkaHeaders = []
    propagate.inject(headers, context=ctx, setter=_HeaderSetter())
    return headers


def context_from_kafka_headers(
    headers: Iterable[tuple[str, bytes]] | None,
) -> otel_context.Context:
    """The trace context a producer put in Kafka headers (empty context when none)."""
    return propagate.extract(list(headers or ()), getter=_HeaderGetter())


class _MetadataGetter(Getter[Iterable[tuple[str, str | bytes]] | None]):
    def get(self, carrier: Iterable[tuple[str, str | bytes]] | None, key: str) -> list[str] | None:
        values = [
            v.decode() if isinstance(v, bytes) else v
            for k, v in (carrier or ())
            if k.lower() == key.lower()
        ]
        return values or None

    def keys(self, carrier: Iterable[tuple[str, str | bytes]] | None) -> list[str]:
        return [k for k, _ in (carrier or ())]


def grpc_metadata_with_trace() -> list[tuple[str, str]]:
    """gRPC metadata carrying the current trace context (for clients)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return sorted(carrier.items())


def context_from_grpc_metadata(
    metadata: Iterable[tuple[str, str | bytes]] | None,
) -> otel_context.Context:
    """The trace context a gRPC client sent in metadata (for servers)."""
    return propagate.extract(list(metadata or ()), getter=_MetadataGetter())


@contextmanager
def consumer_span(tracer: trace.Tracer, name: str, record: Any) -> Iterator[trace.Span]:
    """A CONSUMER span for a Kafka record, continuing the producer's trace from its headers."""
    parent = context_from_kafka_headers(record.headers)
    with tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.CONSUMER) as span:
        span.set_attribute("messaging.system", "kafka")
        span.set_attribute("messaging.destination.name", record.topic)
        span.set_attribute("messaging.kafka.partition", record.partition)
        span.set_attribute("messaging.kafka.offset", record.offset)
        yield span
