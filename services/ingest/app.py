"""Composition root of the ingest service."""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
from datetime import time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc

from clearway.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from clearway.rpc import Slot
from clearway.runtime import Resources
from clearway.settings import ServiceSettings, SettingsError, env_int, env_str
from services.ingest.adapters.concessions_topic import ConcessionFollower
from services.ingest.adapters.dedup import TapClaims
from services.ingest.adapters.deny_list_topic import DenyListFollower, DenyListPublisher
from services.ingest.adapters.device_registry import MIGRATIONS, DeviceRegistry
from services.ingest.adapters.metrics import (
    DENY_LIST_SIZE,
    DENY_LIST_VERSION,
    deny_list_size,
    deny_list_version,
)
from services.ingest.adapters.tap_writer import CommitLog, TapWriter
from services.ingest.domain.concessions import (
    DEFAULT_CONCESSION_RULES,
    DEFAULT_REFERENCE_CATEGORY,
    ConcessionRules,
)
from services.ingest.domain.validation import DEFAULT_POLICY, ValidationPolicy, id_problem
from services.ingest.entrypoints.deny_list import (
    DenyListAdminPorts,
    DenyListAdminServicer,
    DenyListDoor,
)
from services.ingest.entrypoints.grpc import DeviceRegistryServicer, IngestPorts, IngestServicer
from services.ingest.service_layer.accepting import AcceptPorts
from services.ingest.service_layer.registry import RegistryPorts

_SERVICES = ingest_pb2.DESCRIPTOR.services_by_name
INGEST = _SERVICES["IngestService"].full_name
REGISTRY = _SERVICES["DeviceRegistryService"].full_name
DENY_ADMIN = _SERVICES["DenyListAdminService"].full_name
DAY_S = 24 * 3600


@dataclasses.dataclass
class IngestApp:
    """Signed batches from validators -> claims in Redis -> one Kafka transaction per group
    of batches (`taps`, `taps.ingest.dlq`, `ingest.txns`); the device registry
    (PostgreSQL, read through Redis); the deny list (`denylist` topic) and the cards'
    concessions (`concessions` topic), each followed in memory."""

    settings: ServiceSettings
    policy: ValidationPolicy = DEFAULT_POLICY
    concession_rules: ConcessionRules = DEFAULT_CONCESSION_RULES
    dedup_ttl_s: int = 15 * DAY_S
    writer_id: str = ""
    ports: Slot[IngestPorts] = dataclasses.field(default_factory=lambda: Slot("ingest"))
    admin: Slot[DenyListAdminPorts] = dataclasses.field(
        default_factory=lambda: Slot("ingest deny-list admin")
    )
    # The registry and deny-list administration: operations role, on the mutual-TLS admin port.
    authenticated_services: frozenset[str] = frozenset({REGISTRY, DENY_ADMIN})

    def __post_init__(self) -> None:
        # A resend must be recognised for as long as the tap could still be accepted.
        if timedelta(seconds=self.dedup_ttl_s) < self.policy.max_tap_age + timedelta(days=1):
            raise SettingsError(
                "CLEARWAY_DEDUP_TTL_S must exceed the oldest tap accepted by a day at least"
            )

    @property
    def grpc_service_names(self) -> list[str]:
        """Served gRPC services."""
        return [INGEST, REGISTRY, DENY_ADMIN]

    def register(self, server: grpc.aio.Server) -> None:
        """Add the servicers; they are wired to Kafka, Redis and PostgreSQL in `start`."""
        ingest_pb2_grpc.add_IngestServiceServicer_to_server(IngestServicer(self.ports), server)
        ingest_pb2_grpc.add_DeviceRegistryServiceServicer_to_server(
            DeviceRegistryServicer(self.ports), server
        )
        ingest_pb2_grpc.add_DenyListAdminServiceServicer_to_server(
            DenyListAdminServicer(self.admin), server
        )

    async def start(self, resources: Resources) -> None:
        """Connect Redis, PostgreSQL and Kafka, catch up with the deny list and the
        concessions, start the writer; only then does health report SERVING."""
        s = self.settings
        topics = s.topics
        bootstrap = s.endpoints.kafka_bootstrap
        redis = await resources.redis()
        pool = await resources.postgres(MIGRATIONS)
        # Only the topics ingest writes or follows: each other topic is created by the
        # service that uses it, and ingest's Kafka user may not even see those.
        await resources.topics(
            [topics.taps, topics.taps_dlq, topics.ingest_txns, topics.denylist, topics.concessions]
        )
        producer = await resources.producer()
        registry = DeviceRegistry(pool, redis, prefix=f"ingest:{topics.prefix}device:")
        claims = TapClaims(redis, prefix=f"ingest:{topics.prefix}claims:", ttl_s=self.dedup_ttl_s)
        writer = TapWriter(
            bootstrap=bootstrap,
            transactional_id=self.writer_id or default_writer_id(topics.prefix),
            taps_topic=topics.taps,
            dead_letter_topic=topics.taps_dlq,
            claims=claims,
            commit_log=CommitLog(bootstrap, topics.ingest_txns),
        )
        await writer.start()
        resources.on_close("tap writer", writer.stop)
        assert writer.task is not None
        resources.tasks.append(writer.task)
        follower = DenyListFollower(bootstrap, topics.denylist)
        await follower.start()
        resources.on_close("deny list follower", follower.stop)
        resources.background("deny list follower", follower.run())
        resources.observe(DENY_LIST_SIZE, lambda: deny_list_size(follower.deny_list))
        resources.observe(DENY_LIST_VERSION, lambda: deny_list_version(follower.deny_list))
        # Created at start with the topics above, so an empty topic loads at once.
        concessions = ConcessionFollower(bootstrap, topics.concessions)
        await concessions.start()
        resources.on_close("concessions follower", concessions.stop)
        resources.background("concessions follower", concessions.run())
        self.ports.fill(
            IngestPorts(
                accept=AcceptPorts(
                    registry,
                    writer,
                    follower,
                    topics.taps,
                    self.policy,
                    concessions=concessions,
                    concession_rules=self.concession_rules,
                ),
                registry=RegistryPorts(registry),
                deny_list=DenyListDoor(follower, registry),
            )
        )
        self.admin.fill(DenyListAdminPorts(DenyListPublisher(producer, topics.denylist)))


def default_writer_id(prefix: str) -> str:
    """The Kafka transactional id of this process's tap writer: unique among live
    processes. `CLEARWAY_INGEST_WRITER_ID` makes it stable across restarts (a restart then
    fences its predecessor's open transaction at once instead of after Kafka's timeout)."""
    worker = os.environ.get("CLEARWAY_WORKER_INDEX", "0")
    return f"{prefix}ingest-{socket.gethostname()}-{worker}-{os.getpid()}-{secrets.token_hex(3)}"


def concession_rules_from_env() -> ConcessionRules:
    """CLEARWAY_SCHEME_TIMEZONE and CLEARWAY_SERVICE_DAY_START (the scheme's service day, as
    accounts reads them; keep them equal to the fare data's) and
    CLEARWAY_REFERENCE_RIDER_CATEGORY (the category a concession replaces, besides empty)."""
    zone = env_str("CLEARWAY_SCHEME_TIMEZONE", "Europe/London")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"CLEARWAY_SCHEME_TIMEZONE is not a timezone: {zone!r}") from None
    raw_start = env_str("CLEARWAY_SERVICE_DAY_START", "04:30")
    try:
        day_start = time.fromisoformat(raw_start)
    except ValueError:
        raise SettingsError(f"CLEARWAY_SERVICE_DAY_START is not HH:MM: {raw_start!r}") from None
    reference = env_str("CLEARWAY_REFERENCE_RIDER_CATEGORY", DEFAULT_REFERENCE_CATEGORY)
    if id_problem(reference) is not None:
        raise SettingsError(
            f"CLEARWAY_REFERENCE_RIDER_CATEGORY is not a rider category id: {reference!r}"
        )
    return ConcessionRules(zone, day_start, reference)


def build(settings: ServiceSettings) -> IngestApp:
    """An ingest app for `settings`."""
    policy = ValidationPolicy(
        max_tap_age=timedelta(seconds=env_int("CLEARWAY_MAX_TAP_AGE_S", 14 * DAY_S, minimum=60)),
        late_after=timedelta(seconds=env_int("CLEARWAY_LATE_AFTER_S", 15 * 60, minimum=0)),
    )
    writer_id = env_str("CLEARWAY_INGEST_WRITER_ID", "")
    worker = os.environ.get("CLEARWAY_WORKER_INDEX")
    if writer_id and worker is not None:  # workers of one `serve`: one writer id each
        writer_id = f"{writer_id}-{worker}"
    return IngestApp(
        settings,
        policy=policy,
        concession_rules=concession_rules_from_env(),
        dedup_ttl_s=env_int("CLEARWAY_DEDUP_TTL_S", 15 * DAY_S, minimum=60),
        writer_id=writer_id,
    )


def build_from_env() -> IngestApp:
    """An ingest app configured from the environment."""
    return build(ServiceSettings.from_env("ingest"))
