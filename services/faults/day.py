"""One fleet's network day: the five processes, the validators' taps, a retailer's top-ups
and the council's benefits, the closes, and everything the checks compare afterwards
(topics, the services' tables, the settlement files)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from pathlib import Path
from typing import TypeVar

import asyncpg
import grpc
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from clearway.auth import OPERATIONS, Principal
from clearway.events.v1 import events_pb2
from clearway.fares.v1 import fares_pb2, fares_pb2_grpc
from clearway.infra.endpoints import Endpoints
from clearway.kafka import Topics, client_options, ensure_topics, idempotent_producer, publish_many
from clearway.pki import secure_channel
from clearway.retry import retry_while
from clearway.scheme.model import Scheme
from clearway.settings import ADMIN_PORT_OFFSET
from clearway.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from services.demo import (
    Fleet,
    JourneyLog,
    read_journeys,
    report,
    verify_sets,
)
from services.demo_benefits import (
    RECONNECT_OPTIONS,
    BenefitsRun,
    patiently,
    run_benefits,
    wait_for_postings,
)
from services.fares.domain import FareData
from services.faults.injector import Injector
from services.ingest.simulator.day import SimulatedDay, devices_of
from services.ingest.simulator.stream import Tally, register_devices, send_day
from services.settlement.adapters.journey_lag import GroupLag

T = TypeVar("T")
PATIENCE_S = 900.0  # how long a client keeps retrying while a service or server is away
TOP_UP_CHUNKS = 8


@dataclass
class Traffic:
    """The day's inputs, the same for every fleet."""

    scheme: Scheme
    feed: FareData
    simulated: SimulatedDay
    top_ups: list[events_pb2.TopUp]
    day: date
    seed: int
    validators: int = 1  # one stream: the taps reach the topic in the same order each run
    batch_size: int = 500


@dataclass
class Outcome:
    """What one fleet did with the day."""

    label: str
    fleet: Fleet
    tally: Tally
    benefits: BenefitsRun
    closed: fares_pb2.CloseServiceDayResponse
    settled: settlement_pb2.ClosePeriodResponse
    journeys: JourneyLog
    taps: list[tuple[str, bytes]]  # (tap id, value) as on the taps topic
    dead_letters: list[tuple[str, int]]  # (device, sequence) of each RejectedTap
    revisions: list[tuple[str, int, bytes]]  # (journey id, revision, value) on journeys
    tables: dict[str, list[tuple[object, ...]]]
    files: dict[str, bytes]  # the period's settlement files, by path under the period
    conservation_failures: list[str]
    traffic_s: float
    total_s: float
    not_caught_up: list[str] = field(default_factory=list)

    @property
    def logs(self) -> list[Path]:
        """The processes' log files."""
        return sorted(self.fleet.work_dir.glob("*.log"))


async def run_day(
    fleet: Fleet,
    endpoints: Endpoints,
    traffic: Traffic,
    injector: Injector | None = None,
) -> Outcome:
    """Start `fleet`, drive the day through it (under `injector`'s faults when given), close
    the day and the period, and collect the outcome; the fleet is stopped at the end."""
    started = time.monotonic()
    faults: asyncio.Task[None] | None = None
    fleet.start()
    try:
        await fleet.wait_serving(180.0)
        topics = Topics(prefix=fleet.env_for("ingest")["CLEARWAY_TOPIC_PREFIX"])
        await ensure_topics(endpoints.kafka_bootstrap, [topics.topups])
        admin = f"127.0.0.1:{fleet.port('ingest') + ADMIN_PORT_OFFSET}"
        await _retrying(lambda: register_devices(admin, fleet.pki_dir, devices_of(traffic.feed)))
        if injector is not None:
            faults = asyncio.create_task(injector.run())
        traffic_started = time.monotonic()
        tally = Tally(by_tap={})
        _, _, benefits = await asyncio.gather(
            _timed(
                fleet,
                "taps sent",
                send_day(
                    fleet.address("ingest"),
                    traffic.simulated,
                    traffic.validators,
                    traffic.batch_size,
                    pki_dir=fleet.pki_dir,
                    attempts=100_000 if injector else 5,
                    tally=tally,
                    in_flight=1,  # see docs/faults.md: a failed batch may be overtaken
                ),
            ),
            _timed(
                fleet,
                "top-ups published",
                _publish_top_ups(endpoints.kafka_bootstrap, topics.topups, traffic.top_ups),
            ),
            _timed(fleet, "benefits done", _benefits(fleet, endpoints, traffic)),
        )
        traffic_s = time.monotonic() - traffic_started
        _progress(fleet, f"traffic done in {traffic_s:.0f} s")
        if injector is not None and faults is not None:
            injector.traffic_done.set()
            await faults
            _progress(fleet, "faults done, every process serving")
        postings = sum(benefits.redemptions.values())
        await wait_for_postings(endpoints.kafka_bootstrap, topics.benefits, postings, 300)
        lagging = await caught_up(fleet, endpoints, topics)
        _progress(fleet, "consumers caught up; closing the day and the period")
        closed, settled = await close_day(traffic.day.isoformat(), fleet)
        lagging += await caught_up(fleet, endpoints, topics)
        _progress(fleet, "closed; collecting")
        outcome = await _collect(
            fleet,
            endpoints,
            topics,
            traffic,
            (tally, benefits, closed, settled),
            traffic_s=traffic_s,
        )
        outcome.total_s, outcome.not_caught_up = time.monotonic() - started, lagging
        return outcome
    finally:
        if faults is not None and not faults.done():  # else it restarts what stop() ends
            faults.cancel()
            await asyncio.gather(faults, return_exceptions=True)
        fleet.stop()


def _progress(fleet: Fleet, what: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {fleet.run_id}: {what}", flush=True)


async def _timed(fleet: Fleet, what: str, work: Awaitable[T]) -> T:
    started = time.monotonic()
    result = await work
    _progress(fleet, f"{what} in {time.monotonic() - started:.0f} s")
    return result


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    return await patiently(call, PATIENCE_S)


Messages = list[tuple[bytes, bytes | None, list[tuple[str, bytes]]]]


async def _publish_top_ups(bootstrap: str, topic: str, top_ups: list[events_pb2.TopUp]) -> None:
    """The retailer's sales in chunks through the traffic (a few seconds apart); a chunk
    whose publication failed (Kafka away) is published again: accounts and settlement take
    each top_up_id once, so a chunk Kafka already held is harmless."""
    size = max(1, -(-len(top_ups) // TOP_UP_CHUNKS))
    for start in range(0, len(top_ups), size):
        chunk = top_ups[start : start + size]
        messages: Messages = [
            (t.card_token.encode(), t.SerializeToString(deterministic=True), []) for t in chunk
        ]
        await retry_while(
            partial(_publish_once, bootstrap, topic, messages),
            (KafkaError, TimeoutError, OSError),
            PATIENCE_S,
        )
        await asyncio.sleep(2.0)


async def _publish_once(bootstrap: str, topic: str, messages: Messages) -> None:
    """`messages` on `topic` through a producer of their own (Kafka may have restarted)."""
    producer = idempotent_producer(bootstrap, request_timeout_ms=10_000)
    try:
        await producer.start()
        await asyncio.wait_for(publish_many(producer, topic, messages), 30)
    finally:
        with contextlib.suppress(KafkaError, TimeoutError, OSError):
            await producer.stop()


async def _benefits(fleet: Fleet, endpoints: Endpoints, traffic: Traffic) -> BenefitsRun:
    env = fleet.env_for("accounts")
    return await run_benefits(
        traffic.scheme,
        fleet.address("accounts"),
        endpoints.pg_dsn,
        env["CLEARWAY_DB_SCHEMA"],
        traffic.day,
        seed=traffic.seed,
        patience_s=PATIENCE_S,
    )


async def caught_up(
    fleet: Fleet, endpoints: Endpoints, topics: Topics, timeout_s: float = 180.0
) -> list[str]:
    """Until fares, settlement and accounts have committed the end of every topic they
    consume; the groups still behind after `timeout_s` (a commit that failed while Kafka
    was away is only repeated by the next batch)."""
    groups = {
        "fares": [topics.taps],
        "settlement": [topics.journeys, topics.topups, topics.benefits],
        "accounts": [topics.journeys, topics.topups],
    }
    behind = []
    for service, consumed in groups.items():
        group = fleet.env_for(service)["CLEARWAY_CONSUMER_GROUP"]
        lag = GroupLag(endpoints.kafka_bootstrap, group, *consumed)
        await lag.start()
        try:
            targets = await lag.end_offsets()
            deadline = time.monotonic() + timeout_s
            while (left := await lag.lag_behind(targets)) > 0:
                if time.monotonic() > deadline:
                    behind.append(f"{service}: {left} records")
                    break
                await asyncio.sleep(0.5)
        finally:
            await lag.stop()
    return behind


async def close_day(
    period: str, fleet: Fleet
) -> tuple[fares_pb2.CloseServiceDayResponse, settlement_pb2.ClosePeriodResponse]:
    """Close the service day in fares, then the period in settlement (as the operations
    role), each retried while its service is away."""
    async with grpc.aio.insecure_channel(fleet.address("fares"), options=RECONNECT_OPTIONS) as ch:
        fares = fares_pb2_grpc.FaresServiceStub(ch)
        request = fares_pb2.CloseServiceDayRequest(service_day=period, catch_up_timeout_seconds=120)
        closed = await _retrying(lambda: fares.CloseServiceDay(request, timeout=300))
    operations = Principal("role", OPERATIONS)
    async with secure_channel(
        fleet.address("settlement"), fleet.pki_dir, operations, options=RECONNECT_OPTIONS
    ) as ch:
        settlement = settlement_pb2_grpc.SettlementServiceStub(ch)
        settled = await _retrying(
            lambda: settlement.ClosePeriod(
                settlement_pb2.ClosePeriodRequest(period_id=period), timeout=300
            )
        )
    return closed, settled


async def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes, int]]:
    """Every committed record's value on `topic` (with its partition), partition by
    partition in offset order."""
    consumer = AIOKafkaConsumer(
        topic,
        **client_options(bootstrap),
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        for _ in range(300):
            if consumer.assignment():
                break
            await asyncio.sleep(0.1)
        parts = sorted(consumer.assignment())
        ends = await consumer.end_offsets(parts)
        values: list[tuple[bytes, int]] = []
        while any([await consumer.position(tp) < ends[tp] for tp in parts]):
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                values += [(r.value or b"", tp.partition) for r in records]
        return values
    finally:
        await consumer.stop()


# What the checks compare between runs, per table: the columns that do not depend on
# when or in which order things happened (ids drawn at random, wall-clock times and
# balances after each movement are left out).
TABLES = {
    "settlement": {
        "ledger entries": "SELECT period_id, source, journey_id, revision, party_id, account,"
        " amount_minor, currency FROM ledger_entries",
    },
    "accounts": {
        "balance movements": "SELECT card_token, kind, source_id, revision, amount_minor,"
        " currency FROM balance_movements",
        "card balances": "SELECT card_token, balance_minor, currency FROM card_balances",
        "top-ups": "SELECT top_up_id, card_token, retailer_id, amount_minor, currency,"
        " service_day FROM top_ups",
        "redemptions": "SELECT redemption_id, provider_id, idempotency_key, card_token,"
        " category, amount_minor, currency, service_day, month, balance_after_minor, at"
        " FROM redemptions",
        "entitlement movements": "SELECT kind, source_id, month, amount_minor, currency,"
        " provider_id, category, at FROM entitlement_movements",
        "journey revisions": "SELECT journey_id, revision FROM journey_revisions",
    },
}


async def read_tables(fleet: Fleet, dsn: str) -> dict[str, list[tuple[object, ...]]]:
    """Each compared table's rows, sorted."""
    tables: dict[str, list[tuple[object, ...]]] = {}
    for service, queries in TABLES.items():
        schema = fleet.env_for(service)["CLEARWAY_DB_SCHEMA"]
        conn = await _connect(dsn)
        try:
            await conn.execute(f'SET search_path TO "{schema}"')
            for name, query in queries.items():
                rows = await conn.fetch(query)
                tables[name] = sorted(tuple(r.values()) for r in rows)
        finally:
            await conn.close()
    return tables


async def _connect(dsn: str, patience_s: float = 120.0) -> asyncpg.Connection:
    return await retry_while(
        lambda: asyncpg.connect(dsn, timeout=10), (OSError, asyncpg.PostgresError), patience_s
    )


async def _collect(
    fleet: Fleet,
    endpoints: Endpoints,
    topics: Topics,
    traffic: Traffic,
    answers: tuple[
        Tally,
        BenefitsRun,
        fares_pb2.CloseServiceDayResponse,
        settlement_pb2.ClosePeriodResponse,
    ],
    *,
    traffic_s: float,
) -> Outcome:
    tally, benefits, closed, settled = answers
    bootstrap = endpoints.kafka_bootstrap
    period = traffic.day.isoformat()
    taps = []
    for value, _ in await read_topic(bootstrap, topics.taps):
        taps.append((events_pb2.Tap.FromString(value).tap_id, value))
    dead = []
    for value, _ in await read_topic(bootstrap, topics.taps_dlq):
        rejected = events_pb2.RejectedTap.FromString(value).tap
        dead.append((rejected.device_id, rejected.sequence_number))
    revisions = []
    for value, _ in await read_topic(bootstrap, topics.journeys):
        j = events_pb2.PricedJourney.FromString(value)
        revisions.append((j.journey_id, j.revision, value))
    log = await read_journeys(bootstrap, topics.journeys, period)
    root = fleet.work_dir / "statements" / period
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    verified = await asyncio.to_thread(verify_sets, settled, traffic.scheme, fleet.pki_dir)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        failures = report(tally, closed, settled, log, fleet.work_dir, verified, benefits)
    (fleet.work_dir / "report.txt").write_text(printed.getvalue())
    return Outcome(
        label=fleet.run_id,
        fleet=fleet,
        tally=tally,
        benefits=benefits,
        closed=closed,
        settled=settled,
        journeys=log,
        taps=taps,
        dead_letters=dead,
        revisions=revisions,
        tables=await read_tables(fleet, endpoints.pg_dsn),
        files=files,
        conservation_failures=failures,
        traffic_s=traffic_s,
        total_s=0.0,
    )
