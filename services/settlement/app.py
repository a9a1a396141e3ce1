"""Composition root of settlement: wiring only (the runtime owns the lifecycle)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc

from clearway.consumer import ConsumerLoop, KafkaCommits
from clearway.rpc import Slot
from clearway.runtime import Resources
from clearway.settings import REPO_ROOT, ServiceSettings, env_float_seconds, env_str
from clearway.settlement.v1 import settlement_pb2_grpc
from services.settlement.adapters.journey_lag import GroupLag
from services.settlement.adapters.kafka_out import StatementEvents
from services.settlement.adapters.ledger_repository import MIGRATIONS, LedgerRepository
from services.settlement.adapters.statement_files import StatementFiles
from services.settlement.domain.ledger import JourneyRevision
from services.settlement.entrypoints.consumer import JourneyPoster
from services.settlement.entrypoints.grpc import SERVICE_NAME, SettlementServicer
from services.settlement.service_layer.periods import SettlementPorts

STATEMENTS_DIR_VAR = "CLEARWAY_STATEMENTS_DIR"
CLOSE_WAIT_VAR = "CLEARWAY_SETTLEMENT_CLOSE_WAIT_SECONDS"
DEFAULT_CLOSE_WAIT_S = 15.0


@dataclass
class SettlementApp:
    """The settlement service: journeys consumer + SettlementService gRPC."""

    settings: ServiceSettings
    statements_dir: Path
    close_wait_s: float = DEFAULT_CLOSE_WAIT_S
    ports: Slot[SettlementPorts] = field(default_factory=lambda: Slot("settlement"))
    ledger: LedgerRepository | None = None
    poster: JourneyPoster | None = None
    loop: ConsumerLoop[JourneyRevision] | None = None

    @property
    def grpc_service_names(self) -> list[str]:
        """The gRPC services this process serves."""
        return [SERVICE_NAME]

    def register(self, server: grpc.aio.Server) -> None:
        """Add the SettlementService servicer."""
        settlement_pb2_grpc.add_SettlementServiceServicer_to_server(
            SettlementServicer(self.ports), server
        )

    async def start(self, resources: Resources) -> None:
        """PostgreSQL (migrated), Kafka producer, group-lag probe, the journeys consumer."""
        s = self.settings
        self.ledger = LedgerRepository(await resources.postgres(MIGRATIONS))
        await resources.topics([s.topics.statements])
        producer = await resources.producer()
        lag = GroupLag(s.endpoints.kafka_bootstrap, s.consumer_group, s.topics.journeys)
        resources.on_close("group lag probe", lag.stop)
        await lag.start()
        self.poster = JourneyPoster(self.ledger)
        self.loop = await resources.consume(
            self.poster, topics=[s.topics.journeys], commits=KafkaCommits(), producer=producer
        )
        self.ports.fill(
            SettlementPorts(
                ledger=self.ledger,
                files=StatementFiles(self.statements_dir),
                events=StatementEvents(producer, s.topics.statements),
                lag=lag,
                close_wait_s=self.close_wait_s,
            )
        )


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
