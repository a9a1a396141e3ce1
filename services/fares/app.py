"""Composition root of the fares service: wiring only (the runtime owns the lifecycle)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import grpc
from aiokafka import TopicPartition

from clearway.consumer import ConsumerLoop, StoredPositions
from clearway.fares.v1 import fares_pb2, fares_pb2_grpc
from clearway.rpc import Slot
from clearway.runtime import Resources
from clearway.settings import REPO_ROOT, ServiceSettings
from services.fares.adapters.gtfs_reader import load_fare_data
from services.fares.adapters.state_store import MIGRATIONS
from services.fares.domain.model import FareCatalog
from services.fares.entrypoints.consumer import OutboxRelay, TapPricer
from services.fares.entrypoints.grpc import FaresServicer
from services.fares.service_layer.batches import TapRecord
from services.fares.service_layer.closing import FaresPorts

DEFAULT_FEED = REPO_ROOT / "examples" / "feeds" / "london"


def load_catalog(feed_dirs: list[Path]) -> FareCatalog:
    """Every fare data version named (each a GTFS directory or zip)."""
    return FareCatalog.of([load_fare_data(path) for path in feed_dirs])


@dataclasses.dataclass
class FaresApp:
    """Kafka `taps` -> price (PostgreSQL state + outbox) -> Kafka `journeys`; QuoteFare and
    CloseServiceDay over gRPC."""

    settings: ServiceSettings
    catalog: FareCatalog
    ports: Slot[FaresPorts] = dataclasses.field(default_factory=lambda: Slot("fares"))
    pricer: TapPricer | None = None
    loop: ConsumerLoop[TapRecord] | None = None

    @property
    def grpc_service_names(self) -> list[str]:
        """Served gRPC services."""
        return [fares_pb2.DESCRIPTOR.services_by_name["FaresService"].full_name]

    def register(self, server: grpc.aio.Server) -> None:
        """Add the fares servicer."""
        fares_pb2_grpc.add_FaresServiceServicer_to_server(
            FaresServicer(self.catalog, self.ports), server
        )

    async def start(self, resources: Resources) -> None:
        """PostgreSQL (migrated), Kafka, then the taps consumer with stored positions."""
        topics = self.settings.topics
        pool = await resources.postgres(MIGRATIONS)
        await resources.topics([topics.journeys])
        producer = await resources.producer()
        relay = OutboxRelay(pool, producer, topics.journeys)
        resources.on_close("outbox relay", relay.close)
        self.pricer = TapPricer(
            pool=pool, catalog=self.catalog, relay=relay, taps_topic=topics.taps
        )
        self.loop = await resources.consume(
            self.pricer,
            topics=[topics.taps],
            commits=StoredPositions(self.pricer),
            producer=producer,
        )
        self.ports.fill(FaresPorts(self.catalog, pool, relay, self._end_offsets, topics.taps))

    async def _end_offsets(self, topic: str) -> dict[int, int]:
        """The current end of every partition of `topic`."""
        assert self.loop is not None
        consumer = self.loop.consumer
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = await consumer.end_offsets(tps) if tps else {}
        return {tp.partition: offset for tp, offset in ends.items()}


def build(settings: ServiceSettings, feed_dirs: list[Path] | None = None) -> FaresApp:
    """A fares app pricing with the named fare data versions (default: the London example)."""
    return FaresApp(settings, load_catalog(feed_dirs or [DEFAULT_FEED]))


def build_from_env() -> FaresApp:
    """A fares app from the environment; CLEARWAY_FEED_DIR may list versions separated by ':'."""
    raw = os.environ.get("CLEARWAY_FEED_DIR", "")
    dirs = [Path(p) for p in raw.split(os.pathsep) if p] or None
    return build(ServiceSettings.from_env("fares"), dirs)
