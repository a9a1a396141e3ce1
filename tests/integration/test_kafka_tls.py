"""Kafka over mutual TLS, against a real broker: one extra single-node KRaft broker started
for this module (`clearway.infra.kafka.LocalKafka` with `BrokerTls`, from the jars
`clearway infra up` already fetched) whose only client listener is TLS with client
certificates required, certificates from `clearway.pki`.

The kit's clients take CLEARWAY_KAFKA_CA/CERT/KEY (`clearway.kafka.client_options`); a
plaintext client, a client without a certificate and one with a certificate of another CA
are refused; and ingest, fares and settlement run over it end to end. The shared plaintext
broker is not touched: nothing here talks to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from uuid import uuid4
from zoneinfo import ZoneInfo

import grpc
import pytest
from aiokafka.errors import KafkaConnectionError

from clearway.auth import OPERATIONS, Principal
from clearway.events.v1 import events_pb2
from clearway.fares.v1 import fares_pb2, fares_pb2_grpc
from clearway.infra.endpoints import KAFKA_CA_VAR, KAFKA_CERT_VAR, KAFKA_KEY_VAR, Endpoints
from clearway.infra.kafka import BrokerTls, LocalKafka, check_kafka
from clearway.infra.manager import default_base_dir, repo_root
from clearway.kafka import (
    KafkaTls,
    Topics,
    client_options,
    committed_consumer,
    ensure_topics,
    idempotent_producer,
    publish_many,
)
from clearway.pki import PkiLayout, init_pki, issue_identity, secure_channel
from clearway.runtime import RunningService
from clearway.settings import ServiceSettings, SettingsError
from clearway.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from conftest import free_port
from services.fares.app import build as build_fares
from services.ingest.app import build as build_ingest
from services.ingest.simulator.day import SimulatedDay
from services.ingest.simulator.stream import register_devices, send_day
from services.settlement.app import build as build_settlement

pytestmark = pytest.mark.integration

LONDON = ZoneInfo("Europe/London")
KAFKA_CLIENT = Principal("role", "kafka-client")  # the services' Kafka identity here
CARD = "tok_tlscard00001"
# A Kafka request: ApiVersions v0, correlation id 1, client id "t".
API_VERSIONS = b"\x00\x12\x00\x00\x00\x00\x00\x01\x00\x01t"


@dataclass(frozen=True)
class TlsBroker:
    bootstrap: str
    pki: Path  # CA, server certificate, the operations role and the Kafka client
    client: KafkaTls  # CA + client certificate: what the services are given
    started_in_s: float

    def env(self) -> dict[str, str]:
        assert self.client.ca and self.client.cert and self.client.key
        return {
            KAFKA_CA_VAR: str(self.client.ca),
            KAFKA_CERT_VAR: str(self.client.cert),
            KAFKA_KEY_VAR: str(self.client.key),
        }


def mutual_tls_broker(
    directory: Path,
    pki: PkiLayout,
    probe: KafkaTls,
    properties: dict[str, str] | None = None,
) -> LocalKafka:
    """A single-node broker (not started) under `directory` on free ports whose client
    listener is TLS with client certificates of `pki`'s CA required; `probe` is the client
    its health probe connects as; `properties` are broker settings on top (an authorizer).
    It uses the shared broker's jars when `clearway infra up` fetched them, else its own."""
    jars = default_base_dir() / "kafka" / "libs"
    return LocalKafka(
        directory / "infra",
        repo_root(),
        free_port(),
        free_port(),
        tls=BrokerTls(
            cert=pki.server_cert,
            key=pki.server_key,
            client_ca=pki.ca_cert,
            replication_port=free_port(),
            probe=probe,
        ),
        jars=jars if (jars / ".stamp").exists() else None,
        properties=properties,
    )


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """One broker for the module: SSL listener, client certificates required."""
    directory = tmp_path_factory.mktemp("kafka-tls")
    pki = PkiLayout(directory / "pki")
    init_pki(pki.root)  # the server certificate names 127.0.0.1
    issue_identity(Principal("role", OPERATIONS), pki.root)
    issue_identity(KAFKA_CLIENT, pki.root)
    stem = KAFKA_CLIENT.file_stem
    client = KafkaTls(ca=pki.ca_cert, cert=pki.client_cert(stem), key=pki.client_key(stem))
    broker = mutual_tls_broker(directory, pki, client)
    started = time.monotonic()
    broker.start()
    try:
        yield TlsBroker(broker.bootstrap, pki.root, client, time.monotonic() - started)
    finally:
        broker.stop()


@pytest.fixture
def kafka_tls_env(tls_broker: TlsBroker, monkeypatch: pytest.MonkeyPatch) -> TlsBroker:
    """The process's Kafka clients configured for the TLS broker, as a pod's env does."""
    for name, value in tls_broker.env().items():
        monkeypatch.setenv(name, value)
    return tls_broker


# -- clients -------------------------------------------------------------------------------


async def test_a_client_with_the_ca_and_a_client_certificate_produces_and_consumes(
    kafka_tls_env: TlsBroker,
) -> None:
    bootstrap = kafka_tls_env.bootstrap
    options = client_options(bootstrap)
    assert options["security_protocol"] == "SSL"
    assert options["ssl_context"] is client_options(bootstrap)["ssl_context"], "cached"
    topic = f"tls{uuid4().hex[:8]}.taps"
    await ensure_topics(bootstrap, [topic], partitions=2)
    producer = idempotent_producer(bootstrap)
    await producer.start()
    try:
        await publish_many(producer, topic, [(f"k{i}".encode(), b"v%d" % i, []) for i in range(20)])
    finally:
        await producer.stop()
    consumer = committed_consumer(bootstrap, f"{topic}-group", topic)
    await consumer.start()
    try:
        seen: list[bytes] = []
        deadline = asyncio.get_running_loop().time() + 20
        while len(seen) < 20 and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                seen += [r.value for r in records if r.value is not None]
    finally:
        await consumer.stop()
    assert sorted(seen) == sorted(b"v%d" % i for i in range(20))
    # The broker's startup, for the record (`pytest -rP` shows it).
    print(f"TLS broker started in {kafka_tls_env.started_in_s:.1f} s")


async def test_a_plaintext_client_is_refused(tls_broker: TlsBroker) -> None:
    with pytest.raises(KafkaConnectionError):
        await check_kafka(tls_broker.bootstrap, wait_s=3, tls=None)
    # Why: a Kafka request in the clear is answered with a fatal TLS alert record (content
    # type 21, level 2), and the connection closed: no Kafka response.
    host, port = tls_broker.bootstrap.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(len(API_VERSIONS).to_bytes(4, "big") + API_VERSIONS)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        assert (answer[0], answer[5], len(answer)) == (21, 2, 7), answer
    finally:
        writer.close()


async def test_a_client_without_a_certificate_is_refused_at_the_handshake(
    tls_broker: TlsBroker,
) -> None:
    without = KafkaTls(ca=tls_broker.client.ca)
    with pytest.raises(KafkaConnectionError):
        await check_kafka(tls_broker.bootstrap, wait_s=3, tls=without)
    # Why: the broker's TLS alert, seen on a bare TLS connection (in TLS 1.3 it comes after
    # the client's half of the handshake, so at the first read). Java sends bad_certificate.
    assert await tls_alert(tls_broker.bootstrap, without) == "SSLV3_ALERT_BAD_CERTIFICATE"
    assert await tls_alert(tls_broker.bootstrap, tls_broker.client) is None


async def test_a_certificate_of_another_ca_is_refused(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    other = PkiLayout(tmp_path / "other")
    init_pki(other.root)
    issue_identity(KAFKA_CLIENT, other.root)
    stem = KAFKA_CLIENT.file_stem
    # It trusts the right CA for the broker, but presents a certificate of its own CA.
    stranger = KafkaTls(
        ca=tls_broker.client.ca, cert=other.client_cert(stem), key=other.client_key(stem)
    )
    with pytest.raises(KafkaConnectionError):
        await check_kafka(tls_broker.bootstrap, wait_s=3, tls=stranger)
    assert await tls_alert(tls_broker.bootstrap, stranger) == "SSLV3_ALERT_CERTIFICATE_UNKNOWN"


async def tls_alert(bootstrap: str, tls: KafkaTls) -> str | None:
    """The TLS alert the broker answers a connection with `tls`'s certificate with (None:
    it took the connection and answered a request)."""
    host, port = bootstrap.rsplit(":", 1)
    context = client_options(bootstrap, tls)["ssl_context"]
    reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
    try:
        writer.write(len(API_VERSIONS).to_bytes(4, "big") + API_VERSIONS)
        await writer.drain()
        size = await asyncio.wait_for(reader.readexactly(4), 10)
    except ssl.SSLError as exc:
        return str(exc.reason)
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()
    assert int.from_bytes(size, "big") > 0
    return None


# -- settings ------------------------------------------------------------------------------


async def test_a_client_certificate_without_its_key_stops_a_service_at_start(
    kafka_tls_env: TlsBroker, endpoints: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KAFKA_KEY_VAR)
    settings = service_settings("fares", endpoints, kafka_tls_env, f"tls{uuid4().hex[:8]}")
    service = RunningService(build_fares(settings))
    with pytest.raises(SettingsError, match=KAFKA_KEY_VAR):
        await service.start()


# -- services end to end ---------------------------------------------------------------------


def service_settings(
    service: str, endpoints: Endpoints, broker: TlsBroker, prefix: str
) -> ServiceSettings:
    """As tests' `settings_for`, Kafka being the TLS broker (PostgreSQL and Redis the
    session's); ingest and settlement serve mutual TLS with the broker's PKI."""
    tls: dict[str, object] = {}
    if service in ("settlement", "ingest"):
        tls = {
            "tls_cert": broker.pki / "server.pem",
            "tls_key": broker.pki / "server.key.pem",
            "tls_client_ca": broker.pki / "ca.pem",
        }
    return dataclasses.replace(
        ServiceSettings.from_env(service),
        grpc_host="127.0.0.1",
        grpc_port=0,
        endpoints=dataclasses.replace(endpoints, kafka_bootstrap=broker.bootstrap),
        grace_seconds=3.0,
        topics=Topics(prefix=f"{prefix}."),
        db_schema=f"{prefix}_{service}",
        consumer_group=f"{prefix}-{service}",
        **tls,  # type: ignore[arg-type]
    )


@dataclass
class Fleet:
    ingest: RunningService
    fares: RunningService
    settlement: RunningService
    topics: Topics


@pytest.fixture
async def fleet(
    kafka_tls_env: TlsBroker, endpoints: Endpoints, tmp_path: Path
) -> AsyncIterator[Fleet]:
    prefix = f"tls{uuid4().hex[:8]}"
    settings = {
        name: service_settings(name, endpoints, kafka_tls_env, prefix)
        for name in ("ingest", "fares", "settlement")
    }
    running = [
        RunningService(build_ingest(settings["ingest"])),
        RunningService(build_fares(settings["fares"])),
        RunningService(
            build_settlement(
                settings["settlement"],
                statements_dir=tmp_path / "statements",
                signing_key=kafka_tls_env.pki / "signing.key.pem",
            )
        ),
    ]
    started: list[RunningService] = []
    try:
        for service in running:
            await service.start()
            started.append(service)
        yield Fleet(*running, settings["fares"].topics)
    finally:
        for service in reversed(started):
            await service.stop()


def a_day(day: date) -> SimulatedDay:
    """One card: Zone 1 at peak on the Underground (2.90), then two buses within the Hopper
    hour (1.75, then free): 4.65."""

    def tap(device: str, seq: int, at: clock, stop: str, kind: int, operator: str, route=""):
        message = events_pb2.Tap(
            device_id=device,
            sequence_number=seq,
            card_token=CARD,
            stop_id=stop,
            kind=kind,
            operator_id=operator,
            route_id=route,
        )
        message.tapped_at.FromDatetime(datetime.combine(day, at, LONDON).astimezone(UTC))
        return message

    entry, exit_, board = (
        events_pb2.TAP_KIND_ENTRY,
        events_pb2.TAP_KIND_EXIT,
        events_pb2.TAP_KIND_BOARD,
    )
    simulated = SimulatedDay(day)
    for t in (
        tap("gate-KGX", 1, clock(8, 0), "KGX", entry, "LUL"),
        tap("gate-OXC", 1, clock(8, 20), "OXC", exit_, "LUL"),
        tap("bus-BUS_73", 1, clock(9, 0), "CMD", board, "BUSCO", "BUS_73"),
        tap("bus-BUS_390", 1, clock(9, 30), "VIC", board, "BUSCO", "BUS_390"),
    ):
        simulated.by_device.setdefault(t.device_id, []).append(t)
    return simulated


def last_wednesday() -> date:
    day = datetime.now(UTC).date() - timedelta(days=1)
    while day.weekday() != 2:
        day -= timedelta(days=1)
    return day


async def test_ingest_fares_and_settlement_run_end_to_end_over_mutual_tls(
    fleet: Fleet, kafka_tls_env: TlsBroker
) -> None:
    pki, day = kafka_tls_env.pki, last_wednesday()
    assert fleet.ingest.admin_port is not None
    simulated = a_day(day)
    # ingest: its transactional tap writer and its compacted topics' followers over TLS.
    await register_devices(f"127.0.0.1:{fleet.ingest.admin_port}", pki, simulated.devices())
    tally = await send_day(f"127.0.0.1:{fleet.ingest.port}", simulated, 2, pki_dir=pki)
    assert (tally.sent, tally.accepted) == (4, 4)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{fleet.fares.port}") as channel:
        await fares_pb2_grpc.FaresServiceStub(channel).CloseServiceDay(
            fares_pb2.CloseServiceDayRequest(service_day=day.isoformat()), timeout=60
        )
    operations = Principal("role", OPERATIONS)
    async with secure_channel(f"127.0.0.1:{fleet.settlement.port}", pki, operations) as channel:
        closed = await settlement_pb2_grpc.SettlementServiceStub(channel).ClosePeriod(
            settlement_pb2.ClosePeriodRequest(period_id=day.isoformat()), timeout=60
        )
    assert closed.total_charged.amount_minor == 290 + 175
    assert sum(s.net.amount_minor for s in closed.statements) == 0

    # The priced journeys fares published, read back over TLS with the kit's consumer.
    journeys = await read_journeys(kafka_tls_env.bootstrap, fleet.topics.journeys)
    charged = {(j.card_token, j.charge.amount_minor) for j in journeys}
    assert {(CARD, 290), (CARD, 175)} <= charged


async def read_journeys(bootstrap: str, topic: str) -> list[events_pb2.PricedJourney]:
    consumer = committed_consumer(bootstrap, f"{topic}-reader", topic)
    await consumer.start()
    try:
        found: list[events_pb2.PricedJourney] = []
        deadline = asyncio.get_running_loop().time() + 10
        while asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            if not batch and found:
                break
            for records in batch.values():
                found += [events_pb2.PricedJourney.FromString(r.value) for r in records if r.value]
        return found
    finally:
        await consumer.stop()
