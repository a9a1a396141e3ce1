"""Composition root of accounts: wiring only (the runtime owns the lifecycle)."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
import grpc

from clearway.accounts.v1 import accounts_pb2_grpc
from clearway.consumer import ConsumerLoop, KafkaCommits
from clearway.rpc import Slot
from clearway.runtime import Resources
from clearway.settings import ServiceSettings
from services.accounts.adapters.cache import HistoryCache
from services.accounts.adapters.journey_repository import MIGRATIONS, JourneyRepository
from services.accounts.adapters.traveller_repository import SignInLimiter, TravellerRepository
from services.accounts.domain.history import JourneyRevision
from services.accounts.entrypoints.consumer import JourneyRecorder
from services.accounts.entrypoints.grpc import (
    SERVICE_NAME,
    TRAVELLER_SERVICE_NAME,
    AccountsPorts,
    AccountsServicer,
    TravellerServicer,
)
from services.accounts.service_layer.journey_history import JourneyHistory
from services.accounts.service_layer.travellers import Travellers

SERVICE = "accounts"


def cache_namespace(settings: ServiceSettings) -> str:
    """Redis key prefix: one per schema, so the cache always matches its database."""
    return f"clearway:{settings.db_schema}:journeys"


@dataclass
class AccountsApp:
    """The accounts service: journey history stored from Kafka, travellers' accounts and
    cards, served over gRPC to signed-in travellers."""

    settings: ServiceSettings
    ports: Slot[AccountsPorts] = field(default_factory=lambda: Slot("accounts"))
    travellers: Travellers | None = None
    recorder: JourneyRecorder | None = None
    repository: JourneyRepository | None = None
    pool: asyncpg.Pool | None = None
    loop: ConsumerLoop[JourneyRevision] | None = None

    @property
    def grpc_service_names(self) -> list[str]:
        """The gRPC services this process serves."""
        return [SERVICE_NAME, TRAVELLER_SERVICE_NAME]

    def register(self, server: grpc.aio.Server) -> None:
        """Add the AccountsService and TravellerService servicers."""
        accounts_pb2_grpc.add_AccountsServiceServicer_to_server(
            AccountsServicer(self.ports), server
        )
        accounts_pb2_grpc.add_TravellerServiceServicer_to_server(
            TravellerServicer(self.ports), server
        )

    async def start(self, resources: Resources) -> None:
        """PostgreSQL (migrated), Redis (PING), Kafka, then the journeys consumer."""
        self.pool = await resources.postgres(MIGRATIONS)
        self.repository = JourneyRepository(self.pool)
        cache = HistoryCache.from_url(
            self.settings.endpoints.redis_url, cache_namespace(self.settings)
        )
        resources.on_close("redis", cache.close)
        await cache.ping()
        history = JourneyHistory(self.repository, cache)
        producer = await resources.producer()
        self.recorder = JourneyRecorder(history)
        self.loop = await resources.consume(
            self.recorder,
            topics=[self.settings.topics.journeys],
            commits=KafkaCommits(),
            producer=producer,
        )
        self.travellers = Travellers(
            TravellerRepository(self.pool),
            SignInLimiter(cache.client, cache_namespace(self.settings)),
        )
        self.ports.fill(AccountsPorts(history, self.travellers))


def build(settings: ServiceSettings) -> AccountsApp:
    """An accounts service for `settings` (nothing connects until started)."""
    return AccountsApp(settings=settings)


def build_from_env() -> AccountsApp:
    """An accounts service configured from CLEARWAY_* environment variables."""
    return build(ServiceSettings.from_env(SERVICE))
