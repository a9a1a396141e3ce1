"""Pipeline benchmark: the services catching up on a backlog, and end to end, in one run.

Run: .venv/bin/python bench/pipeline.py [--taps N] [--fares-instances 1 2]
         [--e2e-cards M] [--streams K] [--skip-backlog] [--skip-e2e]

On one generated service day (the London example network):
(a) a backlog of --taps taps already on the `taps` topic, then the fares service started
    (1 and 2 instances, each run on its own topics and schema): taps/s until every tap is
    priced, and the ratio to the offline engine (`price_card`) over the same taps;
(b) settlement, then accounts, catching up on the journeys the 1-instance run published:
    revisions/s each;
(c) end to end: --streams validator streams through ingest, fares, settlement and
    accounts, timed until the last journey is in the ledger and in the history; taps/s,
    the largest consumer lag seen, and the ratio to ingest alone on the same day.
Prints figures and ratios; asserts nothing. Every run uses its own topic prefix, schemas
and consumer groups; the schemas are dropped at the end, the Kafka topics are kept.
Settlement serves mutual TLS with a PKI made for the run (in its work directory) and
signs its files with that PKI's key; its health answers in plaintext on a port of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import FrameType

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from clearway.events.v1 import events_pb2
from clearway.infra.endpoints import Endpoints
from clearway.kafka import (
    Topics,
    client_options,
    ensure_topics,
    idempotent_producer,
    publish_many,
)
from clearway.scheme.file import load_scheme
from clearway.settings import REPO_ROOT
from services.demo import SERVICES, TLS_SERVICES, Fleet, _serving, ensure_pki
from services.fares.adapters.convert import tap_from_proto
from services.fares.app import DEFAULT_FEED, load_catalog
from services.fares.domain import Tap, price_card
from services.fares.domain.model import FareCatalog
from services.ingest.simulator.cli import yesterday
from services.ingest.simulator.day import Mix, SimulatedDay, simulate_day
from services.ingest.simulator.stream import Tally, register_devices, send_day
from services.settlement.adapters.journey_lag import GroupLag
from services.settlement.app import DEFAULT_SCHEME

TAPS_PER_CARD = 4.3  # what simulate_day makes on the London example, give or take
BACKLOG_SEED = 7
E2E_SEED = 8
PRODUCE_CHUNK = 20_000
SAMPLE_S = 0.5
PROGRESS_EVERY_S = 15.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
INFRA_COMMANDS = {"postgres": "postgres", "java": "kafka", "redis-server": "redis"}
Message = tuple[bytes, bytes, list[tuple[str, bytes]]]


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class BenchFleet(Fleet):
    """A Fleet of chosen services and instances, each on a free port, logging to work_dir.
    TLS services (settlement) answer health in plaintext on a second free port."""

    ports: dict[str, int] = field(default_factory=dict)  # process label -> gRPC port
    health_ports: dict[str, int] = field(default_factory=dict)  # label -> plaintext health
    admin_ports: dict[str, int] = field(default_factory=dict)  # label -> mutual-TLS admin

    async def send_signed(self, simulated: SimulatedDay, streams: int) -> Tally:
        """Register the day's validators on ingest's admin port, then stream the day over
        TLS, each batch signed by its device."""
        await register_devices(
            f"127.0.0.1:{self.admin_ports['ingest']}", self.pki_dir, simulated.devices()
        )
        return await send_day(
            f"127.0.0.1:{self.ports['ingest']}", simulated, streams, pki_dir=self.pki_dir
        )

    def env_for(self, service: str) -> dict[str, str]:
        """The demo's naming (topics, schema, group per run) at WARNING level."""
        return {
            **super().env_for(service),
            **Endpoints.from_env().as_env(),
            "CLEARWAY_LOG_LEVEL": "WARNING",
        }

    def spawn(
        self, services: Sequence[str] = SERVICES, instances: int = 1, first: int = 1
    ) -> list[str]:
        """Spawn instances `first`..`instances` of each service; returns their labels."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        labels = []
        for service in services:
            for n in range(first, instances + 1):
                label = service if n == 1 else f"{service}-{n}"
                port = self.ports[label] = free_port()
                env = {**self.env_for(service), "CLEARWAY_GRPC_PORT": str(port)}
                self.health_ports[label] = port
                if service in TLS_SERVICES:  # port + 1000 need not be free: choose one
                    self.health_ports[label] = free_port()
                    env["CLEARWAY_HEALTH_PORT"] = str(self.health_ports[label])
                if service == "ingest":  # its mutual-TLS admin port (device registry)
                    self.admin_ports[label] = free_port()
                    env["CLEARWAY_ADMIN_PORT"] = str(self.admin_ports[label])
                with (self.work_dir / f"{label}.log").open("ab") as log:
                    self.processes[label] = subprocess.Popen(
                        [sys.executable, "-m", "services.cli", "serve", service],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=REPO_ROOT,
                    )
                labels.append(label)
        return labels

    async def wait_serving(
        self, timeout_s: float = 120.0, labels: Sequence[str] | None = None
    ) -> None:
        """Until every process named (default: all) answers SERVING on its health port."""
        deadline = time.monotonic() + timeout_s
        for label in labels or list(self.processes):
            while not await _serving(f"127.0.0.1:{self.health_ports[label]}"):
                self.check_alive([label])
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{label} not SERVING after {timeout_s:.0f} s")
                await asyncio.sleep(0.2)

    def check_alive(self, labels: Sequence[str]) -> None:
        """Raise when one of these processes has exited."""
        for label in labels:
            if self.processes[label].poll() is not None:
                raise RuntimeError(f"{label} exited; see {self.work_dir / (label + '.log')}")

    def cpu_seconds(self, labels: Sequence[str]) -> float:
        """CPU time these processes have used so far (read them before stopping them)."""
        return sum(process_cpu_seconds(self.processes[label].pid) for label in labels)

    def schema(self, service: str) -> str:
        """The PostgreSQL schema of `service` in this run."""
        return self.env_for(service)["CLEARWAY_DB_SCHEMA"]

    @property
    def topics(self) -> Topics:
        """This run's topic names."""
        return Topics(prefix=self.env_for("fares")["CLEARWAY_TOPIC_PREFIX"])

    def group(self, service: str) -> str:
        """The consumer group of `service` in this run."""
        return self.env_for(service)["CLEARWAY_CONSUMER_GROUP"]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc (0.0 once it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass(frozen=True)
class CpuSnapshot:
    """Machine-wide busy CPU seconds and those of the infrastructure servers, at one time."""

    at: float
    busy: float
    own: float  # this bench process (producer, validators, probes)
    infra: dict[int, tuple[str, float]]  # pid -> (server, CPU seconds)

    @classmethod
    def now(cls) -> CpuSnapshot:
        """Read /proc/stat and every process's /proc/<pid>/stat."""
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
        busy = (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS  # less idle and iowait
        infra: dict[int, tuple[str, float]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                command = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                continue
            if command in INFRA_COMMANDS:
                pid = int(entry)
                infra[pid] = (INFRA_COMMANDS[command], process_cpu_seconds(pid))
        return cls(time.monotonic(), busy, time.process_time(), infra)

    def since(self, earlier: CpuSnapshot, services: float) -> str:
        """What was used between `earlier` and this snapshot, in cores; `services` is the
        CPU time the bench's service processes used meanwhile."""
        wall = max(self.at - earlier.at, 1e-9)
        used: dict[str, float] = dict.fromkeys(("postgres", "kafka", "redis"), 0.0)
        for pid, (name, seconds) in self.infra.items():
            # Processes that ended in between (short-lived backends) are not counted.
            used[name] += seconds - earlier.infra.get(pid, (name, 0.0))[1]
        parts = [f"{name} {seconds / wall:.2f}" for name, seconds in used.items()]
        own = self.own - earlier.own
        machine = self.busy - earlier.busy
        others = machine - own - services - sum(used.values())
        return (
            f"{', '.join(parts)}, bench process {own / wall:.2f}; machine busy "
            f"{machine / wall:.2f} of {os.cpu_count()} cores, of which {others / wall:.2f} by "
            "processes outside this bench"
        )


@dataclass(frozen=True)
class Result:
    """One line of the final table."""

    label: str
    count: int
    unit: str
    seconds: float
    cpu_seconds: float  # of the processes doing the work (services, or the offline engine)
    note: str = ""

    @property
    def rate(self) -> float:
        """Units per second."""
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def per_cpu_second(self) -> float:
        """Units per CPU second: comparable across runs on a machine shared with others."""
        return self.count / self.cpu_seconds if self.cpu_seconds > 0 else 0.0


@dataclass
class Bench:
    """What one benchmark run shares: servers, run ids, work directory, results."""

    endpoints: Endpoints
    run_id: str
    work_dir: Path
    pki_dir: Path  # settlement's server certificate, client CA and signing key
    fleets: list[BenchFleet] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    ratios: list[str] = field(default_factory=list)

    def fleet(self, name: str) -> BenchFleet:
        """A fleet with its own topic prefix, schemas and groups."""
        fleet = BenchFleet(f"{self.run_id}-{name}", self.work_dir / name, self.pki_dir)
        self.fleets.append(fleet)
        return fleet

    def add(self, result: Result) -> Result:
        """Keep `result` for the table and print it."""
        self.results.append(result)
        print(
            f"  => {result.rate:,.0f} {result.unit}/s ({result.count:,} {result.unit} in "
            f"{result.seconds:.1f} s; {result.per_cpu_second:,.0f} per CPU second)"
            f"{' ' + result.note if result.note else ''}"
        )
        return result

    def ratio(self, label: str, value: float) -> None:
        """Keep a ratio for the table and print it."""
        self.ratios.append(f"{label}: {value:.2f}")
        print(f"  {label}: {value:.2f}")

    def stop_all(self) -> None:
        """SIGTERM every process still running (then kill), whatever happened."""
        for fleet in self.fleets:
            fleet.stop()


# ---------------------------------------------------------------- the generated day


def backlog_taps(catalog: FareCatalog, day: date, taps: int) -> list[events_pb2.Tap]:
    """At least `taps` clean taps (no malformed, no resends), tap ids set as ingest sets
    them, ordered by time then tap id (as live validators stream them)."""
    cards = int(taps / TAPS_PER_CARD * 1.01) + 1
    while True:
        simulated = simulate_day(
            catalog.versions[0], day, cards, seed=BACKLOG_SEED, mix=Mix(malformed=0.0, resend=0.0)
        )
        if simulated.total() >= taps:
            break
        cards = int(cards * taps / max(simulated.total(), 1) * 1.01) + 1
    result = []
    for device_taps in simulated.by_device.values():
        for tap in device_taps:
            tap.tap_id = f"{tap.device_id}:{tap.sequence_number}"
            result.append(tap)
    result.sort(key=lambda t: (t.tapped_at.ToNanoseconds(), t.tap_id))
    print(f"  {cards:,} cards, {len(result):,} taps")
    return result


def offline_engine(catalog: FareCatalog, taps: list[events_pb2.Tap]) -> Result:
    """The pure engine over the same taps, card by card (only the pricing is timed)."""
    t0 = time.perf_counter()
    by_card: dict[str, list[Tap]] = defaultdict(list)
    for tap in taps:
        by_card[tap.card_token].append(tap_from_proto(tap))
    converted_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    journeys = sum(
        len(price_card(catalog, card_taps, as_of=None)) for card_taps in by_card.values()
    )
    priced_s, priced_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"  conversion (proto -> engine taps, grouped by card): {converted_s:.1f} s; "
        f"pricing {len(by_card):,} cards: {priced_s:.1f} s wall, {priced_cpu:.1f} s CPU, "
        f"{journeys:,} journeys"
    )
    return Result("offline engine (price_card, 1 core)", len(taps), "taps", priced_s, priced_cpu)


# ---------------------------------------------------------------- probes


async def fares_connection(bench: Bench, fleet: BenchFleet) -> asyncpg.Connection:
    """A PostgreSQL connection whose search path is the fleet's fares schema."""
    schema = fleet.schema("fares")
    return await asyncpg.connect(bench.endpoints.pg_dsn, server_settings={"search_path": schema})


async def fares_position(conn: asyncpg.Connection, topic: str) -> int:
    """How many records of `topic` the fares service has priced (sum of stored positions)."""
    if await conn.fetchval("SELECT to_regclass('partition_state')") is None:
        return 0
    value = await conn.fetchval(
        "SELECT coalesce(sum(next_offset), 0) FROM partition_state WHERE topic = $1", topic
    )
    return int(value)


async def outbox_size(conn: asyncpg.Connection) -> int:
    """Revisions priced but not yet relayed to `journeys`."""
    if await conn.fetchval("SELECT to_regclass('outbox')") is None:
        return 0
    return int(await conn.fetchval("SELECT count(*) FROM outbox"))


async def wait_until(
    what: str,
    remaining: Callable[[], Awaitable[int]],
    alive: Callable[[], None],
    timeout_s: float,
    poll_s: float = 0.1,
) -> float:
    """Poll until `remaining()` is 0; returns the monotonic time it got there. Prints
    progress now and then; raises on timeout or when a process died."""
    started = last_print = time.monotonic()
    while True:
        left = await remaining()
        now = time.monotonic()
        if left <= 0:
            return now
        alive()
        if now - started > timeout_s:
            raise TimeoutError(f"{what}: {left:,} left after {timeout_s:.0f} s")
        if now - last_print > PROGRESS_EVERY_S:
            print(f"     ... {what}: {left:,} left at {now - started:.0f} s", flush=True)
            last_print = now
        await asyncio.sleep(poll_s)


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    """The current end of every partition of `topic`."""
    probe = GroupLag(bootstrap, "clearway-bench-probe", topic)  # only its end offsets are used
    await probe.start()
    try:
        return await probe.end_offsets()
    finally:
        await probe.stop()


async def count_records(bootstrap: str, topic: str) -> int:
    """How many committed records `topic` holds (its end offsets also count ingest's
    transaction markers)."""
    ends = await end_offsets(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        **client_options(bootstrap), enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    count = 0
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                count += len(records)
    finally:
        await consumer.stop()
    return count


# ---------------------------------------------------------------- (a) fares catching up


async def produce(bootstrap: str, topic: str, messages: Sequence[Message]) -> None:
    """Put `messages` on `topic` (per-partition order kept), in chunks."""
    producer = idempotent_producer(bootstrap, linger_ms=20, max_batch_size=1048576)
    await producer.start()
    try:
        for i in range(0, len(messages), PRODUCE_CHUNK):
            await publish_many(producer, topic, messages[i : i + PRODUCE_CHUNK])
    finally:
        await producer.stop()


async def fares_catch_up(
    bench: Bench, messages: Sequence[Message], instances: int, offline: Result
) -> BenchFleet:
    """Backlog on a fresh prefix, then `instances` fares processes until all is priced."""
    fleet = bench.fleet(f"fares{instances}")
    topics = fleet.topics
    bootstrap = bench.endpoints.kafka_bootstrap
    print(f"\n(a) fares catching up, {instances} instance(s), prefix {topics.prefix}")
    await ensure_topics(bootstrap, topics.all(), partitions=6)
    t0 = time.perf_counter()
    await produce(bootstrap, topics.taps, messages)
    print(f"  backlog produced: {len(messages):,} taps in {time.perf_counter() - t0:.1f} s")
    conn = await fares_connection(bench, fleet)
    try:
        cpu0, started = CpuSnapshot.now(), time.monotonic()
        # One after another: replicas starting together on a fresh schema race in the
        # migrations (CREATE TABLE IF NOT EXISTS schema_version is not concurrency-safe).
        labels = fleet.spawn(["fares"])
        await fleet.wait_serving(labels=labels)
        labels += fleet.spawn(["fares"], instances, first=2)
        await fleet.wait_serving(labels=labels)
        serving_s = time.monotonic() - started

        async def unpriced() -> int:
            return len(messages) - await fares_position(conn, topics.taps)

        async def unpublished() -> int:
            return await outbox_size(conn)

        alive = functools.partial(fleet.check_alive, labels)
        priced_at = await wait_until("unpriced taps", unpriced, alive, 3600)
        fares_cpu, cpu1 = fleet.cpu_seconds(labels), CpuSnapshot.now()
        published_at = await wait_until("revisions in the outbox", unpublished, alive, 600)
    finally:
        await conn.close()
    revisions = sum((await end_offsets(bootstrap, topics.journeys)).values())
    codes = fleet.stop()
    elapsed = priced_at - started
    print(
        f"  SERVING after {serving_s:.1f} s{' (one after another)' if instances > 1 else ''}; "
        f"all priced {elapsed:.1f} s after start; outbox "
        f"empty {published_at - started:.1f} s after start; {revisions:,} revisions published"
    )
    print(
        f"  CPU while catching up: fares {fares_cpu:.1f} s ({fares_cpu / elapsed:.2f} cores), "
        f"{cpu1.since(cpu0, fares_cpu)}; exit codes {codes}"
    )
    result = Result(
        f"(a) fares catch-up, {instances} instance(s)",
        len(messages),
        "taps",
        elapsed,
        fares_cpu,
        f"{revisions:,} revisions",
    )
    bench.add(result)
    name = f"fares {instances} instance(s) / offline engine"
    bench.ratio(f"{name}, taps/s", result.rate / offline.rate)
    bench.ratio(f"{name}, taps per CPU second", result.per_cpu_second / offline.per_cpu_second)
    return fleet


# ---------------------------------------------------------------- (b) journeys consumers


async def journeys_catch_up(bench: Bench, fleet: BenchFleet, service: str) -> None:
    """One `service` process on the journeys `fleet`'s fares published, until lag 0."""
    topic = fleet.topics.journeys
    print(f"\n(b) {service} catching up on {topic}")
    lag = GroupLag(bench.endpoints.kafka_bootstrap, fleet.group(service), topic)
    await lag.start()
    try:
        targets = await lag.end_offsets()
        total = sum(targets.values())
        cpu0, started = CpuSnapshot.now(), time.monotonic()
        labels = fleet.spawn([service])
        await fleet.wait_serving(labels=labels)
        serving_s = time.monotonic() - started

        async def behind() -> int:
            return await lag.lag_behind(targets)

        done_at = await wait_until(
            f"{service} lag", behind, functools.partial(fleet.check_alive, labels), 3600, 0.2
        )
        used, cpu1 = fleet.cpu_seconds(labels), CpuSnapshot.now()
    finally:
        await lag.stop()
    codes = {label: code for label, code in fleet.stop().items() if label in labels}
    elapsed = done_at - started
    print(
        f"  SERVING after {serving_s:.1f} s; lag 0 {elapsed:.1f} s after start; CPU {service} "
        f"{used:.1f} s ({used / elapsed:.2f} cores), {cpu1.since(cpu0, used)}; exit codes {codes}"
    )
    bench.add(Result(f"(b) {service} catch-up", total, "revisions", elapsed, used))


# ---------------------------------------------------------------- (c) end to end


@dataclass
class LagSampler:
    """Consumer lags every SAMPLE_S seconds while the pipeline runs; keeps the largest."""

    bench: Bench
    fleet: BenchFleet
    largest: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERVICES[1:], 0))
    samples: int = 0

    async def run(self) -> None:
        """Sample until cancelled."""
        topics, bootstrap = self.fleet.topics, self.bench.endpoints.kafka_bootstrap
        taps = GroupLag(bootstrap, "clearway-bench-probe", topics.taps)
        sinks = {s: GroupLag(bootstrap, self.fleet.group(s), topics.journeys) for s in SERVICES[2:]}
        for probe in (taps, *sinks.values()):
            await probe.start()
        conn = await fares_connection(self.bench, self.fleet)  # its own: asyncpg is one at a time
        try:
            while True:
                ends = sum((await taps.end_offsets()).values())
                priced = await fares_position(conn, topics.taps)
                self._keep("fares", ends - priced)
                journeys = await sinks["settlement"].end_offsets()
                for service, probe in sinks.items():
                    self._keep(service, await probe.lag_behind(journeys))
                self.samples += 1
                await asyncio.sleep(SAMPLE_S)
        finally:
            await conn.close()
            for probe in (taps, *sinks.values()):
                await probe.stop()

    def _keep(self, service: str, lag: int) -> None:
        self.largest[service] = max(self.largest[service], lag)


async def end_to_end(bench: Bench, day: date, cards: int, streams: int) -> None:
    """Validators through all four services, then ingest alone on the same day."""
    catalog = load_catalog([DEFAULT_FEED])
    t0 = time.perf_counter()
    simulated = simulate_day(catalog.versions[0], day, cards, seed=E2E_SEED)  # faults included
    print(
        f"\n(c) end to end: {cards:,} cards, {simulated.total():,} taps ({simulated.malformed:,} "
        f"malformed, {simulated.resent:,} resends), {streams} streams; generated in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    e2e = await pipeline_run(bench, simulated, streams)
    alone = await ingest_alone(bench, simulated, streams)
    bench.ratio("end to end / ingest alone, taps/s", e2e.rate / alone.rate)


async def pipeline_run(bench: Bench, simulated: SimulatedDay, streams: int) -> Result:
    """All four services; timed from the first tap sent until the last journey is stored
    by settlement and accounts."""
    fleet = bench.fleet("e2e")
    topics, bootstrap = fleet.topics, bench.endpoints.kafka_bootstrap
    print(f"  prefix {topics.prefix}")
    await ensure_topics(bootstrap, topics.all(), partitions=6)
    labels = fleet.spawn(SERVICES)
    await fleet.wait_serving(labels=labels)
    conn = await fares_connection(bench, fleet)
    sampler = LagSampler(bench, fleet)
    alive = functools.partial(fleet.check_alive, labels)
    sampling = asyncio.create_task(sampler.run())
    try:
        base = {label: fleet.cpu_seconds([label]) for label in labels}  # start-up excluded
        cpu0, started = CpuSnapshot.now(), time.monotonic()
        tally = await fleet.send_signed(simulated, streams)
        sent_at = time.monotonic()
        taps_end = sum((await end_offsets(bootstrap, topics.taps)).values())

        async def fares_behind() -> int:
            left = taps_end - await fares_position(conn, topics.taps)
            return left + await outbox_size(conn)

        fares_at = await wait_until("fares: unpriced + outbox", fares_behind, alive, 1800)
        journeys = await end_offsets(bootstrap, topics.journeys)
        done_at = await sinks_caught_up(bootstrap, fleet, journeys, alive)
        cpu = {label: fleet.cpu_seconds([label]) - base[label] for label in labels}
        cpu1 = CpuSnapshot.now()
    finally:
        sampling.cancel()
        (stopped,) = await asyncio.gather(sampling, return_exceptions=True)
        await conn.close()
    if not isinstance(stopped, asyncio.CancelledError):
        print(f"  lag sampling stopped early: {stopped!r}")
    codes = fleet.stop()
    print_tally(tally, await count_records(bootstrap, topics.taps))
    elapsed = done_at - started
    print(
        f"  sending took {sent_at - started:.1f} s; fares done {fares_at - started:.1f} s, "
        f"settlement and accounts done {elapsed:.1f} s after the first tap; "
        f"{sum(journeys.values()):,} revisions"
    )
    print(
        "  largest lag seen ("
        f"{sampler.samples} samples every {SAMPLE_S} s): "
        + ", ".join(f"{s} {lag:,}" for s, lag in sampler.largest.items())
    )
    print(
        "  CPU: "
        + ", ".join(f"{label} {secs:.1f} s" for label, secs in cpu.items())
        + f" over {elapsed:.1f} s; {cpu1.since(cpu0, sum(cpu.values()))}; exit codes {codes}"
    )
    return bench.add(
        Result(
            f"(c) end to end, {streams} streams",
            tally.sent,
            "taps",
            elapsed,
            sum(cpu.values()),
            "max lag " + "/".join(f"{lag:,}" for lag in sampler.largest.values()),
        )
    )


async def sinks_caught_up(
    bootstrap: str,
    fleet: BenchFleet,
    journeys: dict[TopicPartition, int],
    alive: Callable[[], None],
) -> float:
    """When settlement and accounts have both committed everything up to `journeys`."""
    topic = fleet.topics.journeys
    probes = [GroupLag(bootstrap, fleet.group(s), topic) for s in ("settlement", "accounts")]
    for probe in probes:
        await probe.start()
    try:

        async def behind() -> int:
            return sum([await probe.lag_behind(journeys) for probe in probes])

        return await wait_until("settlement + accounts lag", behind, alive, 1800, 0.2)
    finally:
        for probe in probes:
            await probe.stop()


def print_tally(tally: Tally, on_topic: int) -> None:
    """What ingest answered, and whether the taps topic holds exactly the accepted taps."""
    rejected = ", ".join(f"{reason} {n:,}" for reason, n in sorted(tally.rejected.items()))
    print(
        f"  sent {tally.sent:,}: accepted {tally.accepted:,}, duplicates {tally.duplicates:,}, "
        f"rejected {tally.rejected_total:,} ({rejected}); retried batches "
        f"{tally.retried_batches}; on the taps topic {on_topic:,}"
        + ("" if on_topic == tally.accepted else "  <-- differs from accepted")
    )


async def ingest_alone(bench: Bench, simulated: SimulatedDay, streams: int) -> Result:
    """Only ingest running, a fresh prefix, the same day over the same streams."""
    fleet = bench.fleet("ingest")
    print(f"  ingest alone, prefix {fleet.topics.prefix}")
    await ensure_topics(bench.endpoints.kafka_bootstrap, fleet.topics.all(), partitions=6)
    labels = fleet.spawn(["ingest"])
    await fleet.wait_serving(labels=labels)
    base = fleet.cpu_seconds(labels)
    cpu0, started = CpuSnapshot.now(), time.monotonic()
    tally = await fleet.send_signed(simulated, streams)
    elapsed = time.monotonic() - started
    used, cpu1 = fleet.cpu_seconds(labels) - base, CpuSnapshot.now()
    codes = fleet.stop()
    on_topic = await count_records(bench.endpoints.kafka_bootstrap, fleet.topics.taps)
    print_tally(tally, on_topic)
    print(f"  CPU: ingest {used:.1f} s; {cpu1.since(cpu0, used)}; exit codes {codes}")
    return bench.add(
        Result(f"(c) ingest alone, {streams} streams", tally.sent, "taps", elapsed, used)
    )


# ---------------------------------------------------------------- the whole run


def print_table(bench: Bench) -> None:
    """The figures of every phase, side by side."""
    aims = {"(a)": "aim >= 10,000", "(b)": "aim >= 10,000", "(c) end": "aim >= 3,000"}
    print("\nSummary")
    print(
        f"  {'phase':<38} {'count':>10} {'seconds':>8} {'per second':>12} {'per CPU s':>10}  notes"
    )
    for r in bench.results:
        aim = next((a for prefix, a in aims.items() if r.label.startswith(prefix)), "")
        note = "; ".join(n for n in (r.note, aim) if n)
        print(
            f"  {r.label:<38} {r.count:>10,} {r.seconds:>8.1f} {r.rate:>8,.0f} {r.unit[0]}/s "
            f"{r.per_cpu_second:>10,.0f}  {note}"
        )
    for ratio in bench.ratios:
        print(f"  ratio {ratio}")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"  machine: {os.cpu_count()} CPUs, load average {load} (1, 5, 15 min)")


def scan_logs(bench: Bench) -> None:
    """Count ERROR and Traceback lines in every service log of the run."""
    print(f"\nService logs under {bench.work_dir}")
    for log in sorted(bench.work_dir.rglob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        errors = sum('"ERROR"' in line for line in lines)  # JSON lines: "level": "ERROR"
        tracebacks = sum("Traceback" in line for line in lines)
        print(
            f"  {log.relative_to(bench.work_dir)}: {len(lines)} lines, {errors} ERROR, "
            f"{tracebacks} Traceback"
        )


async def drop_schemas(bench: Bench) -> None:
    """Drop the PostgreSQL schemas of the run; Kafka topics are left in place."""
    schemas = sorted(
        {fleet.schema(label.split("-")[0]) for fleet in bench.fleets for label in fleet.processes}
    )
    conn = await asyncpg.connect(bench.endpoints.pg_dsn)
    try:
        existing = await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname = any($1::text[])", schemas
        )
        schemas = sorted(row["nspname"] for row in existing)
        for schema in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
    prefixes = " ".join(fleet.topics.prefix for fleet in bench.fleets)
    print(f"\nDropped {len(schemas)} schemas; Kafka topics kept (prefixes {prefixes})")


async def run(args: argparse.Namespace, bench: Bench) -> None:
    """Every phase the arguments ask for, in order."""
    catalog = load_catalog([DEFAULT_FEED])
    day = yesterday()
    print(f"Clearway pipeline bench {bench.run_id}: service day {day}, logs in {bench.work_dir}")
    try:
        if not args.skip_backlog:
            await backlog_phases(bench, catalog, day, args.taps, args.fares_instances)
        if not args.skip_e2e:
            await end_to_end(bench, day, args.e2e_cards, args.streams)
    finally:
        bench.stop_all()
        await drop_schemas(bench)
    print_table(bench)
    scan_logs(bench)


async def backlog_phases(
    bench: Bench, catalog: FareCatalog, day: date, taps: int, instances: Sequence[int]
) -> None:
    """(a) for each instance count, then (b) on the journeys of the first (1-instance) run."""
    print("\nGenerating the backlog day")
    t0 = time.perf_counter()
    backlog = backlog_taps(catalog, day, taps)
    print(
        f"  generated in {time.perf_counter() - t0:.1f} s; order on the topic: by tapped_at, "
        "then tap_id (as live validators stream)"
    )
    print("\nOffline engine over the same taps")
    offline = bench.add(offline_engine(catalog, backlog))
    messages: list[Message] = [(t.card_token.encode(), t.SerializeToString(), []) for t in backlog]
    del backlog
    runs = {n: await fares_catch_up(bench, messages, n, offline) for n in instances}
    del messages
    source = runs.get(1) or runs[instances[0]]
    for service in ("settlement", "accounts"):
        await journeys_catch_up(bench, source, service)


def main() -> int:
    """Parse arguments, run, and stop every process started, also on errors and signals."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--taps", type=int, default=1_000_000, help="backlog size")
    parser.add_argument("--fares-instances", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--e2e-cards", type=int, default=40_000)
    parser.add_argument("--streams", type=int, default=16, help="validator streams")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--skip-backlog", action="store_true")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    run_id = f"bench-{int(time.time())}"
    work_dir = Path(tempfile.mkdtemp(prefix=f"clearway-{run_id}-"))
    pki_dir = work_dir / "pki"
    ensure_pki(pki_dir, load_scheme(DEFAULT_SCHEME, agencies_from=DEFAULT_FEED))
    bench = Bench(Endpoints.from_env(), run_id, work_dir, pki_dir)
    try:
        asyncio.run(run(args, bench))
    finally:
        bench.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
