"""Composition root of the ingest service."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from clearway.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from clearway.kafka import ensure_topics, idempotent_producer
from clearway.settings import ServiceSettings, env_int
from services.ingest.adapters.dedup import TapDeduplicator
from services.ingest.adapters.tap_log import TapLog
from services.ingest.entrypoints.grpc import IngestServicer


@dataclasses.dataclass
class IngestApp:
    """Validators' gRPC stream → dedup in Redis → Kafka `taps` / `taps.dlq`."""

    settings: ServiceSettings
    dedup_ttl_s: int = 14 * 24 * 3600
    producer: AIOKafkaProducer | None = None
    redis: aioredis.Redis | None = None
    servicer: IngestServicer | None = None

    @property
    def grpc_service_names(self) -> list[str]:
        """Served gRPC services."""
        return [ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name]

    def register(self, server: grpc.aio.Server) -> None:
        """Add the ingest servicer; it is wired to Kafka/Redis in `start`."""
        ingest_pb2_grpc.add_IngestServiceServicer_to_server(_Deferred(self), server)

    async def start(self) -> None:
        """Connect Redis and Kafka; only then does health report SERVING."""
        endpoints = self.settings.endpoints
        self.redis = aioredis.from_url(endpoints.redis_url)
        await self.redis.ping()
        await ensure_topics(endpoints.kafka_bootstrap, self.settings.topics.all())
        self.producer = idempotent_producer(endpoints.kafka_bootstrap)
        await self.producer.start()
        prefix = f"ingest:{self.settings.topics.prefix}seen:"
        dedup = TapDeduplicator(self.redis, prefix=prefix, accepted_ttl_s=self.dedup_ttl_s)
        self.servicer = IngestServicer(dedup, TapLog(self.producer, self.settings.topics))

    def background_tasks(self) -> list[asyncio.Task[None]]:
        """Ingest works inside its RPCs; no background loop."""
        return []

    async def stop(self) -> None:
        """Flush and close Kafka, close Redis."""
        if self.producer is not None:
            await self.producer.stop()
        if self.redis is not None:
            await self.redis.aclose()


class _Deferred(ingest_pb2_grpc.IngestServiceServicer):
    """Routes calls to the servicer built in `start` (the server is registered before)."""

    def __init__(self, app: IngestApp) -> None:
        self.app = app

    async def StreamTaps(self, request_iterator, context):  # type: ignore[no-untyped-def]  # noqa: N802
        """Delegate to the live servicer; UNAVAILABLE before start completes."""
        if self.app.servicer is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "ingest is starting")
        assert self.app.servicer is not None
        async for response in self.app.servicer.StreamTaps(request_iterator, context):
            yield response


def build(settings: ServiceSettings) -> IngestApp:
    """An ingest app for `settings`."""
    return IngestApp(settings, dedup_ttl_s=env_int("CLEARWAY_DEDUP_TTL_S", 14 * 24 * 3600))


def build_from_env() -> IngestApp:
    """An ingest app configured from the environment."""
    return build(ServiceSettings.from_env("ingest"))
