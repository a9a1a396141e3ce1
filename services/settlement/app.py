"""Composition root of settlement: wiring only (the runtime owns the lifecycle)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clearway.auth import Authentication
from clearway.consumer import ConsumerLoop, KafkaCommits
from clearway.pki import default_pki_dir
from clearway.rpc import Slot
from clearway.runtime import Resources
from clearway.scheme.file import load_scheme
from clearway.scheme.model import Scheme
from clearway.settings import (
    REPO_ROOT,
    ServiceSettings,
    SettingsError,
    env_float_seconds,
    env_path,
    env_str,
)
from clearway.settlement.v1 import settlement_pb2_grpc
from services.settlement.adapters.file_sets import load_signing_key
from services.settlement.adapters.journey_lag import GroupLag
from services.settlement.adapters.kafka_out import StatementEvents
from services.settlement.adapters.ledger_repository import MIGRATIONS, Item, LedgerRepository
from services.settlement.adapters.metrics import LEDGER_POSTED, LedgerTotals
from services.settlement.entrypoints.consumer import JourneyPoster
from services.settlement.entrypoints.grpc import SERVICE_NAME, SettlementServicer
from services.settlement.service_layer.periods import SettlementPorts

STATEMENTS_DIR_VAR = "CLEARWAY_STATEMENTS_DIR"
CLOSE_WAIT_VAR = "CLEARWAY_SETTLEMENT_CLOSE_WAIT_SECONDS"
SCHEME_FILE_VAR = "CLEARWAY_SCHEME_FILE"
SIGNING_KEY_VAR = "CLEARWAY_SIGNING_KEY"
LEDGER_POSTEDS_INTERVAL_VAR = "CLEARWAY_LEDGER_POSTEDS_INTERVAL_S"
DEFAULT_CLOSE_WAIT_S = 15.0
# One aggregate query over the open periods' entries per interval (a day of a million
# journeys holds about 5 million): once a minute is plenty for a finance graph.
DEFAULT_LEDGER_POSTEDS_INTERVAL_S = 60.0
DEFAULT_SCHEME = REPO_ROOT / "examples" / "schemes" / "london.toml"
DEFAULT_FEED = REPO_ROOT / "examples" / "feeds" / "london"


@dataclass
class SettlementApp:
    """The settlement service: journeys, top-ups and benefits consumer + SettlementService gRPC
    (mutual TLS: every caller is a party or the operations role)."""

    settings: ServiceSettings
    statements_dir: Path
    scheme: Scheme
    signing_key: Path
    close_wait_s: float = DEFAULT_CLOSE_WAIT_S
    # How often the ledger totals metric is read from PostgreSQL; 0 turns it off.
    ledger_totals_interval_s: float = DEFAULT_LEDGER_POSTEDS_INTERVAL_S
    authentication: Authentication = Authentication.REQUIRED
    ports: Slot[SettlementPorts] = field(default_factory=lambda: Slot("settlement"))
    ledger: LedgerRepository | None = None
    poster: JourneyPoster | None = None
    loop: ConsumerLoop[Item] | None = None

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
        """Signing key, PostgreSQL (migrated), Kafka producer, group-lag probe, consumer."""
        s = self.settings
        signer = await asyncio.to_thread(self._load_signer)
        self.ledger = LedgerRepository(await resources.postgres(MIGRATIONS), self.scheme)
        if self.ledger_totals_interval_s > 0:
            totals = LedgerTotals(self.ledger)
            resources.observe(LEDGER_POSTED, totals.points)
            resources.background("ledger totals", totals.run(self.ledger_totals_interval_s))
        await resources.topics([s.topics.statements])
        producer = await resources.producer()
        consumed = [s.topics.journeys, s.topics.topups, s.topics.benefits]
        await resources.topics(consumed)
        lag = GroupLag(s.endpoints.kafka_bootstrap, s.consumer_group, *consumed)
        resources.on_close("group lag probe", lag.stop)
        await lag.start()
        self.poster = JourneyPoster(self.ledger, s.topics.topups, s.topics.benefits)
        self.loop = await resources.consume(
            self.poster, topics=consumed, commits=KafkaCommits(), producer=producer
        )
        self.ports.fill(
            SettlementPorts(
                ledger=self.ledger,
                scheme=self.scheme,
                files_root=self.statements_dir,
                signer=signer,
                events=StatementEvents(producer, s.topics.statements),
                lag=lag,
                close_wait_s=self.close_wait_s,
            )
        )

    def _load_signer(self) -> Ed25519PrivateKey:
        if not self.signing_key.exists():
            raise SettingsError(
                f"no signing key at {self.signing_key}: run `clearway pki init` or set"
                f" {SIGNING_KEY_VAR}"
            )
        return load_signing_key(self.signing_key)


def build(
    settings: ServiceSettings,
    statements_dir: Path | None = None,
    *,
    scheme_file: Path | None = None,
    signing_key: Path | None = None,
    check_agencies: bool = True,
) -> SettlementApp:
    """A settlement app for `settings`; the rest from the environment unless given. The
    scheme's agencies are checked against the fare data (`CLEARWAY_FEED_DIR`) unless
    `check_agencies` is False (tests with agencies of their own)."""
    directory = statements_dir or Path(
        env_str(STATEMENTS_DIR_VAR, str(REPO_ROOT / "var" / "statements"))
    )
    scheme_path = scheme_file or Path(env_str(SCHEME_FILE_VAR, str(DEFAULT_SCHEME)))
    feeds = [Path(p) for p in os.environ.get("CLEARWAY_FEED_DIR", "").split(os.pathsep) if p]
    feed = (feeds[0] if feeds else DEFAULT_FEED) if check_agencies else None
    scheme = load_scheme(scheme_path, agencies_from=feed)
    key = signing_key or env_path(SIGNING_KEY_VAR) or default_pki_dir() / "signing.key.pem"
    return SettlementApp(
        settings,
        directory,
        scheme,
        key,
        env_float_seconds(CLOSE_WAIT_VAR, DEFAULT_CLOSE_WAIT_S),
        env_float_seconds(LEDGER_POSTEDS_INTERVAL_VAR, DEFAULT_LEDGER_POSTEDS_INTERVAL_S),
    )


def build_from_env() -> SettlementApp:
    """The settlement app configured from CLEARWAY_* environment variables."""
    return build(ServiceSettings.from_env("settlement"))
