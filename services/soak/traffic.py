"""The soak's traffic: a steady stream of signed tap batches over several validator streams,
the retailers' top-ups that fund the cards, and travellers reading their journeys (over
gRPC from accounts, and through the web portal).

Taps come in *slices*: a simulated service day of a few thousand new cards (the same
simulator and feed as the demo), one slice after another, on service days taken in turn
(`pacing.service_day_of_slice`). Each device's sequence numbers keep counting up from
slice to slice, so a tap id (`device:sequence`) is never reused by a later slice.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as clock_time
from pathlib import Path

import aiohttp
import grpc

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.common.v1 import money_pb2
from clearway.events.v1 import events_pb2
from clearway.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from clearway.kafka import ensure_topics, idempotent_producer, publish_many
from services.accounts.entrypoints.cli import sign_in
from services.fares.domain import FareData
from services.ingest.device_client import DeviceIdentity
from services.ingest.simulator.day import SimulatedDay, simulate_day
from services.ingest.simulator.stream import FLEET_SECRET, Tally, ingest_channel
from services.soak.pacing import TokenBucket, service_day_of_slice

RETAILER = "retailer:cornershop"
TOP_UP_MINOR = 3000  # £30: more than any card's simulated day costs, so none goes negative
READER_PASSWORD = "soak reader password"  # a local soak account, nothing else
BATCH_SIZE = 25


@dataclass(frozen=True, slots=True)
class Slice:
    """One slice of traffic: its taps (renumbered) and the top-ups funding its cards."""

    index: int
    day: SimulatedDay
    top_ups: list[events_pb2.TopUp]
    cards: list[str]


@dataclass(slots=True)
class Traffic:
    """What the soak sent and how it was answered, as it goes."""

    tally: Tally = field(default_factory=Tally)
    slices: int = 0
    top_ups: int = 0
    reads: Counter[str] = field(default_factory=Counter)  # accounts RPCs by outcome
    pages: Counter[str] = field(default_factory=Counter)  # portal pages by HTTP status
    recent_cards: deque[str] = field(default_factory=lambda: deque(maxlen=2000))


class SliceMaker:
    """Simulated slices, one after another, each device's sequence numbers carried on."""

    def __init__(self, feed: FareData, cards: int, seed: int, today: date, run_id: str) -> None:
        self.feed, self.cards, self.seed, self.today, self.run_id = (
            feed,
            cards,
            seed,
            today,
            run_id,
        )
        self._next_sequence: dict[str, int] = {}

    def make(self, index: int) -> Slice:
        """The `index`-th slice (CPU only: call it in a thread)."""
        service_day = service_day_of_slice(index, self.today)
        day = simulate_day(self.feed, service_day, self.cards, seed=self.seed * 100_003 + index)
        for device, taps in day.by_device.items():
            offset = self._next_sequence.get(device, 0)
            for tap in taps:
                tap.sequence_number += offset
            self._next_sequence[device] = max(t.sequence_number for t in taps)
        cards = sorted({t.card_token for ts in day.by_device.values() for t in ts if _is_token(t)})
        return Slice(index, day, self._top_ups(index, service_day, cards), cards)

    def _top_ups(self, index: int, service_day: date, cards: list[str]) -> list[events_pb2.TopUp]:
        sold_at = datetime.combine(service_day, clock_time(5, 30), self.feed.timezone)
        top_ups = []
        for n, card in enumerate(cards):
            top_up = events_pb2.TopUp(
                top_up_id=f"{self.run_id}-{index}-{n}",
                card_token=card,
                retailer_id=RETAILER,
                amount=money_pb2.Money(amount_minor=TOP_UP_MINOR, currency="GBP"),
                service_day=service_day.isoformat(),
            )
            top_up.sold_at.FromDatetime(sold_at.astimezone(UTC))
            top_ups.append(top_up)
        return top_ups


def _is_token(tap: events_pb2.Tap) -> bool:
    """A card token (not a deliberately malformed tap's empty or raw card number)."""
    return tap.card_token.startswith("tok_")


class TapSender:
    """Streams slices to ingest over `validators` concurrent validator streams, every batch
    signed by its device and paced by one token bucket shared by all streams."""

    def __init__(
        self, target: str, pki_dir: Path, validators: int, rate: float, traffic: Traffic
    ) -> None:
        self.target, self.pki_dir, self.validators = target, pki_dir, max(1, validators)
        self.bucket = TokenBucket(rate, burst=max(BATCH_SIZE, rate / 4), now=time.monotonic())
        self.traffic = traffic
        self.stop = asyncio.Event()
        self._identities: dict[str, DeviceIdentity] = {}

    def _signed(self, batch: list[events_pb2.Tap]) -> ingest_pb2.SignedTapBatch:
        device = batch[0].device_id
        if device not in self._identities:
            self._identities[device] = DeviceIdentity.derived(device, FLEET_SECRET)
        return self._identities[device].sign_batch(batch)

    async def send(self, part: Slice) -> None:
        """Every batch of the slice (or until `stop`), devices spread over the streams."""
        lanes: list[list[list[events_pb2.Tap]]] = [[] for _ in range(self.validators)]
        for i, device in enumerate(sorted(part.day.by_device)):
            taps = part.day.by_device[device]
            lanes[i % self.validators] += [
                taps[j : j + BATCH_SIZE] for j in range(0, len(taps), BATCH_SIZE)
            ]
        async with ingest_channel(self.target, self.pki_dir) as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            await asyncio.gather(*(self._lane(stub, lane) for lane in lanes if lane))

    async def _lane(
        self, stub: ingest_pb2_grpc.IngestServiceAsyncStub, batches: list[list[events_pb2.Tap]]
    ) -> None:
        """One validator stream: paced batches in order; after a broken link, resend what
        was not acknowledged (ingest answers a resend DUPLICATE)."""
        done = 0
        for attempt in range(5):
            pending = batches[done:]

            async def requests(
                pending: list[list[events_pb2.Tap]] = pending,
            ) -> AsyncIterator[ingest_pb2.StreamTapsRequest]:
                for batch in pending:
                    if self.stop.is_set():
                        return
                    await asyncio.sleep(self.bucket.reserve(len(batch), time.monotonic()))
                    yield ingest_pb2.StreamTapsRequest(signed=self._signed(batch))

            try:
                async for response in stub.StreamTaps(requests()):
                    self.traffic.tally.add(list(response.acks))
                    self.traffic.tally.sent += len(batches[done])
                    done += 1
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == 4:
                    raise
                self.traffic.tally.retried_batches += 1
                await asyncio.sleep(0.5 * (attempt + 1))


async def run_taps(
    maker: SliceMaker,
    sender: TapSender,
    bootstrap: str,
    topups_topic: str,
    slice_s: float,
) -> None:
    """Slice after slice until the sender is stopped. While one slice streams, the next is
    simulated and its cards are funded: its top-ups trickle onto `topups` over most of
    the slice's time, a retailer's sales through the day rather than one burst."""
    await ensure_topics(bootstrap, [topups_topic])
    producer = idempotent_producer(bootstrap)
    await producer.start()
    traffic = sender.traffic

    async def fund(part: Slice, over_s: float) -> None:
        ticks = max(1, int(over_s))
        per_tick = -(-len(part.top_ups) // ticks)
        for i in range(0, len(part.top_ups), per_tick):
            chunk = part.top_ups[i : i + per_tick]
            records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = [
                (t.card_token.encode(), t.SerializeToString(deterministic=True), []) for t in chunk
            ]
            await publish_many(producer, topups_topic, records)
            traffic.top_ups += len(chunk)
            if over_s > 0:
                await asyncio.sleep(over_s / ticks)

    async def next_slice(index: int) -> Slice:
        part = await asyncio.to_thread(maker.make, index)
        await fund(part, 0.7 * slice_s)
        return part

    try:
        first = await asyncio.to_thread(maker.make, 0)
        await fund(first, 0)
        upcoming = asyncio.create_task(next_slice(1))
        part, index = first, 1
        while not sender.stop.is_set():
            traffic.recent_cards.extend(part.cards)  # readers look at cards as they travel
            await sender.send(part)
            traffic.slices += 1
            if sender.stop.is_set():
                break
            part = await upcoming  # funded by now, or its funding is what holds us up
            index += 1
            upcoming = asyncio.create_task(next_slice(index))
        upcoming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await upcoming
    finally:
        await producer.stop()


def _outcome(exc: grpc.aio.AioRpcError) -> str:
    return exc.code().name


async def accounts_reader(
    target: str,
    traffic: Traffic,
    stop: asyncio.Event,
    every_s: float,
    *,
    travellers: int = 4,
    seed: int = 0,
) -> None:
    """Travellers in turn add a recent card, read its journeys (twice: the second from the
    page cache), its balance, and remove it again, every `every_s` seconds."""
    rng = random.Random(seed)
    async with grpc.aio.insecure_channel(target) as channel:
        sessions = [
            await sign_in(
                channel, f"soak-reader-{k}@soak.clearway.example", READER_PASSWORD, sign_up=True
            )
            for k in range(travellers)
        ]
        traveller = accounts_pb2_grpc.TravellerServiceStub(channel)
        history = accounts_pb2_grpc.AccountsServiceStub(channel)
        turn = 0
        while not stop.is_set():
            await _sleep_unless(stop, every_s)
            if not traffic.recent_cards:
                continue
            card = rng.choice(traffic.recent_cards)
            metadata = sessions[turn % len(sessions)]
            turn += 1
            try:
                await traveller.AddCard(
                    accounts_pb2.AddCardRequest(card_token=card), metadata=metadata, timeout=10
                )
                for _ in range(2):
                    await history.ListJourneys(
                        accounts_pb2.ListJourneysRequest(card_token=card, page_size=20),
                        metadata=metadata,
                        timeout=10,
                    )
                await traveller.GetBalance(
                    accounts_pb2.GetBalanceRequest(card_token=card), metadata=metadata, timeout=10
                )
                await traveller.RemoveCard(
                    accounts_pb2.RemoveCardRequest(card_token=card), metadata=metadata, timeout=10
                )
                traffic.reads["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                traffic.reads[_outcome(exc)] += 1


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def portal_reader(
    portal_url: str,
    accounts_target: str,
    traffic: Traffic,
    stop: asyncio.Event,
    *,
    every_s: float,
    seed: int = 0,
) -> None:
    """A traveller signed in to the web portal looks at a recent card's page and journeys
    every `every_s` seconds (the card added and removed over gRPC, as its own session)."""
    rng = random.Random(seed + 1)
    email = "soak-portal@soak.clearway.example"
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        grpc.aio.insecure_channel(accounts_target) as channel,
        aiohttp.ClientSession(cookie_jar=jar, timeout=timeout) as http,
    ):
        metadata = await sign_in(channel, email, READER_PASSWORD, sign_up=True)
        traveller = accounts_pb2_grpc.TravellerServiceStub(channel)
        async with http.get(f"{portal_url}/sign-in") as page:
            found = _CSRF.search(await page.text())
        csrf = found[1] if found else ""
        form = {"email": email, "password": READER_PASSWORD, "csrf_token": csrf}
        async with http.post(f"{portal_url}/sign-in", data=form, allow_redirects=False) as reply:
            traffic.pages[f"sign-in {reply.status}"] += 1
        while not stop.is_set():
            await _sleep_unless(stop, every_s)
            if not traffic.recent_cards:
                continue
            card = rng.choice(traffic.recent_cards)
            try:
                await traveller.AddCard(
                    accounts_pb2.AddCardRequest(card_token=card), metadata=metadata, timeout=10
                )
                for path in ("/cards", f"/cards/{card}", f"/cards/{card}/journeys"):
                    async with http.get(f"{portal_url}{path}", allow_redirects=False) as page:
                        await page.read()
                        traffic.pages[str(page.status)] += 1
                await traveller.RemoveCard(
                    accounts_pb2.RemoveCardRequest(card_token=card), metadata=metadata, timeout=10
                )
            except grpc.aio.AioRpcError as exc:
                traffic.pages[f"grpc {_outcome(exc)}"] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                traffic.pages[type(exc).__name__] += 1


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
