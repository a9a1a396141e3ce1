"""OpenTelemetry set-up, and W3C trace context carried in Kafka headers and gRPC metadata."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

KafkaHeaders = list[tuple[str, bytes]]


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
