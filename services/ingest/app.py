"""Composition root of the ingest service."""

from __future__ import annotations

import dataclasses

import grpc

from clearway.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from clearway.rpc import Slot
from clearway.runtime import Resources
from clearway.settings import ServiceSettings, env_int
from services.ingest.adapters.dedup import TapDeduplicator
from services.ingest.adapters.tap_log import TapLog
from services.ingest.entrypoints.grpc import IngestPorts, IngestServicer


@dataclasses.dataclass
class IngestApp:
    """Validators' gRPC stream -> dedup in Redis -> Kafka `taps` / `taps.ingest.dlq`."""

    settings: ServiceSettings
    dedup_ttl_s: int = 14 * 24 * 3600
    ports: Slot[IngestPorts] = dataclasses.field(default_factory=lambda: Slot("ingest"))

    @property
    def grpc_service_names(self) -> list[str]:
        """Served gRPC services."""
        return [ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name]

    def register(self, server: grpc.aio.Server) -> None:
        """Add the ingest servicer; it is wired to Kafka/Redis in `start`."""
        ingest_pb2_grpc.add_IngestServiceServicer_to_server(IngestServicer(self.ports), server)

    async def start(self, resources: Resources) -> None:
        """Connect Redis and Kafka; only then does health report SERVING."""
        redis = await resources.redis()
        await resources.topics(self.settings.topics.all())
        producer = await resources.producer()
        prefix = f"ingest:{self.settings.topics.prefix}seen:"
        dedup = TapDeduplicator(redis, prefix=prefix, accepted_ttl_s=self.dedup_ttl_s)
        self.ports.fill(IngestPorts(dedup, TapLog(producer, self.settings.topics)))


def build(settings: ServiceSettings) -> IngestApp:
    """An ingest app for `settings`."""
    return IngestApp(settings, dedup_ttl_s=env_int("CLEARWAY_DEDUP_TTL_S", 14 * 24 * 3600))


def build_from_env() -> IngestApp:
    """An ingest app configured from the environment."""
    return build(ServiceSettings.from_env("ingest"))
