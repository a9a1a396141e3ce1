"""The demo's council: Camden's youth leisure allowance granted by an officer to young
people, spent at two providers' point-of-service devices on the demo day, and checked
against what settlement says the council owes the providers (docs/benefits.md)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from functools import partial
from typing import TypeVar
from zoneinfo import ZoneInfo

import asyncpg
import grpc
from aiokafka import AIOKafkaConsumer, TopicPartition
from cryptography.hazmat.primitives import serialization

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.benefits.v1 import benefits_pb2, benefits_pb2_grpc
from clearway.db import create_pool
from clearway.kafka import client_options
from clearway.money import Money
from clearway.retry import retry_while
from clearway.scheme.model import EntitlementScheme, Scheme
from services.accounts.redemption_device import RedemptionDevice
from services.accounts.service_layer.benefits_admin import add_officer, register_device

COUNCIL = "funder:camden"
YOUTH_SCHEME = "camden-youth-leisure"
OFFICER_EMAIL = "officer@camden.demo.clearway.example"
OFFICER_PASSWORD = "demo officer password"  # a demo account on a local run, nothing else
YOUTH_PASSWORD = "demo youth password"
# The two providers and what the demo's young people buy there.
PROVIDERS = {
    "provider:camden-leisure": ("swimming", "gym", "pitch_hire"),
    "provider:soundbox": ("studio_hire",),
}
YOUNG_PEOPLE = 12
# Redemptions are presented on the demo day from 10:00; a till may send them up to 72
# hours late.
MAX_AGE = timedelta(hours=70)
# What a call may answer while accounts (or PostgreSQL behind it) restarts: try again,
# with the same idempotency key.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# A quick reconnect after accounts restarts (gRPC's default back-off grows to two minutes).
RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
T = TypeVar("T")


async def patiently(call: Callable[[], Awaitable[T]], patience_s: float) -> T:
    """`call()`, again while it fails with a retryable status, for up to `patience_s`
    seconds (0: once). Only for calls that are safe to repeat (idempotency keys)."""
    return await retry_while(
        call,
        lambda exc: isinstance(exc, grpc.aio.AioRpcError) and exc.code() in RETRYABLE,
        patience_s,
        pause_s=0.2,
        growth=1.5,
    )


@dataclass
class BenefitsRun:
    """What the demo's council did, and what settlement must show for it."""

    granted: int = 0
    redeemed_minor: Counter[str] = field(default_factory=Counter)  # by provider
    redemptions: Counter[str] = field(default_factory=Counter)  # by provider
    refused: Counter[str] = field(default_factory=Counter)  # by reason code
    replayed: int = 0
    left_minor: dict[str, int] = field(default_factory=dict)  # by young person
    expected_left_minor: dict[str, int] = field(default_factory=dict)
    skipped: str = ""
    cards: list[str] = field(default_factory=list)  # the young people's cards
    # What must never reach a log: the sessions handed out, the tills' private keys (hex).
    secrets: list[str] = field(default_factory=list, repr=False)

    @property
    def total_minor(self) -> int:
        """Every authorised redemption's amount."""
        return sum(self.redeemed_minor.values())


def _metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _born(day: date, age: int, rng: random.Random) -> date:
    """A date of birth `age` whole years before `day` (the birthday 1 to 300 days past)."""
    anniversary = date(day.year - age, day.month, min(day.day, 28))
    return anniversary - timedelta(days=rng.randint(1, 300))


@dataclass
class CouncilDay:
    """The demo's council, providers and young people on one day, over one channel."""

    scheme: Scheme
    youth: EntitlementScheme
    day: date
    rng: random.Random
    channel: grpc.aio.Channel
    devices: dict[str, RedemptionDevice]
    run: BenefitsRun = field(default_factory=BenefitsRun)
    patience_s: float = 0.0  # how long a call is retried while accounts is away

    async def call(self, rpc: Callable[[], Awaitable[T]]) -> T:
        """One RPC, retried with `patience_s` (every call here is safe to repeat)."""
        return await patiently(rpc, self.patience_s)

    @property
    def zone(self) -> ZoneInfo:
        """The scheme's time zone (service days and tills' clocks)."""
        return ZoneInfo(self.scheme.calendar.timezone)

    def presented_at(self) -> datetime:
        """A time during the demo day's opening hours, as a till stamps it."""
        hour, minute = self.rng.randint(10, 19), self.rng.choice((0, 15, 30, 45))
        local = datetime.combine(self.day, clock_time(hour, minute), self.zone)
        return local.astimezone(UTC)

    def money(self, minor: int) -> Money:
        """`minor` in the scheme's currency."""
        return Money(minor, self.scheme.currency)

    async def signed_in(self, email: str, password: str) -> tuple[tuple[str, str], ...]:
        """The session metadata of `email` (signed up first when new)."""
        travellers = accounts_pb2_grpc.TravellerServiceStub(self.channel)
        try:
            await self.call(
                lambda: travellers.SignUp(
                    accounts_pb2.SignUpRequest(email=email, password=password), timeout=10
                )
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        reply = await self.call(
            lambda: travellers.SignIn(
                accounts_pb2.SignInRequest(email=email, password=password), timeout=10
            )
        )
        self.run.secrets.append(reply.session_token)
        return _metadata(reply.session_token)

    async def enrol(
        self, n: int, officer: tuple[tuple[str, str], ...]
    ) -> tuple[str, str, tuple[tuple[str, str], ...], str]:
        """Young person `n` signs up and adds a scheme card; the officer grants them the
        allowance from the demo day. Their email, card, session and entitlement id."""
        email = f"youth-{n:02d}@demo.clearway.example"
        session = await self.signed_in(email, YOUTH_PASSWORD)
        card = f"sc_{self.rng.getrandbits(56):014x}"
        self.run.cards.append(card)
        await self.call(  # adding the card again leaves it unchanged
            lambda: accounts_pb2_grpc.TravellerServiceStub(self.channel).AddCard(
                accounts_pb2.AddCardRequest(card_token=card, label="youth card"),
                metadata=session,
                timeout=10,
            )
        )
        born = _born(self.day, self.rng.randint(self.youth.min_age, self.youth.max_age), self.rng)
        grant = benefits_pb2.GrantEntitlementRequest(
            traveller_email=email,
            scheme_id=YOUTH_SCHEME,
            date_of_birth=born.isoformat(),
            residence_area="camden",
            evidence="demo: school letter seen",
            idempotency_key=f"demo-grant-{n:02d}",
            valid_from=self.day.isoformat(),  # the application's day
        )
        granted = await self.call(
            lambda: benefits_pb2_grpc.OfficerServiceStub(self.channel).GrantEntitlement(
                grant, metadata=officer, timeout=10
            )
        )
        self.run.granted += 1
        return email, card, session, granted.entitlement.entitlement_id

    async def visits(self, n: int, card: str) -> int:
        """Young person `n`'s one to three visits at the providers; what they spent."""
        spent = 0
        for visit in range(self.rng.randint(1, 3)):
            provider = self.rng.choice(sorted(PROVIDERS))
            category = self.rng.choice(PROVIDERS[provider])
            amount = self.rng.randrange(300, self.youth.per_visit_limit_minor + 1, 50)
            if spent + amount > self.youth.allowance_per_month_minor:
                break
            key = f"demo-{n:02d}-{visit}"
            device = self.devices[provider]
            at = self.presented_at()
            answer = await self.call(
                partial(
                    device.redeem,
                    *(self.channel, card, category, self.money(amount), key),
                    requested_at=at,
                )
            )
            spent += amount
            self.run.redeemed_minor[provider] += amount
            self.run.redemptions[provider] += 1
            if n == 1 and visit == 0:  # the till retries with the same key: redeemed once
                again = await self.call(
                    partial(device.redeem, self.channel, card, category, self.money(amount), key)
                )
                same = again.replayed and again.redemption_id == answer.redemption_id
                self.run.replayed += int(same)
        return spent

    async def over_the_limit(self, n: int, card: str) -> None:
        """A visit over the per-visit limit: refused, with its reason code."""
        at = self.presented_at()
        try:
            await self.call(
                lambda: self.devices["provider:camden-leisure"].redeem(
                    self.channel,
                    card,
                    "swimming",
                    self.money(self.youth.per_visit_limit_minor + 500),
                    f"demo-{n:02d}-over",
                    requested_at=at,
                )
            )
        except grpc.aio.AioRpcError as exc:
            reason = dict(exc.trailing_metadata() or ()).get("reason-code", "?")
            self.run.refused[str(reason)] += 1

    async def left(self, session: tuple[tuple[str, str], ...], entitlement_id: str) -> int:
        """What the young person's movements of the demo day's month leave of it."""
        moves = await self.call(
            lambda: benefits_pb2_grpc.BenefitsServiceStub(self.channel).ListEntitlementMovements(
                benefits_pb2.ListEntitlementMovementsRequest(
                    entitlement_id=entitlement_id, page_size=100
                ),
                metadata=session,
                timeout=10,
            )
        )
        month = f"{self.day:%Y-%m}"
        return sum(m.amount.amount_minor for m in moves.movements if m.month == month)


async def provision(scheme: Scheme, pg_dsn: str, db_schema: str) -> dict[str, RedemptionDevice]:
    """As the scheme's engineers do (`clearway benefits officers add`, `devices register`):
    Camden's officer, and one point-of-service device per provider."""
    pool = await create_pool(pg_dsn, db_schema, max_size=2)
    try:
        await add_officer(
            pool, OFFICER_EMAIL, COUNCIL, scheme=scheme, create_with_password=OFFICER_PASSWORD
        )
        devices = {}
        for provider in PROVIDERS:
            device = RedemptionDevice.generate(f"pos-{provider.split(':')[1]}-1")
            await register_device(pool, device.device_id, provider, device.public_key, scheme)
            devices[provider] = device
        return devices
    finally:
        await pool.close()


async def provision_patiently(
    scheme: Scheme, pg_dsn: str, db_schema: str, patience_s: float
) -> dict[str, RedemptionDevice]:
    """`provision`, again while PostgreSQL (or the schema accounts creates at start) is not
    there yet, for up to `patience_s` seconds; each attempt starts afresh in a new schema
    state, which `add_officer` and a new device id per attempt tolerate."""
    return await retry_while(
        lambda: provision(scheme, pg_dsn, db_schema),
        (OSError, asyncpg.PostgresError, asyncpg.InterfaceError),
        patience_s,
    )


async def run_benefits(
    scheme: Scheme,
    accounts_address: str,
    pg_dsn: str,
    db_schema: str,
    day: date,
    *,
    seed: int,
    patience_s: float = 0.0,
) -> BenefitsRun:
    """Provision Camden's officer and the providers' devices, sign young people up with a
    scheme card each, grant them the youth allowance from the demo day, and redeem on that
    day at both providers (one refused over the per-visit limit, one replayed). With
    `patience_s`, every call is retried (same idempotency keys) while accounts is away."""
    zone = ZoneInfo(scheme.calendar.timezone)
    if datetime.now(UTC) - datetime.combine(day, clock_time(10), zone) > MAX_AGE:
        return BenefitsRun(skipped="the demo day is too long ago for a till's redemptions")
    youth = scheme.entitlement_scheme(YOUTH_SCHEME, day)
    if youth is None:
        return BenefitsRun(skipped=f"{YOUTH_SCHEME} is not in the scheme on {day}")
    devices = await provision_patiently(scheme, pg_dsn, db_schema, patience_s)
    async with grpc.aio.insecure_channel(accounts_address, options=RECONNECT_OPTIONS) as channel:
        council = CouncilDay(
            scheme, youth, day, random.Random(seed + 3), channel, devices, patience_s=patience_s
        )
        council.run.secrets += [_raw_private_hex(d) for d in devices.values()]
        officer = await council.signed_in(OFFICER_EMAIL, OFFICER_PASSWORD)
        for n in range(1, YOUNG_PEOPLE + 1):
            email, card, session, entitlement_id = await council.enrol(n, officer)
            spent = await council.visits(n, card)
            if n == 2:
                await council.over_the_limit(n, card)
            council.run.left_minor[email] = await council.left(session, entitlement_id)
            council.run.expected_left_minor[email] = youth.allowance_per_month_minor - spent
        return council.run


def _raw_private_hex(device: RedemptionDevice) -> str:
    raw = device.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return raw.hex()


def print_benefits(run: BenefitsRun, currency: str) -> None:
    """What the council's allowance did on the day."""
    print("\nCouncil benefits (funder:camden, youth leisure allowance)")
    if run.skipped:
        print(f"  skipped: {run.skipped}")
        return
    print(f"  granted     {run.granted} young people, by the council's officer {OFFICER_EMAIL}")
    for provider in sorted(run.redeemed_minor):
        print(
            f"  redeemed    {run.redemptions[provider]:>3} at {provider:<24}"
            f" {Money(run.redeemed_minor[provider], currency)!s:>10}"
        )
    for reason, count in sorted(run.refused.items()):
        print(f"  refused     {count} ({reason})")
    print(f"  replayed    {run.replayed} (a till's retry with the same key: redeemed once)")


async def wait_for_postings(bootstrap: str, topic: str, count: int, timeout_s: float = 60) -> int:
    """Until `topic` holds at least `count` records (accounts relays each authorised
    redemption's posting from its outbox, a moment after answering); how many it holds."""
    # Subscribed (without a group), so that the client fetches the topic's metadata: an
    # unsubscribed consumer never learns its partitions and waited out the whole timeout.
    consumer = AIOKafkaConsumer(topic, **client_options(bootstrap), enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
            held = sum((await consumer.end_offsets(partitions)).values()) if partitions else 0
            if held >= count or asyncio.get_running_loop().time() > deadline:
                return held
            await asyncio.sleep(0.5)
            await consumer.topics()  # refresh the metadata
    finally:
        await consumer.stop()
