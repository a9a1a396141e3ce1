"""Settlement against real Kafka and PostgreSQL: posting, replay, restart, DLQ, close;
benefit postings (redemptions, rewards) settled once between council, provider and float."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import date
from pathlib import Path
from uuid import uuid4

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clearway.auth import OPERATIONS, Principal
from clearway.common.v1 import money_pb2
from clearway.consumer import dead_letter_topic
from clearway.db import create_pool
from clearway.events.v1 import events_pb2
from clearway.infra.endpoints import Endpoints
from clearway.kafka import Topics, idempotent_producer
from clearway.money import Money
from clearway.pki import issue_identity, secure_channel
from clearway.runtime import RunningService
from clearway.scheme.file import load_scheme
from clearway.settings import ServiceSettings
from clearway.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from clearway.telemetry import kafka_headers_with_trace, setup_tracing
from services.settlement.adapters.file_sets import load_signing_key
from services.settlement.adapters.ledger_repository import LedgerRepository
from services.settlement.app import SettlementApp, build
from services.settlement.domain.ledger import LedgerEntry, standing_of
from services.settlement.domain.settle import JourneyBasis, Leg, settle_journey
from services.settlement.entrypoints.verify_cli import verify_file_set
from services.settlement.service_layer.periods import period_totals

OPERATIONS_ROLE = Principal("role", OPERATIONS)

pytestmark = pytest.mark.integration

DAY = "2026-11-26"
NEXT_DAY = "2026-11-27"
SPANS = InMemorySpanExporter()
setup_tracing("settlement-tests", [SimpleSpanProcessor(SPANS)])
tracer = trace.get_tracer("tests.settlement")


async def read_bytes(path: Path) -> bytes:
    return await asyncio.to_thread(path.read_bytes)


async def read_set(directory: Path) -> dict[str, bytes]:
    def read() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}

    return await asyncio.to_thread(read)


def money(amount: int, currency: str = "GBP") -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount, currency=currency)


def priced(
    journey_id: str,
    operators: Iterable[str],
    charge: int,
    *,
    revision: int = 1,
    delta: int | None = None,
    day: str = DAY,
) -> events_pb2.PricedJourney:
    return events_pb2.PricedJourney(
        journey_id=journey_id,
        card_token=f"card-{journey_id}",
        revision=revision,
        service_day=day,
        legs=[
            events_pb2.PricedLeg(leg_id=f"{journey_id}-{i}", operator_id=op, fare=money(100))
            for i, op in enumerate(operators)
        ],
        charge=money(charge),
        delta=money(charge if delta is None else delta),
    )


# A scheme whose operators are the test's agencies, equal splits and no fees, so the
# expected amounts are plain shares of the charges.
TEST_SCHEME = (
    """
scheme_id = "settlement-tests"
name = "Settlement test scheme"
currency = "GBP"

[settlement]
timezone = "Europe/London"
cutoff = "10:00"

[[party]]
id = "scheme:issuer"
name = "Issuer"
effective_from = 2025-01-01
bank = { sort_code = "04-00-04", account_number = "12345678" }
"""
    + "".join(
        f"""
[[party]]
id = "operator:{agency}"
name = "{agency}"
agency_ids = ["{agency}"]
tier = "local"
effective_from = 2025-01-01
bank = {{ sort_code = "04-00-04", account_number = "1234567{i}" }}
"""
        for i, agency in enumerate(["bus", "tram", "rail", "LUL"])
    )
    + """
[[apportionment.default]]
method = "equal"
effective_from = 2025-01-01
"""
)


@pytest.fixture
def scheme_file(tmp_path: Path) -> Path:
    path = tmp_path / "scheme.toml"
    path.write_text(TEST_SCHEME)
    return path


@pytest.fixture
def settings(endpoints: Endpoints, unique_name: str, pki: Path) -> ServiceSettings:
    return dataclasses.replace(
        ServiceSettings.from_env("settlement"),
        grpc_host="127.0.0.1",
        grpc_port=0,
        endpoints=endpoints,
        grace_seconds=2.0,
        topics=Topics(f"{unique_name}."),
        db_schema=unique_name,
        consumer_group=f"{unique_name}-settlement",
        tls_cert=pki / "server.pem",
        tls_key=pki / "server.key.pem",
        tls_client_ca=pki / "ca.pem",
    )


class Harness:
    """Starts settlement instances and feeds them journeys."""

    def __init__(
        self, settings: ServiceSettings, statements_dir: Path, scheme_file: Path, pki: Path
    ) -> None:
        self.settings = settings
        self.statements_dir = statements_dir
        self.scheme_file = scheme_file
        self.pki = pki
        self.producer: AIOKafkaProducer = idempotent_producer(settings.endpoints.kafka_bootstrap)
        self.running: RunningService | None = None
        self.app: SettlementApp | None = None
        self.port = 0

    async def start(self) -> SettlementApp:
        self.app = build(
            self.settings,
            self.statements_dir,
            scheme_file=self.scheme_file,
            signing_key=self.pki / "signing.key.pem",
            check_agencies=False,
        )
        self.app.close_wait_s = 30.0
        self.running = RunningService(self.app)
        self.port = await self.running.start()
        return self.app

    async def stop(self) -> None:
        if self.running is not None:
            await self.running.stop()
            self.running = None

    async def send(self, *events: events_pb2.PricedJourney | bytes) -> None:
        for event in events:
            value = event if isinstance(event, bytes) else event.SerializeToString()
            key = b"card" if isinstance(event, bytes) else event.card_token.encode()
            with tracer.start_as_current_span("test.produce_journey"):
                await self.producer.send_and_wait(
                    self.settings.topics.journeys,
                    value,
                    key=key,
                    headers=kafka_headers_with_trace(),
                )

    async def send_benefits(self, *postings: events_pb2.BenefitPosting | bytes) -> None:
        for posting in postings:
            value = posting if isinstance(posting, bytes) else posting.SerializeToString()
            key = b"posting" if isinstance(posting, bytes) else posting.posting_id.encode()
            await self.producer.send_and_wait(self.settings.topics.benefits, value, key=key)

    async def entries_after_stop(self) -> list[LedgerEntry]:
        pool = await create_pool(self.settings.endpoints.pg_dsn, self.settings.db_schema)
        try:
            return list(await LedgerRepository(pool).entries())
        finally:
            await pool.close()

    async def entries(self) -> list[LedgerEntry]:
        assert self.app is not None and self.app.ledger is not None
        return list(await self.app.ledger.entries())

    async def wait_for(
        self, done: Callable[[list[LedgerEntry]], bool], timeout_s: float = 30.0
    ) -> list[LedgerEntry]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            entries = await self.entries()
            if done(entries):
                return entries
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out; have {len(entries)} entries")
            await asyncio.sleep(0.1)

    def stub(self, channel: grpc.aio.Channel) -> settlement_pb2_grpc.SettlementServiceStub:
        return settlement_pb2_grpc.SettlementServiceStub(channel)

    def channel(self, identity: Principal = OPERATIONS_ROLE) -> grpc.aio.Channel:
        issue_identity(identity, self.pki)  # a no-op once issued
        return secure_channel(f"127.0.0.1:{self.port}", self.pki, identity)


@contextlib.asynccontextmanager
async def running(h: Harness) -> AsyncIterator[Harness]:
    await h.producer.start()
    await h.start()
    try:
        yield h
    finally:
        await h.stop()
        await h.producer.stop()


@pytest.fixture
async def harness(
    settings: ServiceSettings, tmp_path: Path, scheme_file: Path, pki: Path
) -> AsyncIterator[Harness]:
    async with running(Harness(settings, tmp_path / "statements", scheme_file, pki)) as h:
        yield h


async def download_lines(
    h: Harness, period_id: str, party_id: str
) -> list[settlement_pb2.StatementLine]:
    async with h.channel() as channel:
        request = settlement_pb2.DownloadStatementLinesRequest(
            period_id=period_id, party_id=party_id
        )
        lines: list[settlement_pb2.StatementLine] = []
        async for chunk in h.stub(channel).DownloadStatementLines(request):
            assert chunk.first_line == len(lines)
            lines.extend(chunk.lines)
        return lines


async def close_period(h: Harness, period_id: str) -> settlement_pb2.ClosePeriodResponse:
    async with h.channel() as channel:
        return await h.stub(channel).ClosePeriod(
            settlement_pb2.ClosePeriodRequest(period_id=period_id), timeout=60
        )


def nets(response: settlement_pb2.ClosePeriodResponse) -> dict[str, int]:
    """Every party's net, leaving out the parties (in force) with nothing this period."""
    return {s.party_id: s.net.amount_minor for s in response.statements if s.line_count}


async def test_close_period_issues_reconciling_statements_one_per_party(harness: Harness) -> None:
    await harness.send(
        priced("j1", ["bus", "tram"], 300),
        priced("j2", ["bus", "tram", "rail"], 101),
        priced("j3", ["bus"], 200),
        priced("j3", ["bus"], 150, revision=2, delta=-50),
    )
    # Closed straight away: ClosePeriod waits for the consumer to reach the topic's end.
    response = await close_period(harness, DAY)

    assert nets(response) == {
        "operator:bus": 150 + 34 + 200 - 50,
        "operator:rail": 33,
        "operator:tram": 150 + 34,
        "scheme:issuer": -(300 + 101 + 150),
    }
    assert sum(nets(response).values()) == 0
    assert response.total_charged.amount_minor == 551
    assert response.total_apportioned.amount_minor == 551
    assert response.total_charged.currency == "GBP"
    bus = next(s for s in response.statements if s.party_id == "operator:bus")
    # A summary: one line per journey and account, whatever its revisions in the period.
    assert not bus.lines and bus.line_count == 3
    lines = await download_lines(harness, DAY, "operator:bus")
    assert [(ln.journey_id, ln.revision, ln.amount.amount_minor) for ln in lines] == [
        ("j1", 1, 150),
        ("j2", 1, 34),
        ("j3", 2, 150),
    ]
    assert bus.total_credits.amount_minor == 334
    assert bus.total_debits.amount_minor == 0
    for statement in response.statements:
        directory = Path(statement.path)
        assert directory == harness.statements_dir / DAY / statement.party_id
        manifest = await read_bytes(directory / "manifest.json")
        assert hashlib.sha256(manifest).hexdigest() == statement.sha256
        assert {f.name for f in statement.files} == {"lines.csv", "summary.json"} | (
            {"pain.001.xml"} if statement.party_id == "scheme:issuer" else set()
        )

    # The consumer's batch span links to the producer's spans.
    spans = SPANS.get_finished_spans()
    produced = {s.context.span_id for s in spans if s.name.startswith("test.")}
    linked = {
        link.context.span_id
        for s in spans
        if s.name == "settlement.post_journeys process"
        for link in s.links
    }
    assert produced & linked


async def test_closing_twice_returns_identical_statements(harness: Harness) -> None:
    await harness.send(priced("j1", ["bus", "tram"], 301), priced("j2", ["rail"], 99))
    first = await close_period(harness, DAY)
    files = {s.party_id: await read_set(Path(s.path)) for s in first.statements}
    second = await close_period(harness, DAY)
    assert first == second
    assert {s.party_id: await read_set(Path(s.path)) for s in second.statements} == files
    # Every party of the scheme gets a file set, also one without entries (operator:LUL).
    assert len(first.statements) == 5


async def test_replayed_journeys_add_nothing(harness: Harness) -> None:
    events = [priced(f"j{i}", ["bus", "tram"], 100 + i) for i in range(10)]
    await harness.send(*events)
    before = await harness.wait_for(lambda es: len(es) == 30)
    await harness.send(*events)
    assert harness.app is not None and harness.app.poster is not None
    stats = harness.app.poster.stats
    deadline = asyncio.get_running_loop().time() + 30
    while stats.replayed < 10:
        assert asyncio.get_running_loop().time() < deadline, stats
        await asyncio.sleep(0.1)
    assert await harness.entries() == before
    assert stats.posted == 10


async def test_restart_mid_stream_leaves_no_missing_or_duplicated_entries(
    harness: Harness,
) -> None:
    events = [
        priced(f"j{i:04d}", ["bus", "tram", "rail"][: 1 + i % 3], 100 + i) for i in range(300)
    ]
    expected = sum(1 + (1 + i % 3) for i in range(300))
    await harness.send(*events)
    await harness.wait_for(lambda es: len(es) >= 20)
    await harness.stop()  # mid-stream: the rest is unposted or posted but uncommitted
    await harness.start()  # same schema and group
    entries = await harness.wait_for(lambda es: len(es) >= expected)
    await asyncio.sleep(1.0)  # anything re-read after the restart must add nothing
    entries = await harness.entries()
    assert len(entries) == expected
    assert len({e.key for e in entries}) == expected
    assert sum(e.amount.amount_minor for e in entries) == 0
    issuer = sum(-e.amount.amount_minor for e in entries if e.party_id == "scheme:issuer")
    assert issuer == sum(100 + i for i in range(300))


async def test_unpostable_messages_go_to_the_dead_letter_topic(harness: Harness) -> None:
    no_currency = priced("bad1", ["bus"], 100)
    no_currency.charge.currency = ""
    no_currency.delta.currency = ""
    bad_revision = priced("bad2", ["bus"], 100, revision=0)
    await harness.send(b"\xff\xff\xff not protobuf", no_currency, bad_revision)
    await harness.send(priced("good", ["bus"], 100))
    await harness.wait_for(lambda es: {e.journey_id for e in es} == {"good"})

    assert harness.app is not None
    consumer = AIOKafkaConsumer(
        dead_letter_topic(harness.settings.topics.journeys, "settlement"),
        bootstrap_servers=harness.settings.endpoints.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        reasons: list[str] = []
        deadline = asyncio.get_running_loop().time() + 30
        while len(reasons) < 3 and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                reasons += [dict(r.headers)["clearway-reason"].decode() for r in records]
    finally:
        await consumer.stop()
    assert sorted(reasons) == ["INVALID_REVISION", "MISSING_CURRENCY", "UNDECODABLE"]
    assert (await close_period(harness, DAY)).total_charged.amount_minor == 100


async def test_late_adjustment_after_close_posts_into_the_next_open_period(
    harness: Harness,
) -> None:
    await harness.send(priced("j1", ["bus", "tram"], 400))
    closed = await close_period(harness, DAY)
    assert closed.total_charged.amount_minor == 400

    await harness.send(priced("j1", ["bus", "tram"], 300, revision=2, delta=-100))
    entries = await harness.wait_for(lambda es: any(e.revision == 2 for e in es))
    assert {e.period_id for e in entries if e.revision == 2} == {NEXT_DAY}

    assert await close_period(harness, DAY) == closed  # a closed period never changes
    later = await close_period(harness, NEXT_DAY)
    assert nets(later) == {"operator:bus": -50, "operator:tram": -50, "scheme:issuer": 100}
    assert later.total_charged.amount_minor == -100


async def test_bad_requests_get_specific_statuses(harness: Harness) -> None:
    async with harness.channel() as channel:
        stub = harness.stub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ClosePeriod(settlement_pb2.ClosePeriodRequest(period_id="2026-02-30"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "INVALID_PERIOD_ID" in (err.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetStatement(
                settlement_pb2.GetStatementRequest(period_id=DAY, party_id="operator:nobody")
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert ("reason-code", "STATEMENT_NOT_FOUND") in tuple(err.value.trailing_metadata() or ())

    await harness.send(priced("j1", ["bus"], 250))
    closed = await close_period(harness, DAY)
    async with harness.channel() as channel:
        got = await harness.stub(channel).GetStatement(
            settlement_pb2.GetStatementRequest(period_id=DAY, party_id="operator:bus")
        )
    assert got.statement == next(s for s in closed.statements if s.party_id == "operator:bus")


async def dead_letter_reasons(
    harness: Harness, wait_s: float = 2.0, topic: str | None = None
) -> list[str]:
    """Reasons of everything on the DLQ of `topic` (default: the journeys), read for
    `wait_s` from the start."""
    assert harness.app is not None
    consumer = AIOKafkaConsumer(
        dead_letter_topic(topic or harness.settings.topics.journeys, "settlement"),
        bootstrap_servers=harness.settings.endpoints.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        reasons: list[str] = []
        deadline = asyncio.get_running_loop().time() + wait_s
        while asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                reasons += [dict(r.headers)["clearway-reason"].decode() for r in records]
    finally:
        await consumer.stop()
    return reasons


async def test_a_vanished_journey_refunds_its_charge(harness: Harness) -> None:
    await harness.send(
        priced("j-gone", ["LUL"], 940),
        # Late taps regrouped the legs: the journey vanishes (charge 0, no legs).
        priced("j-gone", [], 0, revision=2, delta=-940),
        priced("j-new", ["LUL"], 290),
    )
    response = await close_period(harness, DAY)

    assert {p: n for p, n in nets(response).items() if n} == {
        "operator:LUL": 290,
        "scheme:issuer": -290,
    }
    assert response.total_charged.amount_minor == 290
    assert response.total_apportioned.amount_minor == 290
    gone = [e for e in await harness.entries() if e.journey_id == "j-gone"]
    assert [(e.revision, e.party_id, e.amount.amount_minor) for e in gone] == [
        (1, "operator:LUL", 940),
        (1, "scheme:issuer", -940),
        (2, "operator:LUL", -940),
        (2, "scheme:issuer", 940),
    ]
    assert await dead_letter_reasons(harness) == []
    assert harness.app is not None and harness.app.loop is not None
    assert harness.app.loop.stats.dead_letters == 0


async def test_changed_operators_settle_on_the_split_of_the_final_charge(
    harness: Harness,
) -> None:
    await harness.send(
        priced("j1", ["bus"], 300),
        priced("j1", ["bus", "tram"], 300, revision=2, delta=0),
    )
    response = await close_period(harness, DAY)
    assert {p: n for p, n in nets(response).items() if n} == {
        "operator:bus": 150,
        "operator:tram": 150,
        "scheme:issuer": -300,
    }
    assert response.total_charged.amount_minor == 300
    rev2 = [e for e in await harness.entries() if e.revision == 2]
    assert [(e.party_id, e.amount.amount_minor, e.description) for e in rev2] == [
        ("operator:bus", -150, "adjustment: equal share of journey j1 rev 2"),
        ("operator:tram", 150, "adjustment: equal share of journey j1 rev 2"),
    ]


async def test_an_out_of_date_revision_arriving_late_changes_nothing(harness: Harness) -> None:
    await harness.send(
        priced("j1", ["bus"], 400),
        priced("j1", ["bus", "tram"], 300, revision=2, delta=-100),
        priced("j1", ["bus"], 400),  # revision 1 again, after revision 2
    )
    response = await close_period(harness, DAY)
    assert {p: n for p, n in nets(response).items() if n} == {
        "operator:bus": 150,
        "operator:tram": 150,
        "scheme:issuer": -300,
    }


@pytest.fixture
async def repository(
    settings: ServiceSettings, scheme_file: Path
) -> AsyncIterator[LedgerRepository]:
    pool = await create_pool(settings.endpoints.pg_dsn, settings.db_schema)
    repo = LedgerRepository(pool, load_scheme(scheme_file))
    await repo.migrate()
    try:
        yield repo
    finally:
        await pool.close()


# A journey's revisions: charges >= 0 over random operators, some vanished (0, no legs).
_revision_st = st.one_of(
    st.tuples(
        st.integers(min_value=0, max_value=10**6),
        st.lists(st.sampled_from(["bus", "tram", "rail", "LUL"]), min_size=1, max_size=5),
    ),
    st.just((0, [])),
)
_sequence_st = st.lists(_revision_st, min_size=1, max_size=6)


def _revisions(jid: str, specs: list[tuple[int, list[str]]]) -> list[JourneyBasis]:
    out: list[JourneyBasis] = []
    for rev, (charge, ops) in enumerate(specs, start=1):
        legs = tuple(Leg(f"{jid}-{rev}-{i}", op) for i, op in enumerate(ops))
        day = date.fromisoformat(DAY)
        out.append(JourneyBasis(jid, rev, day, None, "ADULT", Money(charge, "GBP"), legs))
    return out


@hypothesis_settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(specs=_sequence_st, data=st.data())
async def test_reposting_earlier_revisions_after_later_ones_adds_nothing(
    repository: LedgerRepository, specs: list[tuple[int, list[str]]], data: st.DataObject
) -> None:
    jid = f"j-{uuid4().hex[:12]}"
    revisions = _revisions(jid, specs)
    for revision in revisions:
        result = await repository.post(revision)
        assert not result.skipped
        posted = [e for e in await repository.entries(jid) if e.revision == revision.revision]
        assert sum(e.amount.amount_minor for e in posted) == 0
        assert result.inserted == len(posted)
    settled = list(await repository.entries(jid))

    expected = dict(settle_journey(repository.scheme, revisions[-1]).position)
    standing = standing_of(settled)
    assert {k: v for k, v in standing.items() if v.amount_minor} == {
        k: v for k, v in expected.items() if v.amount_minor
    }

    # Re-post any earlier revisions (and the last one), in any order: nothing changes.
    replays = data.draw(st.lists(st.sampled_from(revisions), min_size=1, max_size=6))
    for revision in replays:
        result = await repository.post(revision)
        assert result.skipped and result.inserted == 0
    assert list(await repository.entries(jid)) == settled


async def test_a_revision_that_fails_inside_a_batch_is_parked_alone(harness: Harness) -> None:
    """A revision in another currency than its journey already stands in passes decoding
    and fails only while the batch is posted: the loop splits the batch until it is alone,
    parks it with its reason, and posts every other revision of the batch."""
    euro = priced("j-mixed", ["bus"], 300, revision=2, delta=0)
    euro.charge.currency = "EUR"
    euro.delta.currency = "EUR"
    await harness.send(priced("j-mixed", ["bus"], 300))
    await harness.wait_for(lambda es: any(e.journey_id == "j-mixed" for e in es))
    await harness.send(
        *[priced(f"before{i}", ["tram"], 100 + i) for i in range(5)],
        euro,
        *[priced(f"after{i}", ["rail"], 200 + i) for i in range(5)],
    )
    entries = await harness.wait_for(
        lambda es: {f"after{i}" for i in range(5)} <= {e.journey_id for e in es}
    )
    assert {e.journey_id for e in entries} == {
        "j-mixed",
        *(f"before{i}" for i in range(5)),
        *(f"after{i}" for i in range(5)),
    }
    assert [e.revision for e in entries if e.journey_id == "j-mixed"] == [1, 1]
    assert await dead_letter_reasons(harness) == ["CURRENCY_MISMATCH"]
    assert harness.app is not None and harness.app.loop is not None
    assert harness.app.loop.stats.dead_letters == 1


async def test_a_period_too_big_for_one_message_closes_with_summaries_and_streams_its_lines(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """30,000 journeys: the issuer's statement alone is several MB, more than gRPC's 4 MB
    message limit. ClosePeriod answers with summaries; the lines stream in chunks; the
    consumer logs a summary now and then, not a line per journey."""
    count = 30_000
    caplog.set_level("INFO")
    events = [
        priced(f"big{i:05d}", ["bus", "tram"][: 1 + i % 2], 150 + i % 7).SerializeToString()
        for i in range(count)
    ]
    futures = [
        await harness.producer.send(harness.settings.topics.journeys, value, key=b"card")
        for value in events
    ]
    await asyncio.gather(*futures)
    response = await close_period(harness, DAY)

    assert response.ByteSize() < 10_000
    issuer = next(s for s in response.statements if s.party_id == "scheme:issuer")
    assert issuer.line_count == count and not issuer.lines
    assert len(await read_bytes(Path(issuer.path) / "lines.csv")) > 4 * 1024 * 1024
    lines = await download_lines(harness, DAY, "scheme:issuer")
    assert len(lines) == count
    assert sum(ln.amount.amount_minor for ln in lines) == issuer.net.amount_minor
    assert [ln.journey_id for ln in lines] == sorted(f"big{i:05d}" for i in range(count))
    ours = [r for r in caplog.records if not r.name.startswith("aiokafka")]
    per_record = [r for r in ours if r.levelno >= 20 and "journey" in r.getMessage()]
    assert len(per_record) < 10, [r.getMessage() for r in per_record[:10]]


def party(party_id: str) -> Principal:
    return Principal("party", party_id)


async def test_parties_see_only_their_own_settlement_and_only_operations_closes(
    harness: Harness,
) -> None:
    await harness.send(priced("j1", ["bus", "tram"], 300))
    await close_period(harness, DAY)

    async with harness.channel(party("operator:bus")) as channel:
        stub = harness.stub(channel)
        mine = await stub.ListStatements(settlement_pb2.ListStatementsRequest())
        assert [s.party_id for s in mine.statements] == ["operator:bus"]
        got = await stub.GetStatement(settlement_pb2.GetStatementRequest(period_id=DAY))
        assert got.statement.party_id == "operator:bus"
        chunks = stub.DownloadFile(
            settlement_pb2.DownloadFileRequest(period_id=DAY, name="summary.json")
        )
        summary = b"".join([c.chunk async for c in chunks])
        assert b'"party_id": "operator:bus"' in summary
        position = await stub.GetPosition(settlement_pb2.GetPositionRequest())
        assert position.party_id == "operator:bus"
        # Another operator's statement, files, lines or position: refused.
        for call in (
            stub.GetStatement(
                settlement_pb2.GetStatementRequest(period_id=DAY, party_id="operator:tram")
            ),
            stub.ListStatements(settlement_pb2.ListStatementsRequest(party_id="operator:tram")),
            stub.GetPosition(settlement_pb2.GetPositionRequest(party_id="operator:tram")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert ("reason-code", "PERMISSION_DENIED") in tuple(err.value.trailing_metadata())
        for stream in (
            stub.DownloadFile(
                settlement_pb2.DownloadFileRequest(
                    period_id=DAY, party_id="operator:tram", name="lines.csv"
                )
            ),
            stub.DownloadStatementLines(
                settlement_pb2.DownloadStatementLinesRequest(
                    period_id=DAY, party_id="operator:tram"
                )
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                [c async for c in stream]
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # A party may not close a period.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ClosePeriod(settlement_pb2.ClosePeriodRequest(period_id=NEXT_DAY))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # The operations role sees every party.
    async with harness.channel() as channel:
        every = await harness.stub(channel).ListStatements(settlement_pb2.ListStatementsRequest())
        assert {s.party_id for s in every.statements} >= {"operator:bus", "operator:tram"}


async def test_a_caller_without_a_scheme_certificate_gets_no_data(harness: Harness) -> None:
    """grpcio cannot request a client certificate without requiring it: a caller without
    one (or with a plaintext channel) is refused at the TLS handshake, before any RPC."""
    await harness.send(priced("j1", ["bus"], 250))
    await close_period(harness, DAY)
    request = settlement_pb2.ListStatementsRequest()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{harness.port}") as plain:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await harness.stub(plain).ListStatements(request, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    anonymous = grpc.ssl_channel_credentials(
        root_certificates=(harness.pki / "ca.pem").read_bytes()
    )
    async with grpc.aio.secure_channel(f"127.0.0.1:{harness.port}", anonymous) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await harness.stub(channel).ListStatements(request, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_period_cannot_close_before_its_cut_off(harness: Harness) -> None:
    today = date.today().isoformat()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await close_period(harness, today)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert ("reason-code", "PERIOD_NOT_DUE") in tuple(err.value.trailing_metadata())


# -- benefit postings: redemptions at providers, rewards ------------------------------------

CAMDEN = "funder:camden"
LEISURE = "provider:camden-leisure"
SOUNDBOX = "provider:soundbox"
BENEFITS_SCHEME = (
    TEST_SCHEME
    + """
[[party]]
id = "funder:camden"
name = "Camden council"
effective_from = 2025-01-01
bank = { sort_code = "04-00-04", account_number = "22345670" }
"""
    + "".join(
        f"""
[[party]]
id = "{provider}"
name = "{provider}"
categories = ["{category}"]
effective_from = 2025-01-01
bank = {{ sort_code = "04-00-04", account_number = "2234567{i + 1}" }}
"""
        for i, (provider, category) in enumerate([(LEISURE, "leisure"), (SOUNDBOX, "studio")])
    )
)


def benefit(
    posting_id: str,
    amount: int,
    *,
    funder: str = CAMDEN,
    provider: str = "",
    reward_rule: str = "",
) -> events_pb2.BenefitPosting:
    kind = events_pb2.BenefitPosting
    return events_pb2.BenefitPosting(
        posting_id=posting_id,
        kind=kind.KIND_REDEMPTION if provider else kind.KIND_REWARD,
        funder_id=funder,
        provider_id=provider,
        amount=money(amount),
        service_day=DAY,
        entitlement_scheme_id="camden-youth-leisure" if provider else "",
        category="leisure" if provider else "",
        reward_rule_id=reward_rule,
    )


@pytest.fixture
async def benefits_harness(
    settings: ServiceSettings, tmp_path: Path, pki: Path
) -> AsyncIterator[Harness]:
    scheme_file = tmp_path / "benefits-scheme.toml"
    scheme_file.write_text(BENEFITS_SCHEME)
    async with running(Harness(settings, tmp_path / "statements", scheme_file, pki)) as h:
        yield h


def file_lines(directory: Path) -> list[dict[str, str]]:
    with (directory / "lines.csv").open(encoding="utf-8", newline="") as source:
        return list(csv.DictReader(source))


async def test_redemptions_and_rewards_settle_once_between_council_provider_and_float(
    benefits_harness: Harness,
) -> None:
    h = benefits_harness
    redeemed = benefit("redemption:rdm_0001", 1250, provider=LEISURE)
    rewarded = benefit("reward:rwd_0001", 300, reward_rule="camden-volunteering")
    by_bus = benefit("reward:rwd_0002", 200, funder="operator:bus", reward_rule="bus-off-peak")
    unknown_provider = benefit("redemption:rdm_0002", 500, provider="provider:nobody")
    no_kind = benefit("reward:rwd_0003", 100)
    no_kind.kind = events_pb2.BenefitPosting.KIND_UNSPECIFIED
    await h.send_benefits(redeemed, redeemed, rewarded, by_bus, unknown_provider, no_kind)
    await h.send(priced("j1", ["bus"], 250))
    entries = await h.wait_for(lambda es: len(es) == 8)  # 2 + 2 + 2 and the journey's 2

    # A restart, then the redemption delivered again: still posted once.
    await h.stop()
    await h.start()
    await h.send_benefits(redeemed)
    response = await close_period(h, DAY)
    assert h.app is not None and h.app.poster is not None
    assert h.app.poster.stats.replayed >= 1
    assert await h.entries() == entries
    redemption_entries = [e for e in entries if e.journey_id == redeemed.posting_id]
    assert sorted((e.party_id, e.account, e.amount.amount_minor) for e in redemption_entries) == [
        (CAMDEN, "vouchers_funded", -1250),
        (LEISURE, "voucher_redemptions", 1250),
    ]
    topic = h.settings.topics.benefits
    assert sorted(await dead_letter_reasons(h, topic=topic)) == ["UNKNOWN_KIND", "UNKNOWN_PROVIDER"]

    # The council owes the provider, the reward's payers owe the traveller float.
    assert nets(response) == {
        CAMDEN: -1250 - 300,
        LEISURE: 1250,
        "operator:bus": 250 - 200,
        "scheme:issuer": -250 + 300 + 200,
    }
    assert sum(s.net.amount_minor for s in response.statements) == 0
    sets = {s.party_id: Path(s.path) for s in response.statements}
    assert {SOUNDBOX, LEISURE, CAMDEN} <= set(sets)  # every provider gets a set, like any party
    camden = file_lines(sets[CAMDEN])
    assert [
        (r["source"], r["source_id"], r["account"], r["amount_minor"], r["provider"])
        for r in camden
    ] == [
        ("redemption", "redemption:rdm_0001", "vouchers_funded", "-1250", LEISURE),
        ("reward", "reward:rwd_0001", "rewards_funded", "-300", ""),
    ]
    assert (camden[0]["entitlement_scheme"], camden[0]["category"]) == (
        "camden-youth-leisure",
        "leisure",
    )
    assert camden[1]["reward_rule"] == "camden-volunteering"
    [paid] = file_lines(sets[LEISURE])
    assert (paid["source_id"], paid["account"], paid["amount_minor"], paid["funder"]) == (
        "redemption:rdm_0001",
        "voucher_redemptions",
        "1250",
        CAMDEN,
    )
    float_lines = [r for r in file_lines(sets["scheme:issuer"]) if r["source"] == "reward"]
    assert [(r["source_id"], r["account"], r["amount_minor"]) for r in float_lines] == [
        ("reward:rwd_0001", "traveller_float", "300"),
        ("reward:rwd_0002", "traveller_float", "200"),
    ]
    camden_summary = json.loads((sets[CAMDEN] / "summary.json").read_bytes())
    assert camden_summary["vouchers_funded_minor"] == -1250
    assert camden_summary["rewards_funded_minor"] == -300
    assert camden_summary["counts"]["redemptions"] == camden_summary["counts"]["rewards"] == 1
    assert camden_summary["payment"]["direction"] == "debit"
    leisure_summary = json.loads((sets[LEISURE] / "summary.json").read_bytes())
    assert leisure_summary["vouchers_redeemed_minor"] == leisure_summary["net_minor"] == 1250
    assert leisure_summary["payment"]["direction"] == "credit"
    payments = (sets["scheme:issuer"] / "pain.001.xml").read_text()
    assert leisure_summary["payment"]["end_to_end_id"] in payments

    ports = h.app.ports.get()
    totals = await period_totals(ports, DAY, date.fromisoformat(DAY))
    assert {k: totals[k].amount_minor for k in ("vouchers_redeemed", "vouchers_funded")} == {
        "vouchers_redeemed": 1250,
        "vouchers_funded": 1250,
    }
    assert totals["rewards_funded"].amount_minor == 500
    scheme = load_scheme(h.scheme_file)
    public_key = load_signing_key(h.pki / "signing.key.pem").public_key()
    for party_id, directory in sets.items():
        report = verify_file_set(directory, scheme, public_key)
        assert report.ok, (party_id, report.render())

    # Re-closing gives the same answer and the same bytes.
    files = {party_id: await read_set(directory) for party_id, directory in sets.items()}
    assert await close_period(h, DAY) == response
    assert {party_id: await read_set(d) for party_id, d in sets.items()} == files
