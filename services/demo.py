"""`clearway demo`: a simulated network day, end to end, with a conservation check.

Starts the four services and the travellers' web portal as their own processes (topics,
schemas and consumer groups unique to this run, so runs never mix), streams a synthetic
day through ingest, closes the service day in fares and the settlement period, then prints
what happened and checks that every tap and every penny is accounted for, and where to
sign in to the portal as the demo traveller.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import grpc
from aiokafka import AIOKafkaConsumer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clearway.auth import OPERATIONS, Principal
from clearway.common.v1 import money_pb2
from clearway.events.v1 import events_pb2
from clearway.fares.v1 import fares_pb2, fares_pb2_grpc
from clearway.infra.endpoints import Endpoints
from clearway.kafka import Topics, client_options, ensure_topics, idempotent_producer, publish_many
from clearway.money import Money
from clearway.pki import default_pki_dir, init_pki, issue_identity, secure_channel
from clearway.scheme.file import load_scheme
from clearway.scheme.model import Scheme
from clearway.settings import ADMIN_PORT_OFFSET, DEFAULT_PORTS, REPO_ROOT
from clearway.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from clearway.telemetry import setup_tracing
from services.accounts.entrypoints.cli import print_history
from services.demo_benefits import (
    OFFICER_EMAIL,
    OFFICER_PASSWORD,
    BenefitsRun,
    print_benefits,
    run_benefits,
    wait_for_postings,
)
from services.fares.domain import FareData, load_fare_data
from services.ingest.simulator.cli import DEFAULT_FEED
from services.ingest.simulator.day import SimulatedDay, devices_of, simulate_day
from services.ingest.simulator.stream import Tally, register_devices, send_day
from services.portal.app import DEFAULT_PORT as PORTAL_PORT
from services.settlement.adapters.file_sets import load_public_key
from services.settlement.app import DEFAULT_SCHEME
from services.settlement.entrypoints.verify_cli import verify_file_set

SERVICES = ("ingest", "fares", "settlement", "accounts")  # the gRPC services
PORTAL = "portal"  # the web portal: HTTP on PORTAL_PORT, readiness at /healthz
DEMO_EMAIL = "traveller@demo.clearway.example"
DEMO_PASSWORD = "demo traveller password"  # a demo account on a local run, nothing else
TLS_SERVICES = ("ingest", "settlement")  # the doors whose callers are authenticated today
RETAILER = "retailer:cornershop"


HEALTH_PORT_OFFSET = 1000  # a TLS service answers health in plaintext on port + 1000


def ensure_pki(pki_dir: Path, scheme: Scheme) -> None:
    """The scheme's PKI for local runs: CA, server certificate, signing key, and a client
    certificate for the operations role and for every party of the scheme (idempotent)."""
    init_pki(pki_dir)
    issue_identity(Principal("role", OPERATIONS), pki_dir)
    for party in scheme.parties:
        issue_identity(Principal("party", party.party_id), pki_dir)


def tls_env(pki_dir: Path) -> dict[str, str]:
    """Environment of a service serving mutual TLS with `pki_dir`'s certificates (and, for
    settlement, signing its files with the scheme's key)."""
    return {
        "CLEARWAY_TLS_CERT": str(pki_dir / "server.pem"),
        "CLEARWAY_TLS_KEY": str(pki_dir / "server.key.pem"),
        "CLEARWAY_TLS_CLIENT_CA": str(pki_dir / "ca.pem"),
        "CLEARWAY_PKI_DIR": str(pki_dir),
        "CLEARWAY_SIGNING_KEY": str(pki_dir / "signing.key.pem"),
    }


# A port shift that puts every port a fleet binds above Linux's ephemeral port range
# (32768-60999 by default), where any process's outgoing connection may hold a port
# that a service (re)started later needs: gRPC 61051+, plaintext health 62051+, admin
# 63051+, /metrics 64051+; the portal's (8080 + shift, /metrics + 3000) lie below it.
# The fleets that tools and tests start beside one another (soak, faults) shift by this
# plus a few hundred; `make demo` keeps the documented default ports (shift 0).
ABOVE_EPHEMERAL_SHIFT = 11_000


@dataclass
class Fleet:
    """The service processes of one run: the four gRPC services and the portal.

    `port_shift` moves every port (gRPC, health, admin, metrics, the portal's) by the same
    amount, so that two fleets (a demo and a fault run, say) can run side by side."""

    run_id: str
    work_dir: Path
    pki_dir: Path = field(default_factory=default_pki_dir)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    port_shift: int = 0
    # Added to every process's environment (e.g. another Kafka, PostgreSQL and Redis).
    extra_env: dict[str, str] = field(default_factory=dict)

    def port(self, service: str) -> int:
        """The gRPC port of a service (HTTP for the portal)."""
        base = PORTAL_PORT if service == PORTAL else DEFAULT_PORTS[service]
        return base + self.port_shift

    def address(self, service: str) -> str:
        """host:port of a service's gRPC port."""
        return f"127.0.0.1:{self.port(service)}"

    @property
    def portal_url(self) -> str:
        """The portal's base URL."""
        return f"http://127.0.0.1:{self.port(PORTAL)}"

    def env_for(self, service: str) -> dict[str, str]:
        """Environment of one service process (settlement serves mutual TLS; the portal
        serves HTTP and talks to accounts)."""
        if service == PORTAL:
            return {
                **os.environ,
                **self.extra_env,
                "CLEARWAY_PORTAL_HOST": "127.0.0.1",
                "CLEARWAY_PORTAL_PORT": str(self.port(PORTAL)),
                "CLEARWAY_ACCOUNTS_TARGET": self.address("accounts"),
            }
        env = {
            **os.environ,
            **self.extra_env,
            "CLEARWAY_TOPIC_PREFIX": f"{self.run_id}.",
            "CLEARWAY_DB_SCHEMA": f"{self.run_id.replace('-', '_')}_{service}",
            "CLEARWAY_CONSUMER_GROUP": f"{self.run_id}-{service}",
            "CLEARWAY_GRPC_PORT": str(self.port(service)),
            "CLEARWAY_STATEMENTS_DIR": str(self.work_dir / "statements"),
        }
        if service in TLS_SERVICES:
            env.update(tls_env(self.pki_dir))
        if service == "ingest":  # stable: a restarted ingest fences its predecessor at once
            env["CLEARWAY_INGEST_WRITER_ID"] = f"{self.run_id}-ingest"
        if service == "accounts":  # caps progress comes from this fleet's fares
            env["CLEARWAY_FARES_TARGET"] = self.address("fares")
        return env

    @staticmethod
    def health_port(service: str, port: int) -> int:
        """Where a service answers the standard health check in plaintext."""
        return port + HEALTH_PORT_OFFSET if service in TLS_SERVICES else port

    def start(self) -> None:
        """Spawn every service and the portal; logs go to the run's directory."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for name in (*SERVICES, PORTAL):
            self._spawn(name, "wb")

    def _spawn(self, name: str, mode: str) -> None:
        with (self.work_dir / f"{name}.log").open(mode) as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "serve", name],
                env=self.env_for(name),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )

    def kill(self, name: str) -> int:
        """SIGKILL one process (a service or the portal) and reap it; its pid."""
        proc = self.processes[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        return proc.pid

    def restart(self, name: str) -> None:
        """Start one process again, with the same environment; its log is appended to."""
        if self.processes[name].poll() is None:
            raise RuntimeError(f"{name} is still running")
        self._spawn(name, "ab")

    async def wait_ready(self, name: str, timeout_s: float = 90.0) -> bool:
        """Until one process answers SERVING (the portal: 200 on /healthz); False when it
        exited or the time ran out."""
        address, probe = self._probe_of(name)
        deadline = time.monotonic() + timeout_s
        while self.processes[name].poll() is None and time.monotonic() < deadline:
            if await probe(address):
                return True
            await asyncio.sleep(0.2)
        return False

    def _probe_of(self, name: str) -> tuple[str, Callable[[str], Awaitable[bool]]]:
        if name == PORTAL:
            return self.portal_url, _http_ready
        return f"127.0.0.1:{self.health_port(name, self.port(name))}", _serving

    async def wait_serving(self, timeout_s: float = 90.0) -> None:
        """Until every service answers SERVING on the standard health check, and the
        portal (HTTP, not gRPC) answers 200 on /healthz (it does once accounts serves)."""
        deadline = time.monotonic() + timeout_s
        for name in (*SERVICES, PORTAL):
            address, probe = self._probe_of(name)
            while True:
                if self.processes[name].poll() is not None:
                    raise RuntimeError(f"{name} exited; see {self.work_dir / (name + '.log')}")
                if await probe(address):
                    print(f"  {name:<10} SERVING on {address}")
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not SERVING after {timeout_s:.0f} s")
                await asyncio.sleep(0.3)

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every service and collect exit codes."""
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, proc in self.processes.items():
            try:
                codes[name] = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = None
        return codes


async def wait_for_interrupt() -> None:
    """Until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _serving(address: str) -> bool:
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1.0
            )
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.aio.AioRpcError:
        return False


async def _http_ready(url: str) -> bool:
    """True when `url`/healthz answers 200 (the portal's readiness)."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session,
            session.get(f"{url}/healthz") as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


@dataclass
class JourneyLog:
    """What the fares service published on `journeys` for the period."""

    journeys: set[str] = field(default_factory=set)
    revisions: int = 0
    incomplete: set[str] = field(default_factory=set)
    charged: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    currency: str = "GBP"
    by_card: Counter[str] = field(default_factory=Counter)
    concession_journeys: set[str] = field(default_factory=set)

    @property
    def concessions(self) -> int:
        """Journeys (still standing) of SENIOR or YOUTH cards."""
        return len(self.concession_journeys & self.journeys)


async def read_journeys(bootstrap: str, topic: str, period: str) -> JourneyLog:
    """Every revision on `topic` (read_committed), summed for `period`."""
    consumer = AIOKafkaConsumer(
        topic,
        **client_options(bootstrap),
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        group_id=None,
    )
    await consumer.start()
    result = JourneyLog()
    try:
        partitions = consumer.assignment()
        while not partitions:
            await asyncio.sleep(0.1)
            partitions = consumer.assignment()
        ends = await consumer.end_offsets(list(partitions))
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    j = events_pb2.PricedJourney.FromString(record.value)
                    if j.service_day != period:
                        continue
                    result.revisions += 1
                    if j.legs:
                        result.journeys.add(j.journey_id)
                    else:  # withdrawn: its taps now belong to another journey
                        result.journeys.discard(j.journey_id)
                    result.charged[j.journey_id] = j.charge.amount_minor
                    result.currency = j.charge.currency or result.currency
                    result.by_card[j.card_token] += 1 if j.revision == 1 else 0
                    if j.rider_category_id in ("SENIOR", "YOUTH"):
                        result.concession_journeys.add(j.journey_id)
                    if j.incomplete:
                        result.incomplete.add(j.journey_id)
                    else:
                        result.incomplete.discard(j.journey_id)
    finally:
        await consumer.stop()
    return result


def _gbp(minor: int, currency: str) -> str:
    return str(Money(minor, currency))


def report(  # noqa: PLR0917 - the demo's outcome, in its parts
    tally: Tally,
    closed: fares_pb2.CloseServiceDayResponse,
    settled: settlement_pb2.ClosePeriodResponse,
    log: JourneyLog,
    work_dir: Path,
    verified: dict[str, str],
    benefits: BenefitsRun,
) -> list[str]:
    """Print journeys, money and every party's file set; return the checks that failed."""
    currency = log.currency
    charged = sum(log.charged.values())
    print("\nJourneys")
    print(f"  priced      {len(log.journeys)} ({log.revisions} revisions incl. adjustments)")
    print(f"  incomplete  {len(log.incomplete)} charged a maximum fare")
    print(f"  concession  {log.concessions} by SENIOR or YOUTH cards")
    print(f"  day closed  {closed.cards_repriced} cards had waiting entries")
    print(f"  charged     {_gbp(charged, currency)}")

    def total(name: str) -> int:
        return int(getattr(settled, f"total_{name}").amount_minor)

    print("\nSettlement of the period")
    for name, text in (
        ("charged", "travellers' charges"),
        ("reimbursed", "funders' reimbursements"),
        ("apportioned", "operators' revenue (net of fees)"),
        ("fees", "clearing fees"),
        ("top_ups", "top-ups sold by retailers"),
        ("commission", "retailers' commission"),
        ("vouchers_redeemed", "allowance redeemed at providers"),
        ("vouchers_funded", "paid for it by councils"),
    ):
        print(f"  {text:<34} {_gbp(total(name), currency):>14}")
    print("\nSettlement files (one signed set per party)")
    net_sum = 0
    retailers = 0
    providers: dict[str, int] = {}
    for st in sorted(settled.statements, key=lambda s: s.party_id):
        net_sum += st.net.amount_minor
        if st.party_id.startswith("retailer:"):
            retailers += st.net.amount_minor
        if st.party_id.startswith("provider:"):
            providers[st.party_id] = st.net.amount_minor
        paid = f"  paid by pain.001 ({st.end_to_end_id})" if st.end_to_end_id else ""
        print(
            f"  {st.party_id:<22} {_gbp(st.net.amount_minor, currency):>14}"
            f"  {st.line_count:>7} lines  {verified.get(st.party_id, '?')}{paid}"
        )
    print(f"  under {work_dir / 'statements' / settled.period_id}/<party>/")
    checks = [
        ("charged (journeys) = charged (ledger)", charged == total("charged")),
        (
            "travellers' charges + funders' reimbursements = operators' revenue + fees",
            total("charged") + total("reimbursed") == total("apportioned") + total("fees"),
        ),
        (
            "top-ups sold = retailers' remittance + retailers' commission",
            total("top_ups") == -retailers + total("commission"),
        ),
        ("net positions sum to zero", net_sum == 0),
        *benefit_checks(benefits, total("vouchers_redeemed"), total("vouchers_funded"), providers),
        ("every party's file set verifies", all(v == "verified" for v in verified.values())),
        ("every tap accounted for", tally.balanced()),
    ]
    print("\nConservation check")
    for label, ok in checks:
        print(f"  {'ok    ' if ok else 'FAILED'} {label}")
    return [label for label, ok in checks if not ok]


async def council_day(
    scheme: Scheme, fleet: Fleet, endpoints: Endpoints, day: date, seed: int
) -> BenefitsRun:
    """Camden's youth allowance on the demo day (services/demo_benefits.py), printed, and
    its postings relayed to `benefits` before settlement closes the period."""
    env = fleet.env_for("accounts")
    benefits = await run_benefits(
        scheme,
        fleet.address("accounts"),
        endpoints.pg_dsn,
        env["CLEARWAY_DB_SCHEMA"],
        day,
        seed=seed,
    )
    print_benefits(benefits, scheme.currency)
    topic = Topics(prefix=env["CLEARWAY_TOPIC_PREFIX"]).benefits
    await wait_for_postings(endpoints.kafka_bootstrap, topic, sum(benefits.redemptions.values()))
    return benefits


def last_closable_day(scheme: Scheme, now: datetime | None = None) -> date:
    """The latest service day whose settlement period may already close: yesterday once
    today's cut-off time has passed (10:00 in the example), else the day before."""
    now = now or datetime.now(UTC)
    day = now.astimezone(UTC).date() - timedelta(days=1)  # as `yesterday()` counts
    zone = ZoneInfo(scheme.calendar.timezone)
    if now < datetime.combine(day + timedelta(days=1), scheme.calendar.cutoff, zone):
        day -= timedelta(days=1)
    return day


async def close_day(
    period: str, fleet: Fleet
) -> tuple[fares_pb2.CloseServiceDayResponse, settlement_pb2.ClosePeriodResponse]:
    """Close the service day in fares, then its period in settlement as the operations role."""
    async with grpc.aio.insecure_channel(fleet.address("fares")) as ch:
        closed = await fares_pb2_grpc.FaresServiceStub(ch).CloseServiceDay(
            fares_pb2.CloseServiceDayRequest(service_day=period, catch_up_timeout_seconds=120)
        )
    operations = Principal("role", OPERATIONS)
    async with secure_channel(fleet.address("settlement"), fleet.pki_dir, operations) as ch:
        settled = await settlement_pb2_grpc.SettlementServiceStub(ch).ClosePeriod(
            settlement_pb2.ClosePeriodRequest(period_id=period), timeout=300
        )
    return closed, settled


async def council_evidence(fleet: Fleet, period: str) -> None:
    """Camden's evidence pack of the day (`clearway reports usage --packs`), where the
    portal's officer pages find it (CLEARWAY_REPORTS_DIR, default var/reports)."""
    packs = REPO_ROOT / "var" / "reports"
    command = [
        *(sys.executable, "-m", "services.cli", "reports", "usage", "--period", period),
        *("--council", "funder:camden", "--feed", str(DEFAULT_FEED), "--packs", str(packs)),
        *("--topic-prefix", fleet.env_for("accounts")["CLEARWAY_TOPIC_PREFIX"]),
    ]
    done = await asyncio.to_thread(
        subprocess.run, command, cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        print(f"\nCamden's evidence pack was not written: {done.stderr.strip()}")
        return
    print(
        f"\nCamden's usage evidence for {period} (ridership, origin-destination, concession "
        f"take-up, voucher spend, budget; cells under 10 suppressed):\n"
        f"  {packs / 'funder_camden' / period}/  (CSV, SVG and PNG per table)\n"
        f"  {fleet.portal_url}/officer/evidence/{period} for Camden's officer"
    )


def benefit_checks(
    run: BenefitsRun, redeemed: int, funded: int, providers: dict[str, int]
) -> list[tuple[str, bool]]:
    """The council's allowance, to the penny: what the tills were told was redeemed is what
    providers are owed and the council pays, and what each young person has left."""
    if run.skipped:
        return []
    return [
        (
            "redemptions authorised = providers' vouchers redeemed = council's vouchers funded",
            run.total_minor == redeemed == funded,
        ),
        (
            "each provider's file is owed exactly its redemptions",
            providers == {p: m for p, m in run.redeemed_minor.items() if m},
        ),
        (
            "each young person's allowance - redemptions = what is left",
            run.left_minor == run.expected_left_minor,
        ),
    ]


def verify_sets(
    settled: settlement_pb2.ClosePeriodResponse, scheme: Scheme, pki_dir: Path
) -> dict[str, str]:
    """What `clearway verify-settlement` says of every party's file set."""
    public_key = load_public_key(pki_dir / "signing.pub.pem")
    results = {}
    for st in settled.statements:
        outcome = verify_file_set(Path(st.path), scheme, public_key)
        results[st.party_id] = "verified" if outcome.ok else "NOT VERIFIED"
    return results


def simulate_top_ups(
    simulated: SimulatedDay, seed: int, share: float = 0.2
) -> list[events_pb2.TopUp]:
    """Top-ups a retailer's shop sold on the day to some of the day's cards (sales made
    outside Clearway: the demo publishes them; accounts credits each card's balance once per
    top_up_id and settlement posts them. Travellers' online top-ups are published by
    accounts itself, TravellerService.TopUp)."""
    rng = random.Random(seed + 2)
    cards = sorted(
        {t.card_token for taps in simulated.by_device.values() for t in taps if t.card_token}
    )
    sold_at = datetime.combine(simulated.service_day, clock_time(7), ZoneInfo("Europe/London"))
    top_ups: list[events_pb2.TopUp] = []
    for card in cards:
        if rng.random() >= share or not card.startswith("tok_"):
            continue
        top_up = events_pb2.TopUp(
            top_up_id=f"topup-{simulated.service_day.isoformat()}-{len(top_ups) + 1}",
            card_token=card,
            retailer_id=RETAILER,
            amount=money_pb2.Money(amount_minor=rng.choice([500, 1000, 2000]), currency="GBP"),
            service_day=simulated.service_day.isoformat(),
        )
        top_up.sold_at.FromDatetime(sold_at.astimezone(UTC))
        top_ups.append(top_up)
    return top_ups


async def publish_top_ups(bootstrap: str, topic: str, top_ups: list[events_pb2.TopUp]) -> None:
    """Put the top-ups on the `topups` topic (key: card token)."""
    await ensure_topics(bootstrap, [topic])
    producer = idempotent_producer(bootstrap)
    await producer.start()
    try:
        await publish_many(
            producer,
            topic,
            [(t.card_token.encode(), t.SerializeToString(deterministic=True), []) for t in top_ups],
        )
    finally:
        await producer.stop()


def print_tally(tally: Tally) -> None:
    """Taps sent and what became of them."""
    print("\nTaps")
    print(f"  sent        {tally.sent}")
    print(f"  accepted    {tally.accepted}")
    print(f"  duplicates  {tally.duplicates}")
    print(f"  rejected    {tally.rejected_total}")
    for reason, count in sorted(tally.rejected.items()):
        print(f"    {reason:<22} {count}")


async def send_signed_day(
    feed: FareData, simulated: SimulatedDay, validators: int, fleet: Fleet
) -> Tally:
    """Register the network's validators (each with its own key) on ingest's admin port as
    the operations role, then stream the day, each batch signed by its device, over TLS."""
    ingest_port = fleet.port("ingest")
    registered = await register_devices(
        f"127.0.0.1:{ingest_port + ADMIN_PORT_OFFSET}", fleet.pki_dir, devices_of(feed)
    )
    print(f"  devices     {registered} validators registered, each with its own Ed25519 key")
    return await send_day(fleet.address("ingest"), simulated, validators, pki_dir=fleet.pki_dir)


async def run_demo(
    cards: int, validators: int, day: date, seed: int, keep_running: bool = False
) -> int:
    """The whole demo; returns the process exit code."""
    run_id = f"demo-{int(time.time())}"
    work_dir = REPO_ROOT / "var" / run_id
    endpoints = Endpoints.from_env()
    topics = Topics(prefix=f"{run_id}.")
    period = day.isoformat()
    setup_tracing("clearway-demo")
    scheme = load_scheme(DEFAULT_SCHEME, agencies_from=DEFAULT_FEED)
    pki_dir = default_pki_dir()
    ensure_pki(pki_dir, scheme)
    fleet = Fleet(run_id, work_dir, pki_dir)
    print(f"Clearway demo {run_id}: {cards} cards, {validators} validator streams, day {period}")
    print(f"Scheme {scheme.scheme_id} ({DEFAULT_SCHEME}); PKI and signing key in {pki_dir}")
    print("Starting services")
    fleet.start()
    failures: list[str] = []
    try:
        await fleet.wait_serving()
        feed = load_fare_data(DEFAULT_FEED)
        simulated = simulate_day(feed, day, cards, seed=seed)
        tally = await send_signed_day(feed, simulated, validators, fleet)
        print_tally(tally)
        top_ups = simulate_top_ups(simulated, seed)
        await publish_top_ups(endpoints.kafka_bootstrap, topics.topups, top_ups)
        print(f"  top-ups     {len(top_ups)} sold by {RETAILER}")
        if not tally.balanced():
            failures.append("taps: accepted + duplicates + rejected != sent")
        benefits = await council_day(scheme, fleet, endpoints, day, seed)

        closed, settled = await close_day(period, fleet)
        log = await read_journeys(endpoints.kafka_bootstrap, topics.journeys, period)
        verified = await asyncio.to_thread(verify_sets, settled, scheme, pki_dir)
        failures += report(tally, closed, settled, log, work_dir, verified, benefits)
        show_party_access(period, fleet)
        await council_evidence(fleet, period)
        if log.by_card:
            await show_history(log.by_card.most_common(1)[0][0], fleet, keep_running)
        if keep_running:
            print("\nServices keep running; Ctrl-C to stop them.")
            await wait_for_interrupt()
    finally:
        codes = fleet.stop()
        print(f"\nServices stopped (exit codes {codes}); logs in {work_dir}")
    if failures:
        print(f"\nFAILED: {', '.join(failures)}")
        return 1
    print("\nConservation check passed.")
    return 0


def show_party_access(period: str, fleet: Fleet) -> None:
    """How a party fetches and checks its own files."""
    address, pki_dir = fleet.address("settlement"), fleet.pki_dir
    stem = f"{pki_dir}/clients/party-operator_LUL"
    print(
        "\nA party fetches its files over mutual TLS with its own certificate, e.g.\n"
        f"  grpcurl -cacert {pki_dir}/ca.pem -cert {stem}.pem -key {stem}.key.pem \\\n"
        f'    -d \'{{"period_id": "{period}", "name": "summary.json"}}\' {address} '
        "clearway.settlement.v1.SettlementService/DownloadFile\n"
        "and checks them without access to any Clearway database:\n"
        f"  openssl pkeyutl -verify -pubin -inkey {pki_dir}/signing.pub.pem -rawin \\\n"
        "    -in manifest.json -sigfile manifest.sig\n"
        f"  .venv/bin/clearway verify-settlement <dir> --scheme {DEFAULT_SCHEME} "
        f"--public-key {pki_dir}/signing.pub.pem"
    )


async def show_history(card: str, fleet: Fleet, keep_running: bool = False) -> None:
    """One card's journey history, as a traveller would see it, how to ask again, and
    where to read it in the web portal."""
    address = fleet.address("accounts")
    print(
        f"\nJourney history of card {card} (newest first), signed in as the demo traveller "
        f"{DEMO_EMAIL} (password {DEMO_PASSWORD!r}), who owns it"
    )
    await print_history(address, card, 6, DEMO_EMAIL, DEMO_PASSWORD, sign_up=True, add_card=True)
    env = fleet.env_for("accounts")
    print(
        "\nAsk again while the services run (`clearway demo --keep-running`), or later with\n"
        f"  CLEARWAY_TOPIC_PREFIX={env['CLEARWAY_TOPIC_PREFIX']} "
        f"CLEARWAY_DB_SCHEMA={env['CLEARWAY_DB_SCHEMA']} "
        f"CLEARWAY_CONSUMER_GROUP={env['CLEARWAY_CONSUMER_GROUP']} "
        ".venv/bin/clearway serve accounts &\n"
        f"  CLEARWAY_PASSWORD='{DEMO_PASSWORD}' .venv/bin/clearway journeys {card} "
        f"--email {DEMO_EMAIL}\n"
        "or with grpcurl (server reflection is on): SignIn, then the session as a bearer token\n"
        f'  grpcurl -plaintext -d \'{{"email": "{DEMO_EMAIL}", "password": "{DEMO_PASSWORD}"}}\' '
        f"{address} clearway.accounts.v1.TravellerService/SignIn\n"
        f'  grpcurl -plaintext -H "authorization: Bearer <session_token>" '
        f'-d \'{{"card_token": "{card}"}}\' {address} '
        "clearway.accounts.v1.AccountsService/ListJourneys"
    )
    show_portal(card, fleet.portal_url, keep_running)


def show_portal(card: str, portal_url: str, keep_running: bool) -> None:
    """Where the travellers' web portal is, and the demo traveller's login."""
    print(
        f"\nTravellers' web portal: {portal_url}\n"
        f"  sign in as {DEMO_EMAIL} with the password '{DEMO_PASSWORD}'\n"
        f"  card {card} is on that account: its balance, top-ups and journeys at\n"
        f"  {portal_url}/cards/{card}\n"
        f"  Camden's council officer: {OFFICER_EMAIL} with the password '{OFFICER_PASSWORD}'\n"
        f"  (grants, audit trail and the month's report at {portal_url}/officer)"
    )
    if not keep_running:
        print("  (the portal stops with the services; `clearway demo --keep-running` keeps it up)")


def main(argv: list[str]) -> int:
    """Parse arguments and run the demo."""
    parser = argparse.ArgumentParser(prog="clearway demo", description=__doc__)
    parser.add_argument("--cards", type=int, default=300)
    parser.add_argument("--validators", type=int, default=8)
    parser.add_argument("--day", type=date.fromisoformat, default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--keep-running", action="store_true", help="leave the services up until Ctrl-C"
    )
    args = parser.parse_args(argv)
    day = args.day or last_closable_day(load_scheme(DEFAULT_SCHEME))
    return asyncio.run(run_demo(args.cards, args.validators, day, args.seed, args.keep_running))
