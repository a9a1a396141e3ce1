"""Composition root of settlement: settings, pool, Kafka clients, consumer task, servicer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import asyncpg
import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from clearway.db import create_pool
from clearway.kafka import committed_consumer, ensure_topics, idempotent_producer
from clearway.settings import REPO_ROOT, ServiceSettings, env_float_seconds, env_str
from clearway.settlement.v1 import settlement_pb2_grpc
from services.settlement.adapters.journey_lag import GroupLag
from services.settlement.adapters.kafka_out import DeadLetters, StatementEvents
from services.settlement.adapters.ledger_repository import LedgerRepository
from services.settlement.adapters.statement_files import StatementFiles
from services.settlement.entrypoints.consumer import JourneyConsumer
from services.settlement.entrypoints.grpc import (
    SERVICE_NAME,
    SettlementPorts,
    SettlementServicer,
)

log = logging.getLogger(__name__)

STATEMENTS_DIR_VAR = "CLEARWAY_STATEMENTS_DIR"
CLOSE_WAIT_VAR = "CLEARWAY_SETTLEMENT_CLOSE_WAIT_SECONDS"
DEFAULT_CLOSE_WAIT_S = 15.0


def journeys_dlq_topic(settings: ServiceSettings) -> str:
    """Dead letters of the journeys topic: `<prefix>journeys.dlq`."""
    return f"{settings.topics.prefix}journeys.dlq"


class SettlementApp:
    """The settlement service: journeys consumer + SettlementService gRPC."""

    def __init__(
        self,
        settings: ServiceSettings,
        statements_dir: Path,
        close_wait_s: float = DEFAULT_CLOSE_WAIT_S,
    ) -> None:
        self.settings = settings
        self.statements_dir = statements_dir
        self.close_wait_s = close_wait_s
        self.journeys_dlq = journeys_dlq_topic(settings)
        self.ledger: LedgerRepository | None = None
        self.consumer: JourneyConsumer | None = None
        self._ports: SettlementPorts | None = None
        self._pool: asyncpg.Pool | None = None
        self._producer: AIOKafkaProducer | None = None
        self._kafka_consumer: AIOKafkaConsumer | None = None
        self._lag: GroupLag | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def grpc_service_names(self) -> list[str]:
        """The gRPC services this process serves."""
        return [SERVICE_NAME]

    def register(self, server: grpc.aio.Server) -> None:
        """Add the SettlementService servicer."""
        settlement_pb2_grpc.add_SettlementServiceServicer_to_server(
            SettlementServicer(lambda: self._ports), server
        )

    async def start(self) -> None:
        """Connect to PostgreSQL and Kafka, migrate, create topics, start consuming."""
        s = self.settings
        bootstrap = s.endpoints.kafka_bootstrap
        self._pool = await create_pool(s.endpoints.pg_dsn, s.db_schema)
        self.ledger = LedgerRepository(self._pool)
        await self.ledger.migrate()
        await ensure_topics(bootstrap, [s.topics.journeys, self.journeys_dlq, s.topics.statements])
        self._producer = idempotent_producer(bootstrap)
        await self._producer.start()
        self._lag = GroupLag(bootstrap, s.consumer_group, s.topics.journeys)
        await self._lag.start()
        self._kafka_consumer = committed_consumer(bootstrap, s.consumer_group, s.topics.journeys)
        await self._kafka_consumer.start()
        self.consumer = JourneyConsumer(
            self._kafka_consumer, self.ledger, DeadLetters(self._producer, self.journeys_dlq)
        )
        self._task = asyncio.create_task(self.consumer.run(), name="settlement-journeys")
        self._task.add_done_callback(_log_if_failed)
        self._ports = SettlementPorts(
            ledger=self.ledger,
            files=StatementFiles(self.statements_dir),
            events=StatementEvents(self._producer, s.topics.statements),
            lag=self._lag,
            close_wait_s=self.close_wait_s,
        )
        log.info(
            "settlement started",
            extra={"schema": s.db_schema, "group": s.consumer_group, "topic": s.topics.journeys},
        )

    def background_tasks(self) -> list[asyncio.Task[None]]:
        """The journeys consumer."""
        return [self._task] if self._task is not None else []

    async def stop(self) -> None:
        """Stop consuming (uncommitted records are re-read next time), then disconnect."""
        self._ports = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._kafka_consumer is not None:
            await self._kafka_consumer.stop()
        if self._lag is not None:
            await self._lag.stop()
        if self._producer is not None:
            await self._producer.stop()
        if self._pool is not None:
            await self._pool.close()


def _log_if_failed(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("journeys consumer stopped", exc_info=task.exception())


def build(settings: ServiceSettings, statements_dir: Path | None = None) -> SettlementApp:
    """A settlement app for `settings`; statements under `statements_dir` (default from env)."""
    directory = statements_dir or Path(
        env_str(STATEMENTS_DIR_VAR, str(REPO_ROOT / "var" / "statements"))
    )
    return SettlementApp(
        settings, directory, env_float_seconds(CLOSE_WAIT_VAR, DEFAULT_CLOSE_WAIT_S)
    )


def build_from_env() -> SettlementApp:
    """The settlement app configured from CLEARWAY_* environment variables."""
    return build(ServiceSettings.from_env("settlement"))
