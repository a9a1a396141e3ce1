"""Composition root of the fares service."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from pathlib import Path

import asyncpg
import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from clearway.db import create_pool, migrate
from clearway.fares.v1 import fares_pb2, fares_pb2_grpc
from clearway.kafka import ensure_topics, idempotent_producer
from clearway.settings import REPO_ROOT, ServiceSettings
from services.fares.adapters.state_store import MIGRATIONS
from services.fares.domain import load_fare_data
from services.fares.domain.model import FareCatalog
from services.fares.entrypoints.consumer import TapPricer
from services.fares.entrypoints.grpc import FaresServicer

DEFAULT_FEED = REPO_ROOT / "examples" / "feeds" / "london"


def load_catalog(feed_dirs: list[Path]) -> FareCatalog:
    """Every fare data version named (each a GTFS directory or zip)."""
    return FareCatalog.of([load_fare_data(path) for path in feed_dirs])


@dataclasses.dataclass
class FaresApp:
    """Kafka `taps` → price (PostgreSQL state + outbox) → Kafka `journeys`; QuoteFare over gRPC."""

    settings: ServiceSettings
    catalog: FareCatalog
    pool: asyncpg.Pool | None = None
    consumer: AIOKafkaConsumer | None = None
    producer: AIOKafkaProducer | None = None
    pricer: TapPricer | None = None
    task: asyncio.Task[None] | None = None
    servicer: FaresServicer = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.servicer = FaresServicer(self.catalog, None, None)

    @property
    def grpc_service_names(self) -> list[str]:
        """Served gRPC services."""
        return [fares_pb2.DESCRIPTOR.services_by_name["FaresService"].full_name]

    def register(self, server: grpc.aio.Server) -> None:
        """Add the fares servicer."""
        fares_pb2_grpc.add_FaresServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        """Connect PostgreSQL and Kafka, then start consuming taps."""
        endpoints, topics = self.settings.endpoints, self.settings.topics
        self.pool = await create_pool(endpoints.pg_dsn, self.settings.db_schema)
        await migrate(self.pool, MIGRATIONS)
        dlq = f"{topics.prefix}taps.fares.dlq"
        await ensure_topics(endpoints.kafka_bootstrap, [*topics.all(), dlq])
        self.producer = idempotent_producer(endpoints.kafka_bootstrap)
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=endpoints.kafka_bootstrap,
            group_id=self.settings.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        self.pricer = TapPricer(
            pool=self.pool,
            consumer=self.consumer,
            producer=self.producer,
            catalog=self.catalog,
            taps_topic=topics.taps,
            journeys_topic=topics.journeys,
            dlq_topic=dlq,
        )
        self.consumer.subscribe([topics.taps], listener=self.pricer.listener())
        await self.consumer.start()
        self.servicer.pricer = self.pricer
        self.servicer.consumer = self.consumer
        self.task = asyncio.create_task(self.pricer.run(), name="fares-pricer")

    def background_tasks(self) -> list[asyncio.Task[None]]:
        """The taps consumer."""
        return [self.task] if self.task is not None else []

    async def stop(self) -> None:
        """Stop consuming, flush, close."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.pool is not None:
            await self.pool.close()


def build(settings: ServiceSettings, feed_dirs: list[Path] | None = None) -> FaresApp:
    """A fares app pricing with the named fare data versions (default: the London example)."""
    return FaresApp(settings, load_catalog(feed_dirs or [DEFAULT_FEED]))


def build_from_env() -> FaresApp:
    """A fares app from the environment; CLEARWAY_FEED_DIR may list versions separated by ':'."""
    raw = os.environ.get("CLEARWAY_FEED_DIR", "")
    dirs = [Path(p) for p in raw.split(os.pathsep) if p] or None
    return build(ServiceSettings.from_env("fares"), dirs)
