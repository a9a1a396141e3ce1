"""History reads: signed-in travellers reading their cards' journeys from accounts.

Run: .venv/bin/python bench/accounts_history.py [--journeys N] [--cards C]
         [--callers K ...] [--seconds S] [--workers W] [--clients P]

`clearway serve accounts` (W processes behind one port, default 1; its own topics and
schema) is given a day of N priced journeys (default 100,000) over C cards through its
`journeys` topic, and waits until it stored them. 32 travellers sign up, sign in and add
cards. Then, for each K in --callers (default 1, 8, 32), K concurrent callers (spread over
--clients processes, default 2), each on its own connection, read their cards' first
history page (20 journeys) with `AccountsService.ListJourneys` for S seconds: requests/s
and p50/p99 latency. In the same run, the baseline: the same pages read straight from
PostgreSQL by K callers (in this process) with the service's own repository query
(JourneyRepository.history), as a ratio (service / baseline requests/s).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
from pipeline import BenchFleet  # bench/ is on sys.path when a bench script runs

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.common.v1.money_pb2 import Money
from clearway.db import create_pool
from clearway.events.v1.events_pb2 import PricedJourney
from clearway.infra.endpoints import Endpoints
from clearway.kafka import ensure_topics, idempotent_producer
from services.accounts.adapters.journey_repository import JourneyRepository
from services.accounts.entrypoints.cli import sign_in

TRAVELLERS = 32
PAGE = 20
PASSWORD = "bench traveller password"
T0 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


def journey(card: str, n: int) -> PricedJourney:
    """The n-th journey of a card in the day."""
    start = T0 + timedelta(minutes=7 * n)
    j = PricedJourney(
        journey_id=f"j-{card}-{n}",
        card_token=card,
        revision=1,
        service_day=start.date().isoformat(),
        charge=Money(amount_minor=280, currency="GBP"),
        amount_before_caps=Money(amount_minor=280, currency="GBP"),
        fare_version="v1",
    )
    leg = j.legs.add(leg_id=f"{j.journey_id}:0", operator_id="LUL", from_stop_id="KGX")
    leg.to_stop_id = "OXC"
    leg.entry_at.FromDatetime(start)
    leg.exit_at.FromDatetime(start + timedelta(minutes=14))
    leg.fare.CopyFrom(Money(amount_minor=280, currency="GBP"))
    return j


@dataclass
class Run:
    label: str
    requests: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def populate(endpoints: Endpoints, topic: str, cards: list[str], journeys: int) -> None:
    producer = idempotent_producer(endpoints.kafka_bootstrap, linger_ms=20)
    await producer.start()
    try:
        per_card = max(1, journeys // len(cards))
        sent = 0
        for n in range(per_card):
            batch = [
                producer.send(topic, journey(card, n).SerializeToString(), key=card.encode())
                for card in cards
            ]
            await asyncio.gather(*batch)
            sent += len(batch)
        await producer.flush()
        print(f"  published {sent:,} journeys of {len(cards):,} cards")
    finally:
        await producer.stop()


async def wait_stored(pool: asyncpg.Pool, want: int, limit_s: float = 600) -> float:
    started = time.monotonic()
    while True:
        have = await pool.fetchval("SELECT count(*) FROM journeys_latest")
        if have >= want:
            return time.monotonic() - started
        if time.monotonic() - started > limit_s:
            raise TimeoutError(f"accounts stored {have:,} of {want:,} journeys")
        await asyncio.sleep(0.5)


async def _callers(
    target: str,
    sessions: list[tuple[tuple[str, str], ...]],
    owned: list[list[str]],
    indexes: list[int],
    stop_at: float,
) -> list[float]:
    """Callers `indexes`, each on its own connection, until `stop_at` (time.time());
    their latencies in ms."""
    latencies: list[float] = []
    # A connection per caller (not one shared channel), so that the kernel spreads them
    # over the workers behind the port, as it spreads travellers' connections.
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in indexes
    ]

    async def caller(i: int, channel: grpc.aio.Channel) -> None:
        stub = accounts_pb2_grpc.AccountsServiceStub(channel)
        metadata, cards, n = sessions[i % len(sessions)], owned[i % len(owned)], 0
        while time.time() < stop_at:
            card = cards[n % len(cards)]
            n += 1
            t = time.perf_counter()
            reply = await stub.ListJourneys(
                accounts_pb2.ListJourneysRequest(card_token=card, page_size=PAGE),
                metadata=metadata,
            )
            latencies.append((time.perf_counter() - t) * 1000)
            assert reply.journeys, "a card with no history"

    try:
        await asyncio.gather(*(caller(i, c) for i, c in zip(indexes, channels, strict=True)))
    finally:
        for c in channels:
            await c.close()
    return latencies


def _client_process(
    target: str,
    sessions: list[tuple[tuple[str, str], ...]],
    owned: list[list[str]],
    indexes: list[int],
    stop_at: float,
) -> list[float]:
    return asyncio.run(_callers(target, sessions, owned, indexes, stop_at))


async def callers_over_grpc(
    target: str,
    sessions: list[tuple[tuple[str, str], ...]],
    owned: list[list[str]],
    k: int,
    seconds: float,
    *,
    clients: int,
) -> Run:
    """K callers spread over `clients` client processes (the client's own gRPC work must
    not be what is measured)."""
    processes = max(1, min(clients, k))
    lanes = [list(range(k))[p::processes] for p in range(processes)]
    started = time.time() + 1.0  # every process connected and ready by then
    stop_at = started + seconds
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(processes, mp_context=mp.get_context("spawn")) as pool:
        futures = [
            loop.run_in_executor(pool, _client_process, target, sessions, owned, lane, stop_at)
            for lane in lanes
        ]
        results = await asyncio.gather(*futures)
    latencies = [x for r in results for x in r]
    return Run(f"ListJourneys, {k} callers", len(latencies), seconds, latencies)


async def callers_over_postgres(
    pool: asyncpg.Pool, owned: list[list[str]], k: int, seconds: float
) -> Run:
    repository = JourneyRepository(pool)
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds

    async def caller(i: int) -> None:
        cards, n = owned[i % len(owned)], 0
        while time.monotonic() < stop_at:
            card = cards[n % len(cards)]
            n += 1
            t = time.perf_counter()
            rows = await repository.history(card, None, PAGE + 1)
            latencies.append((time.perf_counter() - t) * 1000)
            assert rows

    started = time.monotonic()
    await asyncio.gather(*(caller(i) for i in range(k)))
    return Run(
        f"repository query, {k} callers", len(latencies), time.monotonic() - started, latencies
    )


def report(rows: list[tuple[int, Run, Run]]) -> None:
    """The table and the aims."""
    print("\nSummary (ListJourneys over gRPC, signed in, page of 20, Redis page cache on)")
    print(" callers   req/s  p50 ms  p99 ms   mean ms   baseline req/s  ratio")
    for k, service, base in rows:
        print(
            f" {k:>7} {service.rate:>7,.0f} {service.pct(0.5):>7.1f} {service.pct(0.99):>7.1f}"
            f" {statistics.fmean(service.latencies_ms):>9.1f} {base.rate:>16,.0f}"
            f" {service.rate / base.rate:>6.2f}"
        )
    best = max(rows, key=lambda r: r[1].rate)[1]
    at32 = next((s for k, s, _ in rows if k == 32), None)
    print("\nAims (issue 10)")
    if at32 is not None:
        met = "met" if at32.pct(0.99) <= 10 else "NOT met"
        print(f"  p99 <= 10 ms at 32 callers: {met} ({at32.pct(0.99):.1f} ms)")
    met = "met" if best.rate >= 5000 else "NOT met"
    print(f"  >= 5,000 req/s: {met} (best {best.rate:,.0f})")


async def run(args: argparse.Namespace) -> int:
    endpoints = Endpoints.from_env()
    run_id = f"bench-history-{int(time.time())}"
    work = Path(tempfile.mkdtemp(prefix="clearway-history-bench-"))
    fleet = BenchFleet(run_id, work, work / "pki")
    os.environ["CLEARWAY_WORKERS"] = str(args.workers)  # BenchFleet's env starts from ours
    topics = fleet.topics
    await ensure_topics(endpoints.kafka_bootstrap, topics.all(), partitions=6)
    labels = fleet.spawn(["accounts"])
    rc = 0
    try:
        await fleet.wait_serving(labels=labels)
        target = f"127.0.0.1:{fleet.ports['accounts']}"
        schema = fleet.env_for("accounts")["CLEARWAY_DB_SCHEMA"]
        pool = await create_pool(endpoints.pg_dsn, schema)
        cards = [f"tok_{uuid.uuid4().hex[:20]}" for _ in range(args.cards)]
        print(
            f"History reads: {args.journeys:,} journeys, {args.cards:,} cards, schema {schema},"
            f" {args.workers} accounts process(es)"
        )
        t = time.monotonic()
        await populate(endpoints, topics.journeys, cards, args.journeys)
        stored_s = await wait_stored(pool, (args.journeys // args.cards) * args.cards)
        print(
            f"  stored by accounts {time.monotonic() - t:.1f} s after the first send "
            f"({stored_s:.1f} s waiting after the last)"
        )
        per = max(1, min(50, len(cards) // TRAVELLERS))
        owned = [cards[i * per : (i + 1) * per] for i in range(TRAVELLERS)]
        sessions = []
        async with grpc.aio.insecure_channel(target) as channel:
            for i, mine in enumerate(owned):
                email = f"{run_id}-{i}@example.org"
                metadata = await sign_in(channel, email, PASSWORD, sign_up=True)
                stub = accounts_pb2_grpc.TravellerServiceStub(channel)
                for card in mine:
                    await stub.AddCard(
                        accounts_pb2.AddCardRequest(card_token=card), metadata=metadata
                    )
                sessions.append(metadata)
        print(f"  {TRAVELLERS} travellers signed in, {per} cards each")
        rows = []
        for k in args.callers:
            service = await callers_over_grpc(
                target, sessions, owned, k, args.seconds, clients=args.clients
            )
            base = await callers_over_postgres(pool, owned, k, args.seconds)
            rows.append((k, service, base))
            print(
                f"  {k:>2} callers: {service.rate:,.0f} req/s, p50 {service.pct(0.5):.1f} ms, "
                f"p99 {service.pct(0.99):.1f} ms; repository query {base.rate:,.0f} req/s "
                f"(p99 {base.pct(0.99):.1f} ms); ratio {service.rate / base.rate:.2f}"
            )
        await pool.close()
        report(rows)
    except Exception as exc:
        print(f"bench failed: {exc!r}", file=sys.stderr)
        rc = 1
    finally:
        codes = fleet.stop()
        print(f"  stopped (exit codes {codes}); logs in {work}")
    return rc


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--journeys", type=int, default=100_000)
    parser.add_argument("--cards", type=int, default=10_000)
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1, help="accounts processes behind one port")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
