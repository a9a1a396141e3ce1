"""Ingest benchmark: signed batches from K concurrent device streams, against a bare producer.

Run: .venv/bin/python bench/ingest.py [--taps N] [--streams K ...] [--batches B ...]
         [--workers W ...] [--clients P] [--window N] [--profile] [--quick]

For each worker count W (`clearway serve ingest`, CLEARWAY_WORKERS=W: W processes behind
one port, each with its own Kafka transactional writer) and each configuration of K device
streams x batches of B taps (--taps in all, split between the K devices):
- every batch is built, signed by its device (Ed25519) and serialized before the clock
  starts; the devices are fresh (new ids, sequence numbers from 1), so no tap is a duplicate;
- the streams run in P client processes (--clients), one TLS connection per device (so the
  kernel spreads them over the workers), each stream keeping at most --window batches
  unanswered (the server reads ahead 4 per stream);
- taps/s = accepted taps / wall time from the first request written to the last response
  read; ack latency = from writing a request to reading its response (p50, p99 over
  batches); every ack must be ACCEPTED;
- then, in the same run, a bare AIOKafkaProducer (acks=all, idempotent, linger 0 as ingest's
  writer) in this process sends the same records ingest wrote (same key: the card token;
  same value bytes; a traceparent header as ingest adds) in the same K lanes x B batches
  (clearway.kafka.publish_many, as ingest does) to a topic of the same partition count;
  the ratio ingest / bare is reported.
CPU of the ingest workers, the client processes, Kafka/PostgreSQL/Redis and the rest of the
machine is shown per configuration. --profile runs the workers under cProfile (through a
sitecustomize hook; no service code changes) and prints the top functions; figures of a
profiled run carry the profiler's overhead. Topics are kept, the run's schema is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import pstats
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg
import grpc
import redis.asyncio as aioredis
from pipeline import (  # bench/ is on sys.path when a bench script runs
    BenchFleet,
    CpuSnapshot,
    count_records,
    process_cpu_seconds,
)

from clearway.events.v1 import events_pb2
from clearway.infra.endpoints import Endpoints
from clearway.ingest.v1 import ingest_pb2
from clearway.kafka import ensure_topics, idempotent_producer, publish_many
from clearway.pki import secure_channel
from clearway.scheme.file import load_scheme
from services.demo import _serving, ensure_pki
from services.fares.app import DEFAULT_FEED
from services.ingest.device_client import DeviceIdentity
from services.ingest.simulator.day import SimulatedDevice
from services.ingest.simulator.stream import FLEET_SECRET, register_devices
from services.settlement.app import DEFAULT_SCHEME

STREAM_TAPS = "/clearway.ingest.v1.IngestService/StreamTaps"
OPERATOR = "bench-operator"
STOPS = tuple(f"bench-stop-{n}" for n in range(1, 9))
ACCEPTED = ingest_pb2.ACK_STATUS_ACCEPTED
STATUS_NAMES = {v: k for k, v in ingest_pb2.AckStatus.items()}
WARM_UP = (4, 50, 2_000)  # streams, batch, taps: sent to each fleet before anything is timed
RESULT_TIMEOUT_S = 900.0
MAX_TAP_AGE_S = 3600
GROUP_TAPS = 2_000  # the bare producer's records per send, as ingest's max_txn_taps
PROFILE_HOOK = '''\
"""Written by bench/ingest.py --profile: profile this process (an ingest worker) with
cProfile and dump the figures at exit."""
import atexit, cProfile, os
_dir = os.environ.get("CLEARWAY_BENCH_PROFILE_DIR")
if _dir and os.environ.get("CLEARWAY_WORKERS", "1") == "1":  # workers, not the supervisor
    _profile = cProfile.Profile()
    _profile.enable()
    atexit.register(lambda: _profile.dump_stats(f"{_dir}/ingest-{os.getpid()}.prof"))
'''
Message = tuple[bytes, bytes, list[tuple[str, bytes]]]


# ---------------------------------------------------------------- the workload


@dataclass
class Workload:
    """One configuration's devices, their signed requests and the records ingest will write."""

    streams: int
    batch: int
    devices: list[SimulatedDevice]
    requests: list[list[bytes]]  # per device: serialized StreamTapsRequest, in order
    records: list[list[list[Message]]]  # per device, per batch: the records on `taps`

    @property
    def taps(self) -> int:
        """Taps in all."""
        return sum(len(batch) for lane in self.records for batch in lane)


def build_workload(tag: str, streams: int, batch: int, taps: int) -> Workload:
    """`taps` valid taps of `streams` fresh devices (ids tagged `tag`), in signed batches."""
    now = time.time()
    devices, requests, records = [], [], []
    for d in range(streams):
        device = SimulatedDevice(f"{tag}-d{d:03d}", OPERATOR, STOPS, ())
        identity = DeviceIdentity.derived(device.device_id, FLEET_SECRET)
        count = taps // streams + (1 if d < taps % streams else 0)
        lane_requests, lane_records = [], []
        for first in range(1, count + 1, batch):
            sequence = range(first, min(first + batch, count + 1))
            batch_taps = [tap_of(device, n, now) for n in sequence]
            signed = identity.sign_batch(batch_taps)
            lane_requests.append(ingest_pb2.StreamTapsRequest(signed=signed).SerializeToString())
            lane_records.append(records_of(batch_taps, now))
        devices.append(device)
        requests.append(lane_requests)
        records.append(lane_records)
    return Workload(streams, batch, devices, requests, records)


def tap_of(device: SimulatedDevice, sequence_number: int, now: float) -> events_pb2.Tap:
    """A valid tap: a scheme token, an allowed stop, a minute ago (not late)."""
    tap = events_pb2.Tap(
        device_id=device.device_id,
        sequence_number=sequence_number,
        card_token=f"tok_{secrets.token_hex(10)}",
        stop_id=STOPS[sequence_number % len(STOPS)],
        kind=events_pb2.TAP_KIND_ENTRY if sequence_number % 2 else events_pb2.TAP_KIND_EXIT,
        operator_id=device.operator_id,
        utc_offset_minutes=60,
    )
    at = now - 60 + sequence_number / 1000
    tap.tapped_at.seconds = int(at)
    tap.tapped_at.nanos = int((at % 1) * 1e9)
    return tap


def records_of(taps: Sequence[events_pb2.Tap], now: float) -> list[Message]:
    """The records ingest writes for `taps` (services/ingest/service_layer/accepting.py):
    key = card token, the tap with its id and receipt time, a W3C traceparent header."""
    headers = [("traceparent", f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01".encode())]
    result = []
    for tap in taps:
        record = events_pb2.Tap()
        record.CopyFrom(tap)
        record.tap_id = f"{tap.device_id}:{tap.sequence_number}"
        record.received_at.seconds = int(now)
        record.received_at.nanos = int((now % 1) * 1e9)
        result.append(
            (tap.card_token.encode(), record.SerializeToString(deterministic=True), headers)
        )
    return result


# ---------------------------------------------------------------- the client processes


@dataclass(frozen=True)
class ClientJob:
    """What one client process sends (pickled to it)."""

    target: str
    pki_dir: Path
    lanes: list[list[bytes]]  # per stream (device): serialized requests, in order
    window: int


def client_process(job: ClientJob, go: MpEvent, pipe: Connection) -> None:
    """One client process: connect one channel per lane, say ready, wait for `go`, stream
    every lane, send back what happened."""
    try:
        result = asyncio.run(_client(job, go, pipe))
    except BaseException as exc:  # reported to the parent, which fails the run
        result = {"error": repr(exc)}
    pipe.send(result)
    pipe.close()


async def _client(job: ClientJob, go: MpEvent, pipe: Connection) -> dict[str, Any]:
    # A local subchannel pool per channel: one TCP+TLS connection per device, as in the
    # field, so SO_REUSEPORT spreads the devices over the workers.
    channels = [
        secure_channel(
            job.target, job.pki_dir, None, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in job.lanes
    ]
    try:
        await asyncio.wait_for(
            asyncio.gather(*(channel.channel_ready() for channel in channels)), 60
        )
        pipe.send("ready")
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        cpu0 = time.process_time()
        outcomes = await asyncio.gather(
            *(
                _stream(channel, lane, job.window)
                for channel, lane in zip(channels, job.lanes, strict=True)
            )
        )
        cpu = time.process_time() - cpu0
    finally:
        for channel in channels:
            await channel.close()
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    for outcome in outcomes:
        statuses.update(outcome.statuses)
        latencies.extend(outcome.latencies)
    return {
        "first_sent": min(o.first_sent for o in outcomes),
        "last_acked": max(o.last_acked for o in outcomes),
        "latencies": latencies,
        "statuses": dict(statuses),
        "cpu": cpu,
    }


@dataclass
class StreamOutcome:
    """One stream's figures (monotonic clock: the same across processes on Linux)."""

    first_sent: float = float("inf")
    last_acked: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)


async def _stream(channel: grpc.aio.Channel, requests: list[bytes], window: int) -> StreamOutcome:
    """Write the pre-serialized requests, at most `window` unanswered; time each answer."""
    outcome = StreamOutcome()
    if not requests:
        return outcome
    call: grpc.aio.StreamStreamCall[bytes, ingest_pb2.StreamTapsResponse] = channel.stream_stream(
        STREAM_TAPS,
        request_serializer=None,  # the requests are bytes already
        response_deserializer=ingest_pb2.StreamTapsResponse.FromString,
    )()
    room = asyncio.Semaphore(window)
    sent_at: list[float] = []

    async def write() -> None:
        for request in requests:
            await room.acquire()
            sent_at.append(time.monotonic())
            await call.write(request)
        await call.done_writing()

    writer = asyncio.create_task(write())
    try:
        for i in range(len(requests)):
            response = await call.read()
            now = time.monotonic()
            if not isinstance(response, ingest_pb2.StreamTapsResponse):  # grpc.aio.EOF
                raise RuntimeError(f"the stream ended after {i} of {len(requests)} responses")
            room.release()
            outcome.latencies.append(now - sent_at[i])
            accepted = sum(1 for ack in response.acks if ack.status == ACCEPTED)
            outcome.statuses["ACCEPTED"] += accepted
            if accepted != len(response.acks):
                for ack in response.acks:
                    if ack.status != ACCEPTED:
                        name = STATUS_NAMES.get(ack.status, str(ack.status))
                        outcome.statuses[f"{name} {ack.reason_code}".strip()] += 1
        outcome.last_acked = time.monotonic()
        await writer
    finally:
        writer.cancel()
    outcome.first_sent = sent_at[0]
    return outcome


# ---------------------------------------------------------------- the fleet


@dataclass
class IngestFleet(BenchFleet):
    """Ingest alone, `workers` processes behind one port (`clearway serve --workers`)."""

    workers: int = 1
    profile_dir: Path | None = None

    def env_for(self, service: str) -> dict[str, str]:
        """BenchFleet's environment, the worker count, and the profiling hook if asked."""
        env = {
            **super().env_for(service),
            "CLEARWAY_WORKERS": str(self.workers),
            # The bench's taps are a minute old: accept up to an hour, keep dedup claims the
            # shortest time ingest allows for that (BenchFleet's 3600 s is below its floor);
            # the run's Redis keys are deleted at the end anyway.
            "CLEARWAY_MAX_TAP_AGE_S": str(MAX_TAP_AGE_S),
            "CLEARWAY_DEDUP_TTL_S": str(MAX_TAP_AGE_S + 86_400 + 60),
        }
        if self.profile_dir is not None:
            hook = self.profile_dir / "hook"
            hook.mkdir(parents=True, exist_ok=True)
            (hook / "sitecustomize.py").write_text(PROFILE_HOOK)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH")]))
            env["CLEARWAY_BENCH_PROFILE_DIR"] = str(self.profile_dir)
        return env

    def worker_pids(self) -> list[int]:
        """The processes doing the work: the supervisor's children, or the one process."""
        pid = self.processes["ingest"].pid
        if self.workers == 1:
            return [pid]
        children = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except (OSError, IndexError):
                    continue
                if int(stat[1]) == pid:
                    children.append(int(entry))
        return children

    def worker_cpu(self) -> float:
        """CPU seconds the workers have used so far."""
        return sum(process_cpu_seconds(pid) for pid in self.worker_pids())

    async def wait_all_serving(self, timeout_s: float = 120.0) -> None:
        """SERVING on 20 fresh health connections in a row (the kernel spreads connections
        over the workers, so all of them answer SERVING), and every worker running."""
        deadline = time.monotonic() + timeout_s
        await self.wait_serving(timeout_s)
        row = 0
        while row < 20:
            row = row + 1 if await _serving_once(self.health_ports["ingest"]) else 0
            if time.monotonic() > deadline:
                raise TimeoutError(f"ingest workers not all SERVING after {timeout_s:.0f} s")
            self.check_alive(["ingest"])
        if len(self.worker_pids()) != self.workers:
            raise RuntimeError(f"{len(self.worker_pids())} workers running, not {self.workers}")


async def _serving_once(port: int) -> bool:
    return await _serving(f"127.0.0.1:{port}")


# ---------------------------------------------------------------- one configuration


@dataclass
class Row:
    """One line of the table."""

    workers: int
    streams: int
    batch: int
    taps: int
    accepted: int
    seconds: float
    p50_ms: float
    p99_ms: float
    server_cpu: float
    client_cpu: float
    bare_seconds: float = 0.0
    bare_p50_ms: float = 0.0
    bare_p99_ms: float = 0.0
    bare_cpu: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Accepted taps per second."""
        return self.accepted / self.seconds if self.seconds > 0 else 0.0

    @property
    def bare_rate(self) -> float:
        """The bare producer's records per second."""
        return self.taps / self.bare_seconds if self.bare_seconds > 0 else 0.0

    @property
    def ratio(self) -> float:
        """Ingest / bare producer, taps per second."""
        return self.rate / self.bare_rate if self.bare_rate > 0 else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


async def run_ingest(
    fleet: IngestFleet, work: Workload, clients: int, window: int
) -> tuple[float, float, list[float], Counter[str], float, float]:
    """Register the devices, start the client processes, time them. Returns first sent,
    last acked, latencies, statuses, client CPU seconds and worker CPU seconds."""
    await register_devices(f"127.0.0.1:{fleet.admin_ports['ingest']}", fleet.pki_dir, work.devices)
    target = f"127.0.0.1:{fleet.ports['ingest']}"
    context = mp.get_context("spawn")
    go = context.Event()
    procs: list[tuple[Any, Connection]] = []
    count = max(1, min(clients, work.streams))
    try:
        for c in range(count):
            mine, theirs = context.Pipe()
            lanes = work.requests[c::count]
            proc = context.Process(
                target=client_process,
                args=(ClientJob(target, fleet.pki_dir, lanes, window), go, theirs),
                daemon=True,
            )
            proc.start()
            theirs.close()
            procs.append((proc, mine))
        for _, pipe in procs:
            message = await _receive(pipe, 120.0)
            if message != "ready":
                raise RuntimeError(f"client process: {message!r}")
        cpu0 = fleet.worker_cpu()
        go.set()
        results = [await _receive(pipe, RESULT_TIMEOUT_S, fleet) for _, pipe in procs]
        server_cpu = fleet.worker_cpu() - cpu0
    finally:
        for proc, pipe in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
            pipe.close()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError(f"client process failed: {errors[0]}")
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    for r in results:
        statuses.update(r["statuses"])
        latencies.extend(r["latencies"])
    return (
        min(r["first_sent"] for r in results),
        max(r["last_acked"] for r in results),
        latencies,
        statuses,
        sum(r["cpu"] for r in results),
        server_cpu,
    )


async def _receive(pipe: Connection, timeout_s: float, fleet: IngestFleet | None = None) -> Any:
    """The next message on `pipe`, waiting without blocking the loop; fails when ingest
    died or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not pipe.poll():
        if fleet is not None:
            fleet.check_alive(["ingest"])
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer from a client process after {timeout_s:.0f} s")
        await asyncio.sleep(0.05)
    return pipe.recv()


async def run_bare(
    bootstrap: str, topic: str, work: Workload, window: int
) -> tuple[float, list[float], float]:
    """The same records, lanes and batches through one idempotent acks=all producer (linger
    0, as ingest's writer). The lanes hand their batches to one sender that sends what has
    gathered, up to GROUP_TAPS records, in one `publish_many` at a time: ingest's writer
    without Redis and the transaction. (Several `publish_many` at once on one producer are
    refused after a while: aiokafka's add_batch shrinks its wait for a partition's slot by
    the total time waited at every wake-up, so busy partitions raise KafkaTimeoutError.)
    Returns wall seconds, batch latencies and this process's CPU seconds."""
    producer = idempotent_producer(bootstrap, linger_ms=0)
    await producer.start()
    latencies: list[float] = []
    queue: deque[tuple[list[Message], asyncio.Future[None]]] = deque()
    wake = asyncio.Event()

    async def sender() -> None:
        while True:
            while not queue:
                wake.clear()
                await wake.wait()
            taken: list[tuple[list[Message], asyncio.Future[None]]] = []
            count = 0
            while queue and (not taken or count + len(queue[0][0]) <= GROUP_TAPS):
                taken.append(queue.popleft())
                count += len(taken[-1][0])
            try:
                await publish_many(producer, topic, [m for batch, _ in taken for m in batch])
            except Exception as exc:
                for _, future in taken:
                    future.set_exception(exc)
                continue
            for _, future in taken:
                future.set_result(None)

    async def one(batch: list[Message], room: asyncio.Semaphore) -> None:
        t0 = time.monotonic()
        future = asyncio.get_running_loop().create_future()
        queue.append((batch, future))
        wake.set()
        try:
            await future
        finally:
            room.release()
        latencies.append(time.monotonic() - t0)

    async def lane(batches: list[list[Message]]) -> None:
        room = asyncio.Semaphore(window)
        tasks = []
        for batch in batches:
            await room.acquire()
            tasks.append(asyncio.create_task(one(batch, room)))
        await asyncio.gather(*tasks)

    sending = asyncio.create_task(sender())
    try:
        await publish_many(producer, topic, work.records[0][0][:1])  # metadata, connections
        cpu0, started = time.process_time(), time.monotonic()
        await asyncio.gather(*(lane(batches) for batches in work.records))
        return time.monotonic() - started, latencies, time.process_time() - cpu0
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        await producer.stop()


async def run_config(
    fleet: IngestFleet,
    bootstrap: str,
    args: argparse.Namespace,
    streams: int,
    batch: int,
) -> Row:
    """One configuration: build, ingest timed, bare producer timed."""
    t0 = time.perf_counter()
    work = build_workload(f"{fleet.run_id}-k{streams}-b{batch}", streams, batch, args.taps)
    print(
        f"\n  {fleet.workers} worker(s), {streams} streams x batches of {batch}: "
        f"{work.taps:,} taps built and signed in {time.perf_counter() - t0:.1f} s (untimed)"
    )
    snap0 = CpuSnapshot.now()
    first, last, latencies, statuses, client_cpu, server_cpu = await run_ingest(
        fleet, work, args.clients, args.window
    )
    snap1 = CpuSnapshot.now()
    row = Row(
        fleet.workers,
        streams,
        batch,
        work.taps,
        statuses.get("ACCEPTED", 0),
        last - first,
        percentile(latencies, 0.5) * 1000,
        percentile(latencies, 0.99) * 1000,
        server_cpu,
        client_cpu,
    )
    others = {k: v for k, v in statuses.items() if k != "ACCEPTED"}
    if others or row.accepted != work.taps:
        row.problems.append(f"not all ACCEPTED: {others}")
    print(
        f"  ingest: {row.rate:,.0f} taps/s ({row.accepted:,} accepted in {row.seconds:.2f} s), "
        f"ack p50 {row.p50_ms:.1f} ms, p99 {row.p99_ms:.1f} ms over {len(latencies):,} batches"
        + (f"  <-- {row.problems[-1]}" if row.problems else "")
    )
    wall = max(snap1.at - snap0.at, 1e-9)
    print(
        f"  CPU (cores): ingest workers {server_cpu / row.seconds:.2f}, client processes "
        f"{client_cpu / row.seconds:.2f} (over the timed span); over the whole step "
        f"({wall:.1f} s): {snap1.since(snap0, server_cpu + client_cpu)}"
    )
    bare_topic = f"{fleet.topics.prefix}bench.bare.taps"
    seconds, bare_latencies, bare_cpu = await run_bare(bootstrap, bare_topic, work, args.window)
    row.bare_seconds, row.bare_cpu = seconds, bare_cpu
    row.bare_p50_ms = percentile(bare_latencies, 0.5) * 1000
    row.bare_p99_ms = percentile(bare_latencies, 0.99) * 1000
    print(
        f"  bare producer: {row.bare_rate:,.0f} taps/s ({seconds:.2f} s, {bare_cpu / seconds:.2f} "
        f"cores), batch p50 {row.bare_p50_ms:.1f} ms, p99 {row.bare_p99_ms:.1f} ms; "
        f"ingest / bare {row.ratio:.2f}"
    )
    return row


# ---------------------------------------------------------------- the run


@dataclass
class Run:
    """What the whole run shares."""

    run_id: str
    work_dir: Path
    pki_dir: Path
    endpoints: Endpoints
    fleets: list[IngestFleet] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)


async def run_workers(run: Run, args: argparse.Namespace, workers: int) -> None:
    """One fleet of `workers` ingest processes through every configuration."""
    fleet = IngestFleet(
        f"{run.run_id}-w{workers}",
        run.work_dir / f"w{workers}",
        run.pki_dir,
        workers=workers,
        profile_dir=(run.work_dir / f"profile-w{workers}") if args.profile else None,
    )
    run.fleets.append(fleet)
    bootstrap = run.endpoints.kafka_bootstrap
    topics = fleet.topics
    await ensure_topics(bootstrap, topics.all(), partitions=args.partitions)
    await ensure_topics(bootstrap, [f"{topics.prefix}bench.bare.taps"], partitions=args.partitions)
    print(f"\n{workers} ingest worker(s), prefix {topics.prefix}, {args.partitions} partitions")
    t0 = time.monotonic()
    fleet.spawn(["ingest"])
    await fleet.wait_all_serving()
    print(f"  {workers} worker(s) SERVING after {time.monotonic() - t0:.1f} s")
    try:
        streams, batch, taps = WARM_UP
        work = build_workload(f"{fleet.run_id}-warm", streams, batch, taps)
        _, _, _, statuses, _, _ = await run_ingest(fleet, work, 1, args.window)
        print(f"  warm-up: {taps:,} taps, {dict(statuses)}")
        expected = taps
        for streams in args.streams:
            for batch in args.batches:
                row = await run_config(fleet, bootstrap, args, streams, batch)
                run.rows.append(row)
                expected += row.taps
    finally:
        codes = fleet.stop()
    on_topic = await count_records(bootstrap, topics.taps)
    print(
        f"  stopped (exit codes {codes}); {on_topic:,} records on {topics.taps}, "
        f"{expected:,} taps sent"
        + ("" if on_topic == expected else "  <-- differs: not exactly once")
    )
    if args.profile:
        print_profile(fleet)


def print_profile(fleet: IngestFleet) -> None:
    """The workers' profiles, merged: the top functions by own time and by cumulative."""
    assert fleet.profile_dir is not None
    files = sorted(str(p) for p in fleet.profile_dir.glob("ingest-*.prof"))
    if not files:
        print(f"  no profile written under {fleet.profile_dir}")
        return
    stats = pstats.Stats(*files)
    print(f"\n  cProfile of {len(files)} worker(s) (wall-clock timer; includes start-up):")
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(30)


def print_table(run: Run, args: argparse.Namespace) -> None:
    """Every configuration side by side, then the aims."""
    print("\nSummary (taps/s = accepted taps / first request to last response; ack latency")
    print("per batch; srv cores = ingest workers' CPU / wall, /srv CPU s = taps per worker CPU")
    print("second; bare = aiokafka acks=all idempotent producer, same records and batches)")
    print(
        f"  {'W':>2} {'K':>3} {'B':>4} {'taps':>8} {'s':>6} {'taps/s':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'srv cores':>9} {'/srv CPU s':>10} {'cli cores':>9} {'bare/s':>8} "
        f"{'bare p99':>8} {'ratio':>5}"
    )
    for r in run.rows:
        print(
            f"  {r.workers:>2} {r.streams:>3} {r.batch:>4} {r.accepted:>8,} {r.seconds:>6.2f} "
            f"{r.rate:>8,.0f} {r.p50_ms:>7.1f} {r.p99_ms:>7.1f} "
            f"{r.server_cpu / r.seconds:>9.2f} {r.accepted / max(r.server_cpu, 1e-9):>10,.0f} "
            f"{r.client_cpu / r.seconds:>9.2f} "
            f"{r.bare_rate:>8,.0f} {r.bare_p99_ms:>8.1f} {r.ratio:>5.2f}"
            + (f"  {'; '.join(r.problems)}" if r.problems else "")
        )
    if not run.rows:
        return
    print("\nAims (issue 9)")
    best = max(run.rows, key=lambda r: r.rate)
    print(
        f"  >= 10,000 taps/s: {'met' if best.rate >= 10_000 else 'NOT met'} "
        f"(best {best.rate:,.0f} at {best.workers} worker(s), {best.streams} x {best.batch})"
    )
    for r in run.rows:
        if r.streams == 16 and r.batch == 50:
            print(
                f"  p99 ack < 50 ms at 16 x 50, {r.workers} worker(s): "
                f"{'met' if r.p99_ms < 50 else 'NOT met'} ({r.p99_ms:.1f} ms)"
            )
    half = [r for r in run.rows if r.ratio >= 0.5]
    best_ratio = max(run.rows, key=lambda r: r.ratio)
    print(
        f"  >= 0.5 x bare producer: {'met' if half else 'NOT met'} in {len(half)} of "
        f"{len(run.rows)} configurations (best {best_ratio.ratio:.2f} at "
        f"{best_ratio.workers} worker(s), {best_ratio.streams} x {best_ratio.batch})"
    )
    problems = [r for r in run.rows if r.problems]
    print(f"  every ack ACCEPTED: {'yes' if not problems else f'NO in {len(problems)} configs'}")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"  machine: {os.cpu_count()} CPUs, load average {load} (1, 5, 15 min)")


async def clean_up(run: Run) -> None:
    """Drop the run's ingest schemas (device registries) and Redis keys (claims, registry
    cache); Kafka topics are kept."""
    conn = await asyncpg.connect(run.endpoints.pg_dsn)
    try:
        for fleet in run.fleets:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{fleet.schema("ingest")}" CASCADE')
    finally:
        await conn.close()
    client = aioredis.from_url(run.endpoints.redis_url)
    deleted = 0
    try:
        for fleet in run.fleets:
            keys = [k async for k in client.scan_iter(f"ingest:{fleet.topics.prefix}*", 1000)]
            for i in range(0, len(keys), 1000):
                deleted += await client.unlink(*keys[i : i + 1000])
    finally:
        await client.aclose()
    prefixes = " ".join(fleet.topics.prefix for fleet in run.fleets)
    print(f"\nDropped the run's schemas and {deleted:,} Redis keys; topics kept ({prefixes})")


async def run_all(run: Run, args: argparse.Namespace) -> None:
    """Every worker count, then the table."""
    print(
        f"Clearway ingest bench {run.run_id}: {args.taps:,} taps per configuration, streams "
        f"{args.streams}, batches {args.batches}, workers {args.workers}, {args.clients} client "
        f"process(es), window {args.window}; logs in {run.work_dir}"
    )
    try:
        for workers in args.workers:
            await run_workers(run, args, workers)
    finally:
        for fleet in run.fleets:
            fleet.stop()
        await clean_up(run)
    print_table(run, args)


def main() -> int:
    """Parse arguments, run, and stop every process started, also on errors and signals."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--taps", type=int, default=100_000, help="taps per configuration")
    parser.add_argument("--streams", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--batches", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--window", type=int, default=4, help="unanswered batches per stream")
    parser.add_argument("--partitions", type=int, default=6, help="of the taps topics")
    parser.add_argument("--profile", action="store_true", help="cProfile the ingest workers")
    parser.add_argument(
        "--quick", action="store_true", help="10,000 taps, 16 streams x 50 only (a smoke run)"
    )
    args = parser.parse_args()
    if args.quick:
        args.taps, args.streams, args.batches = 10_000, [16], [50]
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    run_id = f"bench-ingest-{int(time.time())}"
    work_dir = Path(tempfile.mkdtemp(prefix=f"clearway-{run_id}-"))
    pki_dir = work_dir / "pki"
    ensure_pki(pki_dir, load_scheme(DEFAULT_SCHEME, agencies_from=DEFAULT_FEED))
    run = Run(run_id, work_dir, pki_dir, Endpoints.from_env())
    try:
        asyncio.run(run_all(run, args))
    finally:
        for fleet in run.fleets:
            fleet.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
