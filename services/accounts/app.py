"""Composition root of accounts: PostgreSQL, Redis, Kafka, the consumer and the servicer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import asyncpg
import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from clearway.accounts.v1 import accounts_pb2_grpc
from clearway.db import create_pool, migrate
from clearway.kafka import committed_consumer, ensure_topics, idempotent_producer
from clearway.settings import ServiceSettings
from services.accounts.adapters.cache import HistoryCache
from services.accounts.adapters.journey_repository import MIGRATIONS, JourneyRepository
from services.accounts.entrypoints.consumer import JourneyConsumer
from services.accounts.entrypoints.grpc import SERVICE_NAME, AccountsServicer
from services.accounts.service_layer.journey_history import JourneyHistory

log = logging.getLogger(__name__)

SERVICE = "accounts"


def dlq_topic(settings: ServiceSettings) -> str:
    """Where journeys this service cannot store go, with their reason code."""
    return f"{settings.topics.journeys}.accounts.dlq"


def cache_namespace(settings: ServiceSettings) -> str:
    """Redis key prefix: one per schema, so the cache always matches its database."""
    return f"clearway:{settings.db_schema}:journeys"


@dataclass
class AccountsApp:
    """The accounts service: journey history stored from Kafka, served over gRPC."""

    settings: ServiceSettings
    pool: asyncpg.Pool | None = None
    cache: HistoryCache | None = None
    history: JourneyHistory | None = None
    consumer: JourneyConsumer | None = None
    _kafka_consumer: AIOKafkaConsumer | None = None
    _producer: AIOKafkaProducer | None = None
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def grpc_service_names(self) -> list[str]:
        """The gRPC services this process serves."""
        return [SERVICE_NAME]

    def register(self, server: grpc.aio.Server) -> None:
        """Add the AccountsService servicer (it answers UNAVAILABLE until started)."""
        accounts_pb2_grpc.add_AccountsServiceServicer_to_server(
            AccountsServicer(lambda: self.history), server
        )

    async def start(self) -> None:
        """Connect PostgreSQL (migrated), Redis (PING) and Kafka, then start consuming."""
        try:
            await self._start()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.stop()
            raise

    async def _start(self) -> None:
        endpoints = self.settings.endpoints
        self.pool = await create_pool(endpoints.pg_dsn, self.settings.db_schema)
        version = await migrate(self.pool, MIGRATIONS)
        self.cache = HistoryCache.from_url(endpoints.redis_url, cache_namespace(self.settings))
        await self.cache.ping()
        history = JourneyHistory(JourneyRepository(self.pool), self.cache)
        topics = self.settings.topics
        await ensure_topics(endpoints.kafka_bootstrap, [topics.journeys, dlq_topic(self.settings)])
        self._producer = idempotent_producer(endpoints.kafka_bootstrap)
        await self._producer.start()
        self._kafka_consumer = committed_consumer(
            endpoints.kafka_bootstrap, self.settings.consumer_group, topics.journeys
        )
        await self._kafka_consumer.start()
        self.consumer = JourneyConsumer(
            self._kafka_consumer, self._producer, history, dlq_topic(self.settings)
        )
        self._task = asyncio.create_task(self._consume(self.consumer), name="accounts-consumer")
        self.history = history
        log.info(
            "accounts started",
            extra={"schema": self.settings.db_schema, "schema_version": version},
        )

    async def _consume(self, consumer: JourneyConsumer) -> None:
        try:
            await consumer.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("journey consumer stopped on an error")
            raise

    def background_tasks(self) -> list[asyncio.Task[None]]:
        """The journeys consumer."""
        return [self._task] if self._task is not None else []

    async def stop(self) -> None:
        """Stop consuming (after the record in hand), then close Kafka, Redis, PostgreSQL."""
        self.history = None
        if self.consumer is not None:
            self.consumer.stop()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), 2.0)
            if not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
        if self._kafka_consumer is not None:
            await self._kafka_consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        if self.cache is not None:
            await self.cache.close()
        if self.pool is not None:
            await self.pool.close()


def build(settings: ServiceSettings) -> AccountsApp:
    """An accounts service for `settings` (nothing connects until `start()`)."""
    return AccountsApp(settings=settings)


def build_from_env() -> AccountsApp:
    """An accounts service configured from CLEARWAY_* environment variables."""
    return build(ServiceSettings.from_env(SERVICE))
