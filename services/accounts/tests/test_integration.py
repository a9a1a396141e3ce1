"""accounts against real Kafka, PostgreSQL and Redis: journeys in, history out over gRPC."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
import redis.asyncio as redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.common.v1.money_pb2 import Money
from clearway.consumer import dead_letter_topic
from clearway.events.v1.events_pb2 import PricedJourney
from clearway.infra.endpoints import Endpoints
from clearway.kafka import REASON_HEADER, Topics, idempotent_producer
from clearway.runtime import RunningService
from clearway.settings import ServiceSettings
from clearway.telemetry import kafka_headers_with_trace, setup_tracing
from services.accounts.adapters.cache import HistoryCache
from services.accounts.app import AccountsApp, build
from services.accounts.service_layer.journey_history import JourneyHistory

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 7, 30, tzinfo=UTC)


def stored_count(app: AccountsApp) -> int:
    return app.recorder.stats.stored if app.recorder is not None else 0


def dead_count(app: AccountsApp) -> int:
    return app.loop.stats.dead_letters if app.loop is not None else 0


@dataclasses.dataclass
class Harness:
    app: AccountsApp
    stub: accounts_pb2_grpc.AccountsServiceAsyncStub
    producer: AIOKafkaProducer
    endpoints: Endpoints
    spans: InMemorySpanExporter
    travellers: accounts_pb2_grpc.TravellerServiceAsyncStub
    session: str = ""
    cards: set[str] = dataclasses.field(default_factory=set)

    async def sign_in(self) -> None:
        """One traveller for the module, owning every card a test lists."""
        email, password = f"{uuid.uuid4().hex[:12]}@example.org", "a long enough password"
        await self.travellers.SignUp(accounts_pb2.SignUpRequest(email=email, password=password))
        reply = await self.travellers.SignIn(
            accounts_pb2.SignInRequest(email=email, password=password)
        )
        self.session = reply.session_token

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.session}"),)

    async def publish(
        self, *journeys: PricedJourney, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        for j in journeys:
            await self.producer.send_and_wait(
                self.app.settings.topics.journeys,
                j.SerializeToString(),
                key=j.card_token.encode(),
                headers=headers,
            )

    async def publish_raw(self, key: bytes, value: bytes) -> None:
        await self.producer.send_and_wait(self.app.settings.topics.journeys, value, key=key)

    async def wait_handled(self, stored: int, dead: int = 0, timeout_s: float = 60.0) -> None:
        await wait_until(
            lambda: _true(self.counts()[0] >= stored and self.counts()[1] >= dead), timeout_s
        )
        assert self.counts() == (stored, dead)

    def counts(self) -> tuple[int, int]:
        return stored_count(self.app), dead_count(self.app)

    async def list(
        self, card: str, page_size: int = 0, token: str = ""
    ) -> accounts_pb2.ListJourneysResponse:
        if card not in self.cards:
            await self.travellers.AddCard(
                accounts_pb2.AddCardRequest(card_token=card), metadata=self.metadata
            )
            self.cards.add(card)
        return await self.stub.ListJourneys(
            accounts_pb2.ListJourneysRequest(
                card_token=card, page_size=page_size, page_token=token
            ),
            metadata=self.metadata,
        )

    async def all_pages(self, card: str, page_size: int) -> list[list[tuple[str, int]]]:
        pages: list[list[tuple[str, int]]] = []
        token = ""
        while True:
            page = await self.list(card, page_size, token)
            pages.append([(j.journey_id, j.revision) for j in page.journeys])
            token = page.next_page_token
            if not token:
                return pages
            assert len(pages) < 50, "paging does not end"


async def _true(value: bool) -> bool:
    return value


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


def new_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


def new_card(label: str) -> str:
    """A fresh card token (`tok_` form, as the simulator's cards)."""
    return f"tok_{''.join(c for c in label if c.isalnum())}{uuid.uuid4().hex[:12]}"


def journey(
    card: str,
    journey_id: str,
    start: datetime,
    *,
    revision: int = 1,
    charge: int = 250,
    legs: int = 1,
) -> PricedJourney:
    j = PricedJourney(
        journey_id=journey_id,
        card_token=card,
        revision=revision,
        service_day=start.date().isoformat(),
        charge=Money(amount_minor=charge, currency="GBP"),
        amount_before_caps=Money(amount_minor=charge, currency="GBP"),
        fare_version="v1",
    )
    for n in range(legs):
        leg = j.legs.add(leg_id=f"{journey_id}:{n}", operator_id="op-bus", from_stop_id="s1")
        leg.entry_at.FromDatetime(start + timedelta(minutes=20 * n))
        leg.exit_at.FromDatetime(start + timedelta(minutes=20 * n + 15))
        leg.fare.CopyFrom(Money(amount_minor=charge // max(legs, 1), currency="GBP"))
    return j


@pytest.fixture(scope="module")
async def harness(endpoints: Endpoints) -> AsyncIterator[Harness]:
    exporter = InMemorySpanExporter()
    setup_tracing("clearway-accounts-tests", [SimpleSpanProcessor(exporter)])
    name = f"t{uuid.uuid4().hex[:10]}"
    settings = dataclasses.replace(
        ServiceSettings.from_env("accounts"),
        grpc_port=0,
        endpoints=endpoints,
        topics=Topics(f"{name}."),
        db_schema=name,
        consumer_group=f"{name}-accounts",
        grace_seconds=3.0,
    )
    app = build(settings)
    running = RunningService(app)
    port = await running.start()
    producer = idempotent_producer(endpoints.kafka_bootstrap)
    await producer.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        made = Harness(
            app,
            accounts_pb2_grpc.AccountsServiceStub(channel),
            producer,
            endpoints,
            exporter,
            accounts_pb2_grpc.TravellerServiceStub(channel),
        )
        await made.sign_in()
        yield made
    finally:
        await channel.close()
        await producer.stop()
        await running.stop()


async def test_history_is_newest_first_paged_and_per_card(harness: Harness) -> None:
    card_a, card_b = new_card("card-a"), new_card("card-b")
    a = [journey(card_a, f"{card_a}-j{n}", T0 + timedelta(hours=n)) for n in range(5)]
    # Two journeys starting at the same instant: journey_id descending breaks the tie.
    tie = [journey(card_a, f"{card_a}-tie-{s}", T0 + timedelta(hours=2)) for s in ("x", "y")]
    b = [journey(card_b, f"{card_b}-j{n}", T0 + timedelta(hours=n, minutes=30)) for n in range(2)]
    stored, dead = harness.counts()
    await harness.publish(a[3], b[0], a[0], tie[1], a[4], b[1], a[2], tie[0], a[1])
    await harness.wait_handled(stored + 9, dead)

    pages = await harness.all_pages(card_a, 3)
    expected = [
        f"{card_a}-j4",
        f"{card_a}-j3",
        f"{card_a}-tie-y",
        f"{card_a}-tie-x",
        f"{card_a}-j2",
        f"{card_a}-j1",
        f"{card_a}-j0",
    ]
    assert pages == [
        [(i, 1) for i in expected[0:3]],
        [(i, 1) for i in expected[3:6]],
        [(i, 1) for i in expected[6:7]],
    ]
    assert await harness.all_pages(card_b, 0) == [[(f"{card_b}-j1", 1), (f"{card_b}-j0", 1)]]
    # An exact multiple of the page size ends with an empty token, not an empty page.
    assert await harness.all_pages(card_b, 2) == [[(f"{card_b}-j1", 1), (f"{card_b}-j0", 1)]]
    first = await harness.list(card_a, 3)
    assert first.journeys[0] == a[4]  # the stored event comes back byte for byte
    assert (await harness.list(new_card("card-nobody"))).journeys == []


async def test_later_revision_replaces_and_late_older_revision_does_not_win(
    harness: Harness,
) -> None:
    card = new_card("card")
    x1 = journey(card, f"{card}-x", T0, revision=1, charge=250)
    x2 = journey(card, f"{card}-x", T0, revision=2, charge=180)
    y3 = journey(card, f"{card}-y", T0 + timedelta(hours=1), revision=3, charge=90)
    y2 = journey(card, f"{card}-y", T0 + timedelta(hours=1), revision=2, charge=400)
    stored, dead = harness.counts()
    await harness.publish(x1, x2, y3, y2)  # y2 arrives after y3
    await harness.wait_handled(stored + 4, dead)

    page = await harness.list(card)
    assert [(j.journey_id, j.revision, j.charge.amount_minor) for j in page.journeys] == [
        (f"{card}-y", 3, 90),
        (f"{card}-x", 2, 180),
    ]
    repo = harness.app.ports.get().history.repository
    assert [r.revision for r in await repo.revisions_of(f"{card}-x")] == [1, 2]
    assert [r.revision for r in await repo.revisions_of(f"{card}-y")] == [2, 3]


async def test_withdrawn_journey_leaves_the_history_but_stays_in_the_audit_trail(
    harness: Harness,
) -> None:
    card = new_card("card")
    early = journey(card, f"{card}-a", T0)
    middle = journey(card, f"{card}-b", T0 + timedelta(hours=1))
    late = journey(card, f"{card}-c", T0 + timedelta(hours=2))
    vanished = journey(card, f"{card}-b", T0 + timedelta(hours=1), revision=2, charge=0, legs=0)
    stored, dead = harness.counts()
    await harness.publish(early, middle, late, vanished)
    await harness.wait_handled(stored + 4, dead)

    page = await harness.list(card)
    assert [
        (j.journey_id, j.revision, j.charge.amount_minor, len(j.legs)) for j in page.journeys
    ] == [
        (f"{card}-c", 1, 250, 1),
        (f"{card}-a", 1, 250, 1),
    ]
    assert harness.app.pool is not None
    kept = await harness.app.pool.fetchval(
        "SELECT count(*) FROM journey_revisions WHERE journey_id = $1", f"{card}-b"
    )
    assert kept == 2


async def test_replaying_the_same_events_changes_nothing(harness: Harness) -> None:
    card = new_card("card")
    events = [
        journey(card, f"{card}-j{n}", T0 + timedelta(hours=n), revision=r)
        for n in range(3)
        for r in (1, 2)
    ]
    stored, dead = harness.counts()
    await harness.publish(*events)
    await harness.wait_handled(stored + 6, dead)
    before = await harness.list(card)
    assert harness.app.pool is not None
    count_sql = "SELECT count(*) FROM journey_revisions WHERE card_token = $1"
    rows_before = await harness.app.pool.fetchval(count_sql, card)
    assert rows_before == 6

    await harness.publish(*reversed(events))
    await harness.wait_handled(stored + 12, dead)
    after = await harness.list(card)
    assert after == before
    assert [(j.journey_id, j.revision) for j in after.journeys] == [
        (f"{card}-j2", 2),
        (f"{card}-j1", 2),
        (f"{card}-j0", 2),
    ]
    assert await harness.app.pool.fetchval(count_sql, card) == rows_before


async def test_second_identical_read_comes_from_redis_and_a_new_journey_invalidates_it(
    harness: Harness,
) -> None:
    card = new_card("card")
    stored, dead = harness.counts()
    await harness.publish(
        journey(card, f"{card}-j0", T0), journey(card, f"{card}-j1", T0 + timedelta(hours=1))
    )
    await harness.wait_handled(stored + 2, dead)
    cache = harness.app.ports.get().history.cache

    hits, misses = cache.hits, cache.misses
    first = await harness.list(card, 10)
    assert (cache.hits, cache.misses) == (hits, misses + 1)
    second = await harness.list(card, 10)
    assert (cache.hits, cache.misses) == (hits + 1, misses + 1)
    assert second == first

    generation = await cache.generation(card)
    assert generation is not None and generation >= 2
    client = redis.Redis.from_url(harness.endpoints.redis_url)
    try:
        page_key = cache.page_key(card, generation, 10, "")
        assert await client.exists(page_key) == 1
        assert 0 < await client.ttl(page_key) <= 300
        assert card not in page_key

        await harness.publish(journey(card, f"{card}-j2", T0 + timedelta(hours=2)))
        await harness.wait_handled(stored + 3, dead)
        assert await cache.generation(card) == generation + 1
        third = await harness.list(card, 10)
        assert [j.journey_id for j in third.journeys] == [f"{card}-j2", f"{card}-j1", f"{card}-j0"]
    finally:
        await client.aclose()


async def test_redis_down_serves_from_postgres(harness: Harness) -> None:
    card = new_card("card")
    stored, dead = harness.counts()
    await harness.publish(journey(card, f"{card}-j0", T0))
    await harness.wait_handled(stored + 1, dead)
    dead_cache = HistoryCache.from_url("redis://127.0.0.1:1/0", "clearway:nowhere", timeout_s=0.2)
    history = JourneyHistory(harness.app.ports.get().history.repository, dead_cache)
    try:
        page = await history.list_journeys(card, 0, "")
        assert [j.journey_id for j in page.journeys] == [f"{card}-j0"]
        assert dead_cache.errors >= 1 and dead_cache.hits == 0
    finally:
        await dead_cache.close()


@pytest.mark.parametrize(
    ("card", "page_size", "token", "reason"),
    [
        ("", 0, "", "MISSING_CARD_TOKEN"),
        ("tok_cardx0000001", -1, "", "BAD_PAGE_SIZE"),
        ("tok_cardx0000001", 0, "not-a-token", "BAD_PAGE_TOKEN"),
        ("tok_cardx0000001", 0, "eyJ2IjoxfQ.0123456789abcdef", "BAD_PAGE_TOKEN"),
        # Once UNAVAILABLE STORE_UNAVAILABLE (PostgreSQL refuses a NUL), or accepted (1 MB).
        ("tok_cardx\x000000001", 0, "", "BAD_CARD_TOKEN"),
        ("tok_" + "a" * 1_000_000, 0, "", "BAD_CARD_TOKEN"),
        ("4111 1111 1111 1111", 0, "", "RAW_CARD_NUMBER"),
    ],
)
async def test_bad_arguments_are_invalid_argument_with_reason_code(
    harness: Harness, card: str, page_size: int, token: str, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await harness.list(card, page_size, token)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith(f"{reason}:")
    assert ("reason-code", reason) in tuple(err.value.trailing_metadata() or ())


async def test_page_token_of_another_card_is_refused(harness: Harness) -> None:
    card_a, card_b = new_card("card-a"), new_card("card-b")
    stored, dead = harness.counts()
    await harness.publish(
        *[journey(card_b, f"{card_b}-j{n}", T0 + timedelta(hours=n)) for n in range(3)]
    )
    await harness.wait_handled(stored + 3, dead)
    token_b = (await harness.list(card_b, 1)).next_page_token
    assert token_b
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await harness.list(card_a, 1, token_b)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("reason-code", "BAD_PAGE_TOKEN") in tuple(err.value.trailing_metadata() or ())


async def test_unstorable_messages_land_in_the_dlq_with_reason_and_the_stream_moves_on(
    harness: Harness, unique_name: str
) -> None:
    card = new_card("card")
    stored, dead = harness.counts()
    await harness.publish_raw(card.encode(), b"\x0a\xff\x01garbage")
    await harness.publish(journey(card, "", T0))  # no journey_id
    await harness.publish(journey(card, f"{card}-ok", T0))
    await harness.wait_handled(stored + 1, dead + 2)
    assert [j.journey_id for j in (await harness.list(card)).journeys] == [f"{card}-ok"]

    consumer = AIOKafkaConsumer(
        dead_letter_topic(harness.app.settings.topics.journeys, "accounts"),
        bootstrap_servers=harness.endpoints.kafka_bootstrap,
        group_id=f"{unique_name}-dlq-reader",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        found: dict[bytes, str] = {}
        deadline = time.monotonic() + 30
        while len(found) < 2 and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for rec in records:
                    if rec.key == card.encode():
                        found[rec.value] = dict(rec.headers)[REASON_HEADER].decode()
        assert found == {
            b"\x0a\xff\x01garbage": "UNDECODABLE",
            journey(card, "", T0).SerializeToString(): "MISSING_JOURNEY_ID",
        }
    finally:
        await consumer.stop()


async def test_store_span_continues_the_producer_trace(harness: Harness) -> None:
    card = new_card("card")
    tracer = trace.get_tracer("tests.accounts")
    stored, dead = harness.counts()
    with tracer.start_as_current_span("test.publish") as producer_span:
        headers = kafka_headers_with_trace()
        await harness.publish(journey(card, f"{card}-traced", T0), headers=headers)
    await harness.wait_handled(stored + 1, dead)
    context = producer_span.get_span_context()
    spans = [
        s
        for s in harness.spans.get_finished_spans()
        if s.name == "accounts.store_journeys process"
        and any(link.context.span_id == context.span_id for link in s.links)
    ]
    assert len(spans) == 1
    assert spans[0].links[0].context.trace_id == context.trace_id


async def test_restart_resumes_from_committed_offsets_without_duplicates(
    endpoints: Endpoints, settings_for: Callable[[str], ServiceSettings]
) -> None:
    settings = settings_for("accounts")
    card = new_card("card")
    producer = idempotent_producer(endpoints.kafka_bootstrap)
    await producer.start()

    async def publish(j: PricedJourney) -> None:
        await producer.send_and_wait(
            settings.topics.journeys, j.SerializeToString(), key=card.encode()
        )

    try:
        first = build(settings)
        running = RunningService(first)
        await running.start()
        await publish(journey(card, f"{card}-j0", T0))
        await wait_until(lambda: _true(stored_count(first) == 1))
        await running.stop()

        await publish(journey(card, f"{card}-j1", T0 + timedelta(hours=1)))  # while down
        second = build(settings)
        running = RunningService(second)
        port = await running.start()
        # Only the record published while down is new to this group.
        await wait_until(lambda: _true(stored_count(second) >= 1))
        await asyncio.sleep(1.0)
        assert stored_count(second) == 1
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            own = Harness(
                second,
                accounts_pb2_grpc.AccountsServiceStub(channel),
                producer,
                endpoints,
                InMemorySpanExporter(),
                accounts_pb2_grpc.TravellerServiceStub(channel),
            )
            await own.sign_in()
            page = await own.list(card)
        assert [j.journey_id for j in page.journeys] == [f"{card}-j1", f"{card}-j0"]
        assert second.pool is not None
        assert await second.pool.fetchval("SELECT count(*) FROM journey_revisions") == 2
        await running.stop()
    finally:
        await producer.stop()
