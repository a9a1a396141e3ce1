"""Stored value over accounts' real gRPC server, Kafka, PostgreSQL and Redis: top-ups with
idempotency keys, journey revisions debiting their deltas exactly once (replays and a
restart included), and a negative balance putting the card on the deny list (as ingest's
follower reads it) until a top-up takes it off."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.common.v1.money_pb2 import Money
from clearway.events.v1 import events_pb2
from clearway.ingest.v1 import ingest_pb2
from clearway.kafka import idempotent_producer
from clearway.rpc import reason_of
from clearway.runtime import RunningService
from clearway.settings import ServiceSettings
from services.accounts.app import AccountsApp, build
from services.ingest.adapters.deny_list_topic import DenyListFollower

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
T0 = datetime(2026, 11, 20, 7, 30, tzinfo=UTC)


def gbp(minor: int) -> Money:
    return Money(amount_minor=minor, currency="GBP")


def new_card() -> str:
    return f"tok_{uuid.uuid4().hex[:16]}"


def journey(card: str, journey_id: str, revision: int, charge: int) -> events_pb2.PricedJourney:
    j = events_pb2.PricedJourney(
        journey_id=journey_id,
        card_token=card,
        revision=revision,
        service_day=T0.date().isoformat(),
        charge=gbp(charge),
        amount_before_caps=gbp(charge),
        fare_version="v1",
    )
    if charge:
        leg = j.legs.add(leg_id=f"{journey_id}:0", operator_id="op-bus", from_stop_id="s1")
        leg.entry_at.FromDatetime(T0)
        leg.exit_at.FromDatetime(T0 + timedelta(minutes=15))
    return j


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    async with asyncio.timeout(30):
        return await _read_topic(bootstrap, topic)


async def _read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every committed record of `topic` up to its current end (read_committed)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)  # the assignment of every partition
        partitions = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord[bytes, bytes]] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(*partitions, timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


@dataclasses.dataclass
class Door:
    settings: ServiceSettings
    running: RunningService
    app: AccountsApp
    channel: grpc.aio.Channel
    producer: AIOKafkaProducer
    travellers: accounts_pb2_grpc.TravellerServiceAsyncStub
    session: str = ""
    stopped: bool = False

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.session}"),)

    async def sign_up_and_in(self) -> str:
        email = f"t{uuid.uuid4().hex[:10]}@example.org"
        await self.travellers.SignUp(accounts_pb2.SignUpRequest(email=email, password=PASSWORD))
        reply = await self.travellers.SignIn(
            accounts_pb2.SignInRequest(email=email, password=PASSWORD)
        )
        return reply.session_token

    async def own(self, card: str) -> str:
        await self.travellers.AddCard(
            accounts_pb2.AddCardRequest(card_token=card), metadata=self.metadata
        )
        return card

    async def top_up(self, card: str, minor: int, key: str, currency: str = "GBP"):
        return await self.travellers.TopUp(
            accounts_pb2.TopUpRequest(
                card_token=card,
                amount=Money(amount_minor=minor, currency=currency),
                idempotency_key=key,
            ),
            metadata=self.metadata,
        )

    async def balance(self, card: str) -> accounts_pb2.GetBalanceResponse:
        return await self.travellers.GetBalance(
            accounts_pb2.GetBalanceRequest(card_token=card), metadata=self.metadata
        )

    async def movements(self, card: str, page_size: int = 0) -> list[tuple[int, str, int, int]]:
        """(kind, source, revision, amount) of every movement, newest first, all pages."""
        out: list[tuple[int, str, int, int]] = []
        token = ""
        while True:
            page = await self.travellers.ListBalanceMovements(
                accounts_pb2.ListBalanceMovementsRequest(
                    card_token=card, page_size=page_size, page_token=token
                ),
                metadata=self.metadata,
            )
            out += [
                (m.kind, m.source_id, m.revision, m.amount.amount_minor) for m in page.movements
            ]
            token = page.next_page_token
            if not token:
                return out

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        await self.producer.send_and_wait(topic, value, key=key.encode())

    async def publish_journeys(self, *journeys: events_pb2.PricedJourney) -> None:
        for j in journeys:
            await self.publish(self.settings.topics.journeys, j.card_token, j.SerializeToString())

    async def wait_stored(self, count: int) -> None:
        async def done() -> bool:
            recorder = self.app.recorder
            return recorder is not None and recorder.stats.stored >= count

        await wait_until(done)

    async def wait_balance(self, card: str, minor: int) -> None:
        async def reached() -> bool:
            return (await self.balance(card)).balance.amount_minor == minor

        await wait_until(reached)


async def start_door(settings: ServiceSettings) -> Door:
    app = build(settings)
    running = RunningService(app)
    port = await running.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    producer = idempotent_producer(settings.endpoints.kafka_bootstrap)
    await producer.start()
    return Door(
        settings,
        running,
        app,
        channel,
        producer,
        accounts_pb2_grpc.TravellerServiceStub(channel),
    )


async def stop_door(door: Door) -> None:
    if door.stopped:
        return
    door.stopped = True
    await door.channel.close()
    await door.producer.stop()
    await door.running.stop()


@pytest.fixture
async def door(settings_for) -> AsyncIterator[Door]:
    made = await start_door(settings_for("accounts"))
    try:
        made.session = await made.sign_up_and_in()
        yield made
    finally:
        await stop_door(made)


def refusal(exc: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str | None]:
    return exc.code(), reason_of(exc.trailing_metadata())


async def test_top_up_with_the_same_key_credits_once_and_publishes_one_event(
    door: Door,
) -> None:
    card = await door.own(new_card())
    first = await door.top_up(card, 2000, "order-1")
    again = await door.top_up(card, 2000, "order-1")
    assert (first.replayed, again.replayed) == (False, True)
    assert again.top_up_id == first.top_up_id
    assert first.balance_after == again.balance_after == gbp(2000)
    assert first.retailer_id == "retailer:cornershop"

    topic = door.settings.topics.topups

    async def one_event() -> bool:
        return len(await read_topic(door.settings.endpoints.kafka_bootstrap, topic)) >= 1

    await wait_until(one_event)

    # Accounts reads its own event back from `topups`: nothing is credited twice.
    async def read_back() -> bool:
        recorder = door.app.recorder
        return recorder is not None and recorder.stats.top_ups >= 1

    await wait_until(read_back)
    records = await read_topic(door.settings.endpoints.kafka_bootstrap, topic)
    assert len(records) == 1
    event = events_pb2.TopUp.FromString(records[0].value)
    assert (event.top_up_id, event.card_token, event.retailer_id) == (
        first.top_up_id,
        card,
        "retailer:cornershop",
    )
    assert event.amount == gbp(2000)
    assert event.service_day
    assert records[0].key == card.encode()
    assert (await door.balance(card)).balance == gbp(2000)
    assert await door.movements(card) == [
        (accounts_pb2.BalanceMovement.KIND_TOP_UP, first.top_up_id, 0, 2000)
    ]

    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await door.top_up(card, 2500, "order-1")
    assert refusal(reused.value) == (grpc.StatusCode.INVALID_ARGUMENT, "IDEMPOTENCY_KEY_REUSED")
    other = await door.own(new_card())
    with pytest.raises(grpc.aio.AioRpcError) as other_card:
        await door.top_up(other, 2000, "order-1")
    assert refusal(other_card.value)[1] == "IDEMPOTENCY_KEY_REUSED"
    assert (await door.balance(card)).balance == gbp(2000)


async def test_bad_top_ups_are_invalid_arguments_with_reasons(door: Door) -> None:
    card = await door.own(new_card())
    cases = [
        ((card, 0, "k1"), "BAD_AMOUNT"),
        ((card, -500, "k2"), "BAD_AMOUNT"),
        ((card, 50_001, "k3"), "BAD_AMOUNT"),
        ((card, 10**15, "k4"), "BAD_AMOUNT"),
        ((card, 1000, ""), "BAD_IDEMPOTENCY_KEY"),
        ((card, 1000, "x" * 200), "BAD_IDEMPOTENCY_KEY"),
        ((card, 1000, "nul\x00"), "BAD_IDEMPOTENCY_KEY"),
        (("tok_\x00bad", 1000, "k5"), "BAD_CARD_TOKEN"),
        (("", 1000, "k6"), "MISSING_CARD_TOKEN"),
    ]
    for args, reason in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await door.top_up(*args)
        assert refusal(refused.value) == (grpc.StatusCode.INVALID_ARGUMENT, reason), args
    with pytest.raises(grpc.aio.AioRpcError) as euro:
        await door.top_up(card, 1000, "k7", currency="EUR")
    assert refusal(euro.value) == (grpc.StatusCode.INVALID_ARGUMENT, "CURRENCY_MISMATCH")
    with pytest.raises(grpc.aio.AioRpcError) as not_mine:
        await door.top_up(new_card(), 1000, "k8")
    assert refusal(not_mine.value) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_YOUR_CARD")
    with pytest.raises(grpc.aio.AioRpcError) as bad_token:
        await door.travellers.ListBalanceMovements(
            accounts_pb2.ListBalanceMovementsRequest(card_token=card, page_token="garbage"),
            metadata=door.metadata,
        )
    assert refusal(bad_token.value) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_PAGE_TOKEN")
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await door.travellers.GetBalance(accounts_pb2.GetBalanceRequest(card_token=card))
    assert refusal(anonymous.value) == (grpc.StatusCode.UNAUTHENTICATED, "NOT_SIGNED_IN")
    assert (await door.balance(card)).balance == gbp(0)


async def test_retailer_top_ups_on_the_topic_credit_once_by_id(door: Door) -> None:
    card = await door.own(new_card())
    sale = events_pb2.TopUp(
        top_up_id=f"shop-{uuid.uuid4().hex[:8]}",
        card_token=card,
        retailer_id="retailer:cornershop",
        amount=gbp(1000),
        service_day=T0.date().isoformat(),
    )
    sale.sold_at.FromDatetime(T0)
    for _ in range(3):
        await door.publish(door.settings.topics.topups, card, sale.SerializeToString())

    async def handled() -> bool:
        recorder = door.app.recorder
        return recorder is not None and recorder.stats.top_ups >= 3

    await wait_until(handled)
    assert (await door.balance(card)).balance == gbp(1000)
    assert await door.movements(card) == [
        (accounts_pb2.BalanceMovement.KIND_TOP_UP, sale.top_up_id, 0, 1000)
    ]


async def test_balance_is_debited_by_revision_deltas_exactly_once_across_replay_and_restart(
    door: Door,
) -> None:
    card = await door.own(new_card())
    await door.top_up(card, 1000, "seed")
    jid = f"j-{uuid.uuid4().hex[:8]}"
    other = f"k-{uuid.uuid4().hex[:8]}"
    revisions = [
        journey(card, jid, 1, 280),
        journey(card, jid, 2, 170),  # an adjustment: refunds 1.10
        journey(card, other, 1, 350),
        journey(card, other, 2, 0),  # withdrawn: refunds it all
    ]
    await door.publish_journeys(*revisions)
    await door.publish_journeys(*revisions)  # a replay
    await door.publish_journeys(revisions[0])  # an older revision arriving late
    await door.wait_stored(9)
    expected = 1000 - 170
    assert (await door.balance(card)).balance == gbp(expected)
    movements = await door.movements(card, page_size=2)
    kind_journey = accounts_pb2.BalanceMovement.KIND_JOURNEY
    assert movements[:4] == [
        (kind_journey, other, 2, 350),
        (kind_journey, other, 1, -350),
        (kind_journey, jid, 2, 110),
        (kind_journey, jid, 1, -280),
    ]
    assert len(movements) == 5

    # A restart with a new consumer group replays the whole topic: nothing changes.
    await stop_door(door)
    settings = dataclasses.replace(
        door.settings, consumer_group=f"{door.settings.consumer_group}-again"
    )
    restarted = await start_door(settings)
    restarted.session = door.session
    try:
        await restarted.wait_stored(9)

        async def read_back() -> bool:
            recorder = restarted.app.recorder
            return recorder is not None and recorder.stats.top_ups >= 1

        await wait_until(read_back)
        assert (await restarted.balance(card)).balance == gbp(expected)
        assert len(await restarted.movements(card)) == 5
    finally:
        await stop_door(restarted)


async def test_negative_balance_puts_the_card_on_the_deny_list_until_topped_up(
    door: Door,
) -> None:
    card = await door.own(new_card())
    bootstrap = door.settings.endpoints.kafka_bootstrap
    follower = DenyListFollower(bootstrap, door.settings.topics.denylist, poll_timeout_ms=100)
    await follower.start()
    following = asyncio.create_task(follower.run())
    try:
        await door.top_up(card, 200, "first")
        await door.publish_journeys(journey(card, f"a-{card}", 1, 350))  # 2.00 - 3.50 < 0
        await door.wait_balance(card, -150)
        await door.publish_journeys(journey(card, f"b-{card}", 1, 280))  # deeper: no new ADD
        await door.wait_balance(card, -430)
        assert (await door.balance(card)).deny_listed is True

        async def blocked() -> bool:
            return follower.blocked(card)

        await wait_until(blocked, 20)
        changes = await read_topic(bootstrap, door.settings.topics.denylist)
        assert len(changes) == 1
        add = events_pb2.DenyListChange.FromString(changes[0].value)
        assert changes[0].key == card.encode()
        assert (add.card_token, add.action, add.reason, add.changed_by) == (
            card,
            events_pb2.DenyListChange.ACTION_ADD,
            ingest_pb2.DENY_REASON_UNPAID_DEBT,
            "service/accounts",
        )

        await door.top_up(card, 400, "second")  # -0.30: still in debt, stays listed
        assert (await door.balance(card)).deny_listed is True
        await door.top_up(card, 1000, "third")  # 9.70: off the list

        async def unblocked() -> bool:
            return not follower.blocked(card)

        await wait_until(unblocked, 20)
        changes = await read_topic(bootstrap, door.settings.topics.denylist)
        actions = [events_pb2.DenyListChange.FromString(r.value).action for r in changes]
        assert actions == [
            events_pb2.DenyListChange.ACTION_ADD,
            events_pb2.DenyListChange.ACTION_REMOVE,
        ]
        reply = await door.balance(card)
        assert (reply.balance, reply.deny_listed) == (gbp(970), False)
    finally:
        await follower.stop()
        following.cancel()
