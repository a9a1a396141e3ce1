"""Every metric of docs/metrics.md, scraped from the /metrics port of running services.

The four services run in this process (as the end-to-end tests run them), with real Kafka,
PostgreSQL and Redis; a little traffic goes through them (signed tap batches, a poison tap,
a deny-list change, a day closed in fares, journey history read), then each service's
/metrics is read over HTTP and parsed as Prometheus does. Services of one process share one
registry and the counters count since the process started, so counters are compared
before and after, or selected by this test's own consumer groups and topics. One service
also runs as its own process (`clearway serve`), and its exposition passes `promtool check
metrics` (promtool from Debian's prometheus package, deploy/observability/promtool.sh).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import grpc
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.auth import operations_role
from clearway.consumer import KafkaCommits, PartitionBatch, Record
from clearway.events.v1 import events_pb2
from clearway.fares.v1 import fares_pb2, fares_pb2_grpc
from clearway.infra.endpoints import Endpoints
from clearway.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from clearway.pki import secure_channel
from clearway.runtime import Resources, RunningService
from clearway.settings import METRICS_OFF, ServiceSettings
from conftest import free_port
from services.accounts.app import build as build_accounts
from services.accounts.entrypoints.cli import sign_in
from services.fares.app import build as build_fares
from services.ingest.app import build as build_ingest
from services.ingest.device_client import DeviceIdentity
from services.ingest.simulator.day import SimulatedDay
from services.ingest.simulator.stream import register_devices, send_day
from services.portal.app import PortalSettings
from services.portal.app import build as build_portal
from services.settlement.app import build as build_settlement

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROMTOOL_SCRIPT = REPO / "deploy" / "observability" / "promtool.sh"
LONDON = ZoneInfo("Europe/London")
CARD_A = "tok_metricscarda01"
CARD_B = "tok_metricscardb02"
BLOCKED_CARD = "tok_metricsblocked1"
SERVICES = ("ingest", "fares", "settlement", "accounts")


# -- reading /metrics ------------------------------------------------------------------


async def scrape(port: int) -> str:
    """GET /metrics as Prometheus does (its text format)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(10)) as r,
    ):
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/plain")
        return await r.text()


def samples_of(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def matching(samples: Iterable[Sample], name: str, **labels: str) -> list[Sample]:
    return [
        s
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def total(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """The sum of the matching samples (0 when there are none)."""
    return sum(s.value for s in matching(samples, name, **labels))


def delta(before: list[Sample], after: list[Sample], name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


# -- the services and their traffic ----------------------------------------------------


def last_wednesday() -> date:
    day = datetime.now(UTC).date() - timedelta(days=1)
    while day.weekday() != 2:
        day -= timedelta(days=1)
    return day


def tap(
    device: str, seq: int, card: str, at: datetime, stop: str, kind: str, operator: str, route=""
):
    kinds = {
        "entry": events_pb2.TAP_KIND_ENTRY,
        "exit": events_pb2.TAP_KIND_EXIT,
        "board": events_pb2.TAP_KIND_BOARD,
    }
    message = events_pb2.Tap(
        device_id=device,
        sequence_number=seq,
        card_token=card,
        stop_id=stop,
        kind=kinds[kind],
        operator_id=operator,
        route_id=route,
    )
    message.tapped_at.FromDatetime(at.astimezone(UTC))
    return message


def the_day(day: date) -> SimulatedDay:
    """Two cards' day (16.95 charged once closed, as in tests/e2e), a raw card number
    (rejected) and a resent exit (a duplicate)."""

    def at(hh: int, mm: int) -> datetime:
        return datetime.combine(day, time(hh, mm), LONDON)

    taps = [
        tap("gate-KGX", 1, CARD_A, at(8, 0), "KGX", "entry", "LUL"),
        tap("gate-OXC", 1, CARD_A, at(8, 20), "OXC", "exit", "LUL"),
        tap("bus-BUS_73", 1, CARD_A, at(9, 0), "CMD", "board", "BUSCO", "BUS_73"),
        tap("bus-BUS_390", 1, CARD_A, at(9, 30), "VIC", "board", "BUSCO", "BUS_390"),
        tap("gate-BRX", 1, CARD_B, at(10, 0), "BRX", "entry", "LUL"),
        tap("gate-KGX", 2, CARD_B, at(10, 30), "KGX", "exit", "LUL"),
        tap("gate-CMD", 1, CARD_B, at(18, 0), "CMD", "entry", "LUL"),
        tap("gate-OXC", 2, "4111111111111111", at(11, 0), "OXC", "entry", "LUL"),
    ]
    simulated = SimulatedDay(day)
    for t in taps:
        simulated.by_device.setdefault(t.device_id, []).append(t)
    resend = events_pb2.Tap()
    resend.CopyFrom(taps[1])
    simulated.by_device["gate-OXC"].insert(1, resend)
    return simulated


@dataclass
class Running:
    services: dict[str, RunningService]
    settings: dict[str, ServiceSettings]
    pki: Path

    def metrics_port(self, name: str) -> int:
        port = self.services[name].metrics_port
        assert port, f"{name} serves no /metrics"
        return port

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.services[name].port}"

    @property
    def admin(self) -> str:
        return f"127.0.0.1:{self.services['ingest'].admin_port}"


@pytest.fixture
async def running(settings_for, tmp_path: Path, pki: Path) -> AsyncIterator[Running]:
    settings = {name: settings_for(name) for name in SERVICES}
    settlement = build_settlement(
        settings["settlement"],
        statements_dir=tmp_path / "statements",
        signing_key=pki / "signing.key.pem",
    )
    settlement.ledger_totals_interval_s = 0.2  # the default minute is too long to wait here
    apps = {
        "ingest": build_ingest(settings["ingest"]),
        "fares": build_fares(settings["fares"]),
        "settlement": settlement,
        "accounts": build_accounts(settings["accounts"]),
    }
    services = {name: RunningService(app) for name, app in apps.items()}
    started: list[RunningService] = []
    try:
        for service in services.values():
            await service.start()
            started.append(service)
        yield Running(services, settings, pki)
    finally:
        for service in reversed(started):
            await service.stop()


async def send_unknown_device_batch(r: Running) -> grpc.StatusCode:
    """A batch signed by a device ingest does not know: refused whole."""
    stranger = DeviceIdentity.generate("gate-STRANGER")
    signed = stranger.sign_batch(
        [tap("gate-STRANGER", 1, CARD_A, datetime.now(UTC), "KGX", "entry", "LUL")]
    )

    async def requests() -> AsyncIterator[ingest_pb2.StreamTapsRequest]:
        yield ingest_pb2.StreamTapsRequest(signed=signed)

    async with secure_channel(r.address("ingest"), r.pki, None) as channel:
        try:
            async for _ in ingest_pb2_grpc.IngestServiceStub(channel).StreamTaps(requests()):
                pass
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    raise AssertionError("a batch of an unknown device was taken")


async def deny(r: Running, card: str) -> int:
    async with secure_channel(r.admin, r.pki, operations_role()) as channel:
        reply = await ingest_pb2_grpc.DenyListAdminServiceStub(channel).AddDenyListEntry(
            ingest_pb2.AddDenyListEntryRequest(
                card_token=card, reason=ingest_pb2.DENY_REASON_LOST_OR_STOLEN
            )
        )
        return int(reply.version)


async def publish_poison_tap(endpoints: Endpoints, taps_topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=endpoints.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(taps_topic, key=CARD_A.encode(), value=b"\xffnot a tap")
    finally:
        await producer.stop()


async def close_fares_day(r: Running, day: date) -> None:
    async with grpc.aio.insecure_channel(r.address("fares")) as channel:
        await fares_pb2_grpc.FaresServiceStub(channel).CloseServiceDay(
            fares_pb2.CloseServiceDayRequest(service_day=day.isoformat()), timeout=90
        )


async def read_history(r: Running, card: str, want: int) -> None:
    """Page through the card's history until it holds `want` journeys, then ask once with
    a page token accounts never issued."""
    async with grpc.aio.insecure_channel(r.address("accounts")) as channel:
        stub = accounts_pb2_grpc.AccountsServiceStub(channel)
        owner = f"owner-{card.removeprefix('tok_')}@example.org"
        metadata = await sign_in(
            channel, owner, "the owner's password", sign_up=True, add_card=card
        )
        for _ in range(150):
            page = await stub.ListJourneys(
                accounts_pb2.ListJourneysRequest(card_token=card, page_size=10),
                metadata=metadata,
            )
            if len(page.journeys) >= want:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"the history of {card} never reached {want} journeys")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListJourneys(
                accounts_pb2.ListJourneysRequest(card_token=card, page_token="not-a-token"),
                metadata=metadata,
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def wait_for(port: int, check, what: str, limit_s: float = 60.0) -> list[Sample]:
    """Scrape until `check(samples)` holds; the samples."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while True:
        samples = samples_of(await scrape(port))
        if check(samples):
            return samples
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never scraped: {what}")
        await asyncio.sleep(0.2)


# -- the tests ---------------------------------------------------------------------------


async def test_every_metric_is_scraped_from_the_running_services(running: Running, endpoints):
    r = running
    s = r.settings
    day = last_wednesday()
    before = samples_of(await scrape(r.metrics_port("ingest")))

    # Ingest: a day of signed batches (7 accepted, 1 duplicate, 1 raw card number), one
    # batch of a device it does not know, and a card put on the deny list.
    simulated = the_day(day)
    await register_devices(r.admin, r.pki, simulated.devices())
    tally = await send_day(r.address("ingest"), simulated, validators=2, pki_dir=r.pki)
    assert (tally.accepted, tally.duplicates, dict(tally.rejected)) == (
        7,
        1,
        {"RAW_CARD_NUMBER": 1},
    )
    assert await send_unknown_device_batch(r) == grpc.StatusCode.UNAUTHENTICATED
    version = await deny(r, BLOCKED_CARD)
    # Fares: a record on the taps topic that is not a tap (dead-lettered), then the day
    # closed, so card B's open entry is charged its maximum fare.
    await publish_poison_tap(endpoints, s["fares"].topics.taps)
    # Accounts: journey history read by the card's owner, and one bad page token.
    await read_history(r, CARD_A, 2)
    await close_fares_day(r, day)
    await read_history(r, CARD_B, 2)

    # -- ingest: taps by outcome and reason, batch sizes, refused batches, the deny list
    # The list holds the card put on it, and cards A and B: accounts deny-lists a card
    # whose stored value went negative (neither was topped up).
    ingest = await wait_for(
        r.metrics_port("ingest"),
        lambda got: total(got, "clearway_ingest_deny_list_size") == 3,
        "the deny list's three cards",
    )
    taps = "clearway_ingest_taps_total"
    assert delta(before, ingest, taps, clearway_outcome="accepted") == 7
    assert delta(before, ingest, taps, clearway_outcome="duplicate") == 1
    assert delta(before, ingest, taps, clearway_outcome="rejected") == 1
    assert (
        delta(before, ingest, taps, clearway_outcome="rejected", clearway_reason="RAW_CARD_NUMBER")
        == 1
    )
    assert all(
        s.labels["clearway_reason"] == ""
        for s in matching(ingest, taps, clearway_outcome="accepted")
    )
    assert delta(before, ingest, "clearway_ingest_batch_size_count") >= 1
    assert delta(before, ingest, "clearway_ingest_batch_size_sum") == tally.sent
    assert (
        delta(
            before,
            ingest,
            "clearway_ingest_batches_refused_total",
            clearway_reason="UNKNOWN_DEVICE",
        )
        == 1
    )
    assert total(ingest, "clearway_ingest_deny_list_version") >= max(version, 3)

    # -- fares (through the consumer kit, unedited): consumer metrics and revisions
    group = {"messaging_consumer_group_name": s["fares"].consumer_group}
    taps_topic = {"messaging_destination_name": s["fares"].topics.taps}
    partitions = {str(p) for p in range(s["fares"].topic_partitions)}

    def fares_caught_up(got: list[Sample]) -> bool:
        lag = matching(got, "clearway_consumer_lag", **group, **taps_topic)
        return (
            total(got, "clearway_consumer_records_total", **group, **taps_topic) >= 8
            and {sample.labels["messaging_kafka_partition"] for sample in lag} == partitions
            and all(sample.value == 0 for sample in lag)
        )

    fares = await wait_for(r.metrics_port("fares"), fares_caught_up, "fares caught up")
    consumer = {"clearway_consumer": "fares.price_taps", "clearway_service": "fares", **group}
    assert total(fares, "clearway_consumer_records_total", **consumer, **taps_topic) == 8
    assert total(fares, "clearway_consumer_batches_total", **consumer, **taps_topic) >= 1
    assert total(fares, "clearway_consumer_batch_size_count", **consumer, **taps_topic) >= 1
    assert total(fares, "clearway_consumer_batch_size_sum", **consumer, **taps_topic) == 8
    assert (
        total(
            fares,
            "clearway_consumer_dead_letters_total",
            **consumer,
            **taps_topic,
            clearway_reason="UNREADABLE_TAP",
        )
        == 1
    )
    lag = matching(fares, "clearway_consumer_lag", **consumer, **taps_topic)
    assert len(lag) == len(partitions), "one lag per partition of the taps topic"
    revisions = total(
        fares,
        "clearway_kafka_published_total",
        messaging_destination_name=s["fares"].topics.journeys,
    )
    assert revisions >= 5  # four journeys priced as the taps came, one more at the close

    # -- settlement: the ledger of the open period, and its consumer
    settlement = await wait_for(
        r.metrics_port("settlement"),
        lambda got: (
            total(
                got,
                "clearway_settlement_ledger_posted",
                clearway_period=day.isoformat(),
                clearway_ledger_account="traveller_charges",
            )
            == -1695
        ),
        "settlement's ledger totals of the day",
    )
    posted = matching(
        settlement, "clearway_settlement_ledger_posted", clearway_period=day.isoformat()
    )
    accounts_posted = {sample.labels["clearway_ledger_account"] for sample in posted}
    assert {"traveller_charges", "fare_revenue", "clearing_fees"} <= accounts_posted
    assert sum(sample.value for sample in posted) == 0, "a period's accounts sum to zero"
    assert {sample.labels["clearway_currency"] for sample in posted} == {"GBP"}
    assert (
        total(
            settlement,
            "clearway_consumer_records_total",
            clearway_consumer="settlement.post_journeys",
            messaging_consumer_group_name=s["settlement"].consumer_group,
            messaging_destination_name=s["settlement"].topics.journeys,
        )
        >= revisions
    )

    # -- accounts: history latency by outcome, and its consumer
    accounts = samples_of(await scrape(r.metrics_port("accounts")))
    history = "clearway_accounts_history_duration_seconds"
    assert delta(before, accounts, f"{history}_count", clearway_outcome="ok") >= 2
    assert delta(before, accounts, f"{history}_count", clearway_outcome="BAD_PAGE_TOKEN") == 2
    assert delta(before, accounts, f"{history}_sum") > 0
    buckets = matching(accounts, f"{history}_bucket", clearway_outcome="ok")
    assert {b.labels["le"] for b in buckets} >= {"0.005", "0.1", "1.0", "+Inf"}
    assert (
        total(
            accounts,
            "clearway_consumer_batches_total",
            clearway_consumer="accounts.store_journeys",
            messaging_consumer_group_name=s["accounts"].consumer_group,
        )
        >= 1
    )

    # Every service answers for the process: who it is, and its memory.
    for name in SERVICES:
        text = await scrape(r.metrics_port(name))
        assert matching(samples_of(text), "target_info"), name
        assert total(samples_of(text), "process_resident_memory_bytes") > 0, name


@dataclass
class FlakyHandler:
    """Fails its first batch as if the network went away, then takes everything."""

    name: str = "metricstest.flaky"
    failed: bool = False
    handled: int = 0

    def decode(self, record: Record) -> bytes:
        return bytes(record.value or b"")

    async def handle(self, batch: PartitionBatch[bytes]) -> None:
        if batch.items and not self.failed:
            self.failed = True
            raise ConnectionRefusedError("the sink went away")
        self.handled += len(batch.items)


@dataclass
class FlakyService:
    settings: ServiceSettings
    handler: FlakyHandler = dataclasses.field(default_factory=FlakyHandler)

    @property
    def grpc_service_names(self) -> list[str]:
        return []

    def register(self, server: grpc.aio.Server) -> None:
        pass

    async def start(self, resources: Resources) -> None:
        producer = await resources.producer()
        await resources.consume(
            self.handler,
            topics=[self.settings.topics.taps],
            commits=KafkaCommits(),
            producer=producer,
        )


async def test_consumer_retries_are_counted_by_reason_and_topic(settings_for, endpoints):
    settings = settings_for("metricstest")
    service = RunningService(FlakyService(settings))
    await service.start()
    try:
        await publish_poison_tap(endpoints, settings.topics.taps)  # any record will do
        assert service.metrics_port
        labels = {
            "clearway_consumer": "metricstest.flaky",
            "messaging_consumer_group_name": settings.consumer_group,
            "messaging_destination_name": settings.topics.taps,
        }
        samples = await wait_for(
            service.metrics_port,
            lambda got: total(got, "clearway_consumer_records_total", **labels) == 1,
            "the flaky consumer's record",
        )
        assert (
            total(
                samples,
                "clearway_consumer_retries_total",
                **labels,
                clearway_reason="NETWORK_UNAVAILABLE",
            )
            == 1
        )
        assert total(samples, "clearway_consumer_dead_letters_total", **labels) == 0
    finally:
        await service.stop()


def test_metrics_port_defaults_to_the_grpc_port_plus_3000_and_0_turns_it_off(monkeypatch):
    for key in [k for k in os.environ if k.startswith("CLEARWAY_")]:
        monkeypatch.delenv(key)
    assert ServiceSettings.from_env("fares").http_metrics_port == 53052
    monkeypatch.setenv("CLEARWAY_WORKER_INDEX", "2")
    assert ServiceSettings.from_env("ingest").http_metrics_port == 53251
    monkeypatch.setenv("CLEARWAY_METRICS_PORT", "9464")
    assert ServiceSettings.from_env("ingest").http_metrics_port == 9664
    monkeypatch.setenv("CLEARWAY_METRICS_PORT", "0")
    assert ServiceSettings.from_env("ingest").metrics_port == METRICS_OFF
    assert ServiceSettings.from_env("ingest").http_metrics_port is None


async def test_a_service_with_metrics_turned_off_serves_none(settings_for):
    settings = dataclasses.replace(settings_for("metricstest"), metrics_port=METRICS_OFF)
    service = RunningService(FlakyService(settings))
    await service.start()
    try:
        assert service.metrics_port is None
    finally:
        await service.stop()


# -- a service as its own process --------------------------------------------------------


def spawn(name: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`clearway serve NAME`, its output to `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", name],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def promtool() -> Path:
    """promtool, installed by the project's own script when missing."""
    result = subprocess.run(
        ["bash", str(PROMTOOL_SCRIPT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip())


async def test_a_service_process_serves_its_own_metrics_that_promtool_accepts(
    endpoints, unique_name, tmp_path: Path
):
    grpc_port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        **endpoints.as_env(),
        "CLEARWAY_GRPC_PORT": str(grpc_port),
        "CLEARWAY_METRICS_PORT": str(metrics_port),
        "CLEARWAY_TOPIC_PREFIX": f"{unique_name}.",
        "CLEARWAY_DB_SCHEMA": f"{unique_name}_fares",
        "CLEARWAY_CONSUMER_GROUP": f"{unique_name}-fares",
        "CLEARWAY_GRACE_SECONDS": "3",
    }
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    log = tmp_path / "fares.log"
    proc = spawn("fares", env, log)
    try:
        lag: list[Any] = []
        for _ in range(300):
            assert proc.poll() is None, log.read_text()
            try:
                text = await scrape(metrics_port)
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)
                continue
            samples = samples_of(text)
            lag = matching(
                samples,
                "clearway_consumer_lag",
                messaging_destination_name=f"{unique_name}.taps",
            )
            if lag:
                break
            await asyncio.sleep(0.2)
        assert lag, "fares never reported the lag of its partitions"
        (info,) = matching(samples, "target_info")
        assert info.labels["service_name"] == "clearway-fares"
        # Its own process's registry: no other service's metrics.
        assert not matching(samples, "clearway_accounts_history_duration_seconds_count")
        assert not matching(samples, "clearway_settlement_ledger_posted")
        check = await asyncio.to_thread(
            subprocess.run,
            [str(promtool()), "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 15)
        except subprocess.TimeoutExpired:
            proc.kill()


async def test_the_portal_counts_its_requests_by_route_template_never_by_path() -> None:
    """The portal's /metrics (its own port): requests and their duration by method, route
    template and status; a card token in a path never becomes a label."""
    # Accounts is not there: /healthz answers 503, the sign-in form still renders.
    portal = build_portal(
        PortalSettings(accounts_target=f"127.0.0.1:{free_port()}", port=0, metrics_port=0)
    )
    port = await portal.start()
    try:
        assert portal.metrics_port
        before = samples_of(await scrape(portal.metrics_port))
        async with aiohttp.ClientSession() as session:
            for path in ("/sign-in", "/sign-in", "/healthz", f"/cards/{CARD_A}"):
                async with session.get(
                    f"http://127.0.0.1:{port}{path}", allow_redirects=False
                ) as response:
                    await response.read()
        text = await scrape(portal.metrics_port)
    finally:
        await portal.stop()
    after = samples_of(text)
    name = "clearway_portal_requests_total"
    sign_in = {"http_route": "/sign-in", "http_request_method": "GET"}
    assert delta(before, after, name, **sign_in, http_response_status_code="200") == 2
    assert delta(before, after, name, http_route="/healthz", http_response_status_code="503") == 1
    # Not signed in: the card page sends the browser to sign in (303), labelled by template.
    assert delta(before, after, name, http_route="/cards/{card}") == 1
    assert CARD_A not in text
    duration = "clearway_portal_request_duration_seconds_count"
    assert delta(before, after, duration, **sign_in) == 2
