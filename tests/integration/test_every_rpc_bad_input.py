"""Every RPC of every Clearway service, swept with bad input, against the real services.

ingest, fares, settlement and accounts run in-process on real Kafka, PostgreSQL and Redis.
The methods come from the generated descriptors (`DESCRIPTOR.services_by_name`), never a
hand-written list, and the requests from the message descriptors:

1. without credentials, an empty request: never UNKNOWN or INTERNAL; a method that needs a
   caller identity answers UNAUTHENTICATED or PERMISSION_DENIED. On a mutual-TLS port
   (settlement, ingest's admin port) a caller without a certificate of the scheme never gets
   as far as a status: the TLS handshake is refused (grpcio cannot request a client
   certificate without requiring it), so the sweep checks that refusal, and that a
   certificate of the wrong identity is PERMISSION_DENIED.
2. with valid credentials of the method's door (the operations role's certificate, a
   traveller's or an officer's session, a registered device's signature over the payload),
   a baseline request and hostile variants of it, one field at a time: strings empty, of
   10,000 characters, with a NUL byte, non-ASCII, impossible dates, garbage page tokens;
   integers 0, -1 and the type's maximum; enums out of range; repeated fields with 1,000
   elements. Never UNKNOWN, INTERNAL or UNAVAILABLE (the infrastructure is up), a reason
   code on every refusal, and no card token, password or reset token of the request
   echoed where it does not belong.
3. the methods that act on a traveller's state get real state, made by the fixture the way
   it comes about in service (`_provision_held`): a traveller's cards tap at validators
   (signed batches through ingest), fares closes the day (each entry without an exit
   priced incomplete), accounts records the priced journeys from `journeys` and its
   charging loop bills two bank cards' day (the simulated acquirer declines one: a debt;
   approves the other), the traveller claims one journey, and a second traveller resets
   a password with the token read from the mail accounts queued. So the baseline of
   ClaimMissingExit claims an incomplete journey, RetryBankCharge's pays a debt now (the
   acquirer declines again: the debt stays) and ResetPassword's spends a live token, and
   every other field's hostile values meet the checks behind the lookup. `DEEPER` adds the
   edges of those checks: exit times around the entry, a stop in no fare data or that no
   fare reaches, a journey claimed already, complete or another card's; a charge paid
   already or another card's; a spent token; passwords of 11, 12, 256 and 257 characters.
   A case that succeeds uses its state up, so the next case gets fresh state
   (`Door.renew`); and each of these baselines must succeed, or the method would be swept
   shallowly again.

Failures are collected per method, so one run reports every case that broke.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeAlias, TypeVar
from uuid import uuid4
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.auth import Principal, operations_role
from clearway.benefits.v1 import benefits_pb2
from clearway.events.v1 import events_pb2
from clearway.fares.v1 import fares_pb2, fares_pb2_grpc
from clearway.ingest.v1 import ingest_pb2
from clearway.kafka import delete_topics_with_prefix
from clearway.pki import secure_channel
from clearway.rpc import reason_of
from clearway.runtime import RunningService
from clearway.settings import ServiceSettings
from clearway.settlement.v1 import settlement_pb2
from conftest import service_settings
from services.accounts.adapters.simulated_acquirer import SimulatedAcquirer
from services.accounts.app import build as build_accounts
from services.accounts.domain.redemptions import REDEMPTION_CONTEXT
from services.accounts.entrypoints.cli import sign_in
from services.accounts.redemption_device import RedemptionDevice
from services.accounts.service_layer.benefits_admin import add_officer, register_device
from services.fares.app import build as build_fares
from services.ingest.app import build as build_ingest
from services.ingest.device_client import DeviceIdentity
from services.ingest.domain.devices import ASSERTION_CONTEXT, BATCH_CONTEXT
from services.ingest.simulator.day import SimulatedDay
from services.ingest.simulator.stream import register_devices, send_day
from services.settlement.app import build as build_settlement

pytestmark = pytest.mark.integration

MODULES = (ingest_pb2, fares_pb2, settlement_pb2, accounts_pb2, benefits_pb2)
SWEPT = {
    "clearway.ingest.v1.IngestService",
    "clearway.ingest.v1.DeviceRegistryService",
    "clearway.ingest.v1.DenyListAdminService",
    "clearway.fares.v1.FaresService",
    "clearway.settlement.v1.SettlementService",
    "clearway.accounts.v1.AccountsService",
    "clearway.accounts.v1.TravellerService",
    "clearway.benefits.v1.OfficerService",
    "clearway.benefits.v1.BenefitsService",
    "clearway.benefits.v1.RedemptionService",
}
# Methods that serve a caller without an identity, as docs/accounts.md and docs/security.md
# say: signing up and in, and the password reset; fares is internal (never exposed) and
# authenticates nobody.
PUBLIC = {
    "clearway.accounts.v1.TravellerService/SignUp",
    "clearway.accounts.v1.TravellerService/SignIn",
    "clearway.accounts.v1.TravellerService/RequestPasswordReset",
    "clearway.accounts.v1.TravellerService/ResetPassword",
    "clearway.fares.v1.FaresService/QuoteFare",
    "clearway.fares.v1.FaresService/CloseServiceDay",
    "clearway.fares.v1.FaresService/GetCapsProgress",
}
# What the proto says only the operations role may do, besides ingest's admin services.
OPERATIONS_ONLY = {"clearway.settlement.v1.SettlementService/ClosePeriod"}
REFUSED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
NEVER_FOR_A_CLIENT_MISTAKE = NEVER | {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,  # our deadline: the server hung on the request
}
CALL_TIMEOUT_S = 30.0
STREAM_IDLE_S = 0.5  # a server stream quiet this long is open and well (the deny list's)

PASSWORD = "a sweep traveller's password"
COUNCIL = "funder:camden"
PROVIDER = "provider:camden-leisure"
OPERATOR = "LUL"
STOP = "KGX"
EXIT_STOP = "OXC"
# The methods that act on state the fixture makes (`Held`).
CLAIM = "clearway.accounts.v1.TravellerService/ClaimMissingExit"
RETRY = "clearway.accounts.v1.TravellerService/RetryBankCharge"
RESET = "clearway.accounts.v1.TravellerService/ResetPassword"
LONDON = ZoneInfo("Europe/London")
# The day the held cards tapped: inside ingest's 14-day tap age and the 28-day claim
# window, and not the day the fares sweep closes (`_recent_day()`).
HELD_DAYS_AGO = 3
# Incomplete journeys to claim: each case that claims one uses it up (4 do: the baseline,
# a zero `nanos`, an unset exit time, a same-station exit).
OPEN_JOURNEYS = 8
RESET_MAIL = re.compile(r"reset token \(valid for \d+ minutes\): (\S+)")
WAIT_S = 60.0  # for the held state to come through ingest, fares and accounts
# Secrets the hostile requests carry: none may come back where it does not belong.
CANARY_CARD = "tok_canarysweep0001"
CANARY_PAN = "4111111111111111"
CANARY_PASSWORD = "canary password sweep 0001"
SECRET_FIELDS = {"card_token", "password", "new_password", "reset_token"}
LONG = "x" * 10_000
HOSTILE_STRINGS = (
    ("empty", ""),
    ("10k chars", LONG),
    ("NUL byte", "nul\x00byte"),
    ("non-ASCII", "ünïcødé ☃ 東京 \u202e"),
)
BAD_DATES = (("Feb 30", "2026-02-30"), ("not a date", "not-a-date"), ("month 13", "2026-13"))
GARBAGE_TOKENS = (("garbage token", "%%garbage%%"), ("base64 junk", "eyJqdW5rIjp0cnVlfQ"))
INT_MAX = {
    FieldDescriptor.TYPE_INT32: 2**31 - 1,
    FieldDescriptor.TYPE_SINT32: 2**31 - 1,
    FieldDescriptor.TYPE_SFIXED32: 2**31 - 1,
    FieldDescriptor.TYPE_INT64: 2**63 - 1,
    FieldDescriptor.TYPE_SINT64: 2**63 - 1,
    FieldDescriptor.TYPE_SFIXED64: 2**63 - 1,
    FieldDescriptor.TYPE_UINT32: 2**32 - 1,
    FieldDescriptor.TYPE_FIXED32: 2**32 - 1,
    FieldDescriptor.TYPE_UINT64: 2**64 - 1,
    FieldDescriptor.TYPE_FIXED64: 2**64 - 1,
}
SIGNED_INTS = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
}
DATE_FIELDS = {
    "service_day",
    "period_id",
    "valid_from",
    "date_of_birth",
    "month",
}


def all_methods() -> list[MethodDescriptor]:
    """Every method of every service of the generated modules."""
    return [
        method
        for module in MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]


def path_of(method: MethodDescriptor) -> str:
    return f"{method.containing_service.full_name}/{method.name}"


# -- requests ---------------------------------------------------------------------------

# A field that holds a signed payload: (payload message, the field holding its bytes).
ENVELOPES: dict[str, tuple[type[Message], str]] = {
    "clearway.ingest.v1.SignedTapBatch": (ingest_pb2.TapBatch, "batch"),
    "clearway.ingest.v1.SignedDeviceAssertion": (ingest_pb2.DeviceAssertion, "assertion"),
    "clearway.benefits.v1.RedeemRequest": (benefits_pb2.Redemption, "redemption"),
}
PAYLOAD = "@"  # a path step into an envelope's payload
# A field descriptor, of the pure-Python or the upb implementation (the stubs tell them apart).
Field: TypeAlias = Any


@dataclass
class Logical:
    """A request before signing: the request and its envelopes' payloads by path."""

    request: Message
    payloads: dict[tuple[Any, ...], Message] = field(default_factory=dict)

    def copy(self) -> Logical:
        request = type(self.request)()
        request.CopyFrom(self.request)
        payloads = {}
        for where, payload in self.payloads.items():
            payloads[where] = type(payload)()
            payloads[where].CopyFrom(payload)
        return Logical(request, payloads)

    def node(self, path: tuple[Any, ...]) -> Any:
        """The message at `path` (through an envelope's payload at PAYLOAD)."""
        if PAYLOAD in path:
            cut = path.index(PAYLOAD)
            return _walk(self.payloads[path[:cut]], path[cut + 1 :])
        return _walk(self.request, path)


def _walk(message: Message, path: tuple[Any, ...]) -> Any:
    node: Any = message
    for step in path:
        node = node[step] if isinstance(step, int) else getattr(node, step)
    return node


@dataclass(frozen=True)
class Case:
    label: str
    mutate: Callable[[Logical], None] | None = None  # None: the request as built
    # A field of the request itself (an envelope's device, key or signature): set after
    # the payloads are signed; a field of a payload: before, so the signature holds.
    after_seal: bool = False

    def apply(self, base: Logical, seal: Callable[[Logical], Message]) -> Logical:
        """The request of this case, signed, and its payloads."""
        logical = base.copy()
        if self.mutate is not None and not self.after_seal:
            self.mutate(logical)
        sealed = Logical(seal(logical), logical.payloads)
        if self.mutate is not None and self.after_seal:
            self.mutate(sealed)
        return sealed


def _set(path: tuple[Any, ...], f: Field, value: Any) -> Callable[[Logical], None]:
    def mutate(logical: Logical) -> None:
        parent = logical.node(path)
        if f.is_repeated:
            parent.ClearField(f.name)
            if f.type == FieldDescriptor.TYPE_MESSAGE:
                for element in value:
                    getattr(parent, f.name).add().CopyFrom(element)
            else:
                getattr(parent, f.name).extend(value)
        else:
            setattr(parent, f.name, value)

    return mutate


def _string_values(f: Field) -> list[tuple[str, str]]:
    values = list(HOSTILE_STRINGS)
    if f.name in DATE_FIELDS or f.name.endswith("_day"):
        values += BAD_DATES
    if f.name == "page_token":
        values += GARBAGE_TOKENS
    if f.name == "card_token":
        values += [("canary token", CANARY_CARD), ("card number", CANARY_PAN)]
    if f.name in ("password", "new_password"):
        values += [("canary password", CANARY_PASSWORD)]
    return values


def _scalar_values(f: Field, current: Any) -> list[tuple[str, Any]]:
    t = f.type
    if t == FieldDescriptor.TYPE_STRING:
        return _string_values(f)
    if t == FieldDescriptor.TYPE_BYTES:
        return [("no bytes", b""), ("10k bytes", b"\xa5" * 10_000), ("garbage", b"\x00garbage")]
    if t == FieldDescriptor.TYPE_BOOL:
        return [("flipped", not current)]
    if t == FieldDescriptor.TYPE_ENUM:
        return [("enum 0", 0), ("enum 999", 999)]
    if t in INT_MAX:
        values: list[tuple[str, Any]] = [("0", 0), ("max", INT_MAX[t])]
        if t in SIGNED_INTS:
            values.insert(1, ("-1", -1))
        if f.full_name == "google.protobuf.Timestamp.seconds":  # valid, at the range's ends
            values += [("year 1", -62_135_596_800), ("year 9999", 253_402_300_799)]
        return values
    return []


def _type_of(f: Field) -> Descriptor:
    """The message type of a message field."""
    descriptor: Descriptor = f.message_type
    assert descriptor is not None
    return descriptor


def _thousand(f: Field, current: Any) -> list[Any]:
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        element = current[0] if len(current) else GetMessageClass(_type_of(f))()
        return [element] * 1000
    if f.type == FieldDescriptor.TYPE_STRING:
        return [current[0] if len(current) else "x"] * 1000
    if f.type == FieldDescriptor.TYPE_BYTES:
        return [b"x"] * 1000
    return [1] * 1000


def hostile_cases(base: Logical, depth: int = 4) -> list[Case]:
    """The baseline, the empty request, and each field of the request (and of its signed
    payloads) set to each hostile value in turn."""
    cases = [Case("baseline"), Case("empty request", _empty)]

    def visit(message: Message, path: tuple[Any, ...], level: int) -> None:
        descriptor = message.DESCRIPTOR
        envelope = ENVELOPES.get(descriptor.full_name)
        for f in descriptor.fields:
            where = f"{'.'.join(str(p) for p in path if p != PAYLOAD)}.{f.name}".lstrip(".")
            current = getattr(message, f.name)
            if envelope is not None and f.name == envelope[1]:
                payload_path = (*path, PAYLOAD)
                visit(base.node(payload_path), payload_path, level + 1)
                continue
            if f.is_repeated:
                cases.append(
                    Case(
                        f"{where}: 1000 elements",
                        _set(path, f, _thousand(f, current)),
                        after_seal=PAYLOAD not in path,
                    )
                )
                if f.type == FieldDescriptor.TYPE_MESSAGE and len(current) and level < depth:
                    visit(current[0], (*path, f.name, 0), level + 1)
                continue
            if f.type == FieldDescriptor.TYPE_MESSAGE:
                if level < depth:
                    visit(current, (*path, f.name), level + 1)
                continue
            for label, value in _scalar_values(f, current):
                cases.append(Case(f"{where}: {label}", _set(path, f, value), PAYLOAD not in path))

    visit(base.request, (), 0)
    return cases


def _empty(logical: Logical) -> None:
    logical.request.Clear()
    logical.payloads.clear()


# -- the services and the doors' credentials ---------------------------------------------


@dataclass
class Held:
    """What the fixture made for the methods that act on a traveller's state (see
    `_provision_held`): one traveller's cards, journeys and charges, and another's account
    whose password is reset."""

    owner: tuple[tuple[str, str], ...]  # the session of the traveller holding the cards
    entry_at: datetime  # when each incomplete journey entered, at STOP
    open_journeys: list[tuple[str, str]]  # (card, journey id): incomplete, not claimed
    claimed: tuple[str, str]  # (card, journey id): claimed by the fixture
    complete: tuple[str, str]  # (card, journey id): entry and exit, nothing to claim
    debt: tuple[str, str]  # (bank card, charge id): declined, in debt
    paid: tuple[str, str]  # (bank card, charge id): charged
    reset_email: str
    spent_token: str  # a reset token used once already


@dataclass
class Sweep:
    """The running services and what each door's valid caller holds."""

    pki: Path
    ingest: int
    ingest_admin: int
    fares: int
    settlement: int
    accounts: int
    accounts_app: Any
    officer: tuple[tuple[str, str], ...] = ()
    till: RedemptionDevice | None = None
    held: Held | None = None
    serial: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def next(self) -> int:
        return next(self.serial)

    def channel(self, port: int, identity: Principal | None = None) -> grpc.aio.Channel:
        target = f"127.0.0.1:{port}"
        if port in (self.settlement, self.ingest_admin):
            return secure_channel(target, self.pki, identity or operations_role())
        if port == self.ingest:
            return secure_channel(target, self.pki, None)
        return grpc.aio.insecure_channel(target)


def port_of(sweep: Sweep, method: MethodDescriptor) -> int:
    package = method.containing_service.file.package
    name = method.containing_service.name
    if package == "clearway.ingest.v1":
        return sweep.ingest if name == "IngestService" else sweep.ingest_admin
    return {
        "clearway.fares.v1": sweep.fares,
        "clearway.settlement.v1": sweep.settlement,
        "clearway.accounts.v1": sweep.accounts,
        "clearway.benefits.v1": sweep.accounts,
    }[package]


@pytest.fixture(scope="module")
async def sweep(
    endpoints: Any, pki: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Sweep]:
    name = f"t{uuid4().hex[:10]}"
    statements = tmp_path_factory.mktemp("statements")

    def settings(service: str) -> ServiceSettings:
        return service_settings(service, endpoints, pki, name)

    fares = RunningService(build_fares(settings("fares")))
    ingest = RunningService(build_ingest(settings("ingest")))
    settlement = RunningService(
        build_settlement(
            settings("settlement"), statements_dir=statements, signing_key=pki / "signing.key.pem"
        )
    )
    accounts_app = build_accounts(settings("accounts"))
    # The held bank cards: the acquirer declines the one that falls into debt (and keeps
    # declining it, so a pay-now leaves the debt for the next case), approves the other;
    # the charging loop looks for due days often enough not to keep the fixture waiting.
    debt_card, paid_card = _new_bank_card(), _new_bank_card()
    acquirer = accounts_app.gateway
    assert isinstance(acquirer, SimulatedAcquirer)
    acquirer.decline([debt_card])
    acquirer.approve([paid_card])
    accounts_app.bank_settings = replace(accounts_app.bank_settings, poll_s=0.2)
    accounts = RunningService(accounts_app)
    started: list[RunningService] = []
    try:
        fares_port = await fares.start()
        started.append(fares)
        # accounts asks fares for caps progress and claimed exits: this fares.
        accounts_app.fares_target = f"127.0.0.1:{fares_port}"
        ports = []
        for service in (ingest, settlement, accounts):
            ports.append(await service.start())
            started.append(service)
        assert ingest.admin_port is not None
        s = Sweep(pki, ports[0], ingest.admin_port, fares_port, ports[1], ports[2], accounts_app)
        await _provision_benefits(s)
        s.held = await _provision_held(s, debt_card, paid_card)
        yield s
    finally:
        for service in reversed(started):
            await service.stop()
        with contextlib.suppress(Exception):  # a failure only leaves the topics behind
            await asyncio.wait_for(delete_topics_with_prefix(endpoints.kafka_bootstrap, name), 20)


async def _provision_benefits(s: Sweep) -> None:
    """An officer of Camden (signed in) and a leisure centre's till, registered."""
    app = s.accounts_app
    await add_officer(app.pool, "officer@camden.example", COUNCIL, create_with_password=PASSWORD)
    s.till = RedemptionDevice.generate("pos-sweep-1")
    await register_device(app.pool, s.till.device_id, PROVIDER, s.till.public_key, app.scheme)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{s.accounts}") as ch:
        s.officer = await sign_in(ch, "officer@camden.example", PASSWORD)


def _new_bank_card() -> str:
    # bk_ + 43 base64url characters, the last one of the canonical 32-byte encoding.
    return "bk_" + secrets.token_urlsafe(32)[:42] + "A"


T = TypeVar("T")


async def _eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    """What `probe` finds, once it finds something (within WAIT_S)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while (found := await probe()) is None:
        if loop.time() > deadline:
            raise AssertionError(f"the fixture never saw {what}")
        await asyncio.sleep(0.2)
    return found


def _day_of_taps(day: date, rides: list[tuple[str, datetime, datetime | None]]) -> SimulatedDay:
    """The validators' taps of `rides` (card, entry at STOP, exit at EXIT_STOP or none),
    each gate's sequence numbers in the order given."""
    simulated = SimulatedDay(day)
    for card, entered, exited in rides:
        for stop, kind, at in (
            (STOP, events_pb2.TAP_KIND_ENTRY, entered),
            (EXIT_STOP, events_pb2.TAP_KIND_EXIT, exited),
        ):
            if at is None:
                continue
            device = f"sweep-gate-{stop}"
            taps = simulated.by_device.setdefault(device, [])
            tap = events_pb2.Tap(
                device_id=device,
                sequence_number=len(taps) + 1,
                card_token=card,
                stop_id=stop,
                kind=kind,
                operator_id=OPERATOR,
            )
            tap.tapped_at.FromDatetime(at.astimezone(UTC))
            taps.append(tap)
    return simulated


async def _provision_held(s: Sweep, debt_card: str, paid_card: str) -> Held:
    """The state ClaimMissingExit, RetryBankCharge and ResetPassword act on, made as in
    service: a traveller's cards tap at validators (signed batches through ingest), fares
    closes the day (each entry without exit priced incomplete), accounts records the priced
    journeys from `journeys` and its charging loop bills the bank cards' day (declined:
    a debt; approved: paid); the traveller claims one journey; a second traveller has a
    password reset once."""
    day = datetime.now(UTC).date() - timedelta(days=HELD_DAYS_AGO)
    entry_at = datetime.combine(day, time(10, 0), LONDON)
    cards = [f"sc_{uuid4().hex[:14]}" for _ in range(OPEN_JOURNEYS + 1)]
    rides: list[tuple[str, datetime, datetime | None]] = [
        (debt_card, entry_at - timedelta(hours=1), entry_at - timedelta(minutes=40)),
        (paid_card, entry_at - timedelta(minutes=55), entry_at - timedelta(minutes=35)),
        *((card, entry_at, None) for card in cards),
    ]
    target = f"127.0.0.1:{s.accounts}"
    async with grpc.aio.insecure_channel(target) as ch:
        owner = await sign_in(ch, f"holder-{uuid4().hex[:8]}@example.org", PASSWORD, sign_up=True)
        travellers = accounts_pb2_grpc.TravellerServiceStub(ch)
        for card in (*cards, debt_card, paid_card):
            await travellers.AddCard(accounts_pb2.AddCardRequest(card_token=card), metadata=owner)

    taps = _day_of_taps(day, rides)
    await register_devices(f"127.0.0.1:{s.ingest_admin}", s.pki, taps.devices())
    tally = await send_day(f"127.0.0.1:{s.ingest}", taps, validators=1, pki_dir=s.pki)
    assert tally.accepted == taps.total(), tally
    async with grpc.aio.insecure_channel(f"127.0.0.1:{s.fares}") as ch:
        await fares_pb2_grpc.FaresServiceStub(ch).CloseServiceDay(
            fares_pb2.CloseServiceDayRequest(service_day=day.isoformat()), timeout=90
        )

    async with grpc.aio.insecure_channel(target) as ch:
        history = accounts_pb2_grpc.AccountsServiceStub(ch)
        travellers = accounts_pb2_grpc.TravellerServiceStub(ch)

        async def incomplete(card: str) -> str | None:
            page = await history.ListJourneys(
                accounts_pb2.ListJourneysRequest(card_token=card), metadata=owner
            )
            return next((j.journey_id for j in page.journeys if j.incomplete), None)

        async def charge(card: str, status: int) -> str | None:
            listing = await travellers.ListBankCharges(
                accounts_pb2.ListBankChargesRequest(card_token=card), metadata=owner
            )
            return next((c.charge_id for c in listing.charges if c.status == status), None)

        journeys = [
            (card, await _eventually(partial(incomplete, card), f"{card}'s incomplete journey"))
            for card in cards
        ]
        debt = await _eventually(
            lambda: charge(debt_card, accounts_pb2.BankCharge.STATUS_DECLINED), "a declined charge"
        )
        paid = await _eventually(
            lambda: charge(paid_card, accounts_pb2.BankCharge.STATUS_CHARGED), "a paid charge"
        )
        complete = await history.ListJourneys(
            accounts_pb2.ListJourneysRequest(card_token=paid_card), metadata=owner
        )
        claimed_card, claimed_journey = journeys.pop()
        await travellers.ClaimMissingExit(
            accounts_pb2.ClaimMissingExitRequest(
                card_token=claimed_card, journey_id=claimed_journey, exit_stop_id=EXIT_STOP
            ),
            metadata=owner,
        )
        reset_email = f"resetter-{uuid4().hex[:8]}@example.org"
        await sign_in(ch, reset_email, PASSWORD, sign_up=True)
        spent = await _reset_token(s, reset_email)
        await travellers.ResetPassword(
            accounts_pb2.ResetPasswordRequest(reset_token=spent, new_password=PASSWORD)
        )
    return Held(
        owner,
        entry_at,
        journeys,
        (claimed_card, claimed_journey),
        (paid_card, complete.journeys[0].journey_id),
        (debt_card, debt),
        (paid_card, paid),
        reset_email,
        spent,
    )


async def _reset_token(s: Sweep, email: str) -> str:
    """A live reset token of `email`'s account: asked for the public way, read from the
    mail accounts queued (the only place a reset token exists in clear)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{s.accounts}") as ch:
        await accounts_pb2_grpc.TravellerServiceStub(ch).RequestPasswordReset(
            accounts_pb2.RequestPasswordResetRequest(email=email)
        )
    mails = await s.accounts_app.travellers.repository.outbox(email)
    found = RESET_MAIL.search(mails[-1])
    assert found is not None, "the reset mail holds no token"
    return found.group(1)


Renew: TypeAlias = Callable[[Any], Awaitable[None]]  # given the baseline request


@dataclass
class Door:
    """How a valid caller calls one method: channel, metadata, the baseline request and
    how its payloads are signed."""

    channel: grpc.aio.Channel
    metadata: tuple[tuple[str, str], ...]
    base: Logical
    seal: Callable[[Logical], Message]
    # For a method whose success uses its state up (a journey claimed, a token spent):
    # puts fresh state into the baseline request, after a case that succeeded.
    renew: Renew | None = None


def _recent_day(days: int = 2) -> str:
    return (datetime.now(UTC).date() - timedelta(days=days)).isoformat()


async def valid_door(s: Sweep, method: MethodDescriptor) -> Door:
    """A valid caller of `method` and a plausible request of it (values by field name)."""
    tag = f"{method.name.lower()}{s.next()}"
    device = DeviceIdentity.generate(f"sweep-{tag}")
    traveller_card = f"sc_{uuid4().hex[:14]}"
    metadata: tuple[tuple[str, str], ...] = ()
    port = port_of(s, method)
    package = method.containing_service.file.package
    held: dict[str, Any] = {}
    renew: Renew | None = None
    if path_of(method) in DEEPER:
        metadata, held, renew = await _held_door(s, path_of(method))
    elif package in ("clearway.accounts.v1", "clearway.benefits.v1"):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{s.accounts}") as ch:
            metadata = await sign_in(
                ch, f"{tag}@example.org", PASSWORD, sign_up=True, add_card=traveller_card
            )
    entitlement_id = ""
    # An entitlement to name (or, at a till, to spend), granted by the officer.
    payload = ENVELOPES.get(method.input_type.full_name, (None,))[0]
    named = "entitlement_id" in method.input_type.fields_by_name or payload is not None
    if package == "clearway.benefits.v1" and named:
        entitlement_id = await _grant(s, tag)
        if method.containing_service.name == "OfficerService":
            metadata = s.officer
        if method.containing_service.name == "RedemptionService":
            metadata = ()  # the till's signature is its credential
    if package == "clearway.ingest.v1":
        async with s.channel(s.ingest_admin) as ch:
            await ch.unary_unary(
                "/clearway.ingest.v1.DeviceRegistryService/RegisterDevice",
                request_serializer=ingest_pb2.RegisterDeviceRequest.SerializeToString,
                response_deserializer=ingest_pb2.RegisterDeviceResponse.FromString,
            )(
                ingest_pb2.RegisterDeviceRequest(
                    device_id=device.device_id,
                    operator_id=OPERATOR,
                    allowed_stop_ids=[STOP, EXIT_STOP],
                    public_key=device.public_key,
                )
            )

    values = {**_values(s, tag, device, traveller_card, entitlement_id), **held}
    request = GetMessageClass(method.input_type)()
    base = Logical(request)
    _fill(base, request, (), values)

    def seal(logical: Logical) -> Message:
        """The request with each payload serialized and signed by the door's device."""
        sealed = logical.request
        for where, payload in logical.payloads.items():
            envelope = _walk(sealed, where)
            data = payload.SerializeToString()
            if isinstance(envelope, ingest_pb2.SignedTapBatch):
                envelope.CopyFrom(
                    ingest_pb2.SignedTapBatch(
                        device_id=device.device_id,
                        key_id=device.key_id,
                        batch=data,
                        signature=device.private_key.sign(BATCH_CONTEXT + data),
                    )
                )
            elif isinstance(envelope, ingest_pb2.SignedDeviceAssertion):
                envelope.CopyFrom(
                    ingest_pb2.SignedDeviceAssertion(
                        key_id=device.key_id,
                        assertion=data,
                        signature=device.private_key.sign(ASSERTION_CONTEXT + data),
                    )
                )
            else:
                assert s.till is not None
                envelope.CopyFrom(
                    benefits_pb2.RedeemRequest(
                        device_id=s.till.device_id,
                        key_id=s.till.key_id,
                        redemption=data,
                        signature=s.till.private_key.sign(REDEMPTION_CONTEXT + data),
                    )
                )
        return sealed

    channel = s.channel(port)
    return Door(channel, metadata, base, seal, renew)


async def _held_door(
    s: Sweep, path: str
) -> tuple[tuple[tuple[str, str], ...], dict[str, Any], Renew | None]:
    """The caller, the values by field name and the renewal of a method that acts on the
    fixture's state."""
    held = s.held
    assert held is not None
    if path == CLAIM:

        async def next_journey(request: Any) -> None:
            assert held.open_journeys, "every incomplete journey was claimed: raise OPEN_JOURNEYS"
            request.card_token, request.journey_id = held.open_journeys.pop(0)

        card, journey = held.open_journeys.pop(0)
        values = {
            "card_token": card,
            "journey_id": journey,
            "exit_stop_id": EXIT_STOP,
            "exited_at": held.entry_at + timedelta(minutes=12),
        }
        return held.owner, values, next_journey
    if path == RETRY:
        # The acquirer declines every pay-now of the debt: nothing is used up.
        card, charge_id = held.debt
        return held.owner, {"card_token": card, "charge_id": charge_id}, None

    async def next_token(request: Any) -> None:
        request.reset_token = await _reset_token(s, held.reset_email)

    return (), {"reset_token": await _reset_token(s, held.reset_email)}, next_token


def _setting(label: str, **fields: Any) -> Case:
    """A case that sets request fields: a datetime into a Timestamp, None clears one, a
    callable changes the baseline's value."""

    def mutate(logical: Logical) -> None:
        request: Any = logical.request
        for name, value in fields.items():
            if value is None:
                request.ClearField(name)
            elif isinstance(value, datetime):
                getattr(request, name).FromDatetime(value)
            elif callable(value):
                setattr(request, name, value(getattr(request, name)))
            else:
                setattr(request, name, value)

    return Case(label, mutate)


def _claim_edges(held: Held) -> list[Case]:
    entry = held.entry_at
    card, journey = held.claimed
    return [
        _setting("exited_at: unset (the estimate)", exited_at=None),
        _setting("exited_at: at the entry", exited_at=entry),
        _setting("exited_at: before the entry", exited_at=entry - timedelta(minutes=1)),
        _setting("exited_at: 3 hours after the entry", exited_at=entry + timedelta(hours=3)),
        _setting("exited_at: tomorrow", exited_at=datetime.now(UTC) + timedelta(days=1)),
        _setting("exit_stop_id: shaped like a stop, in no fare data", exit_stop_id="NOWHERE"),
        _setting("exit_stop_id: 64 characters", exit_stop_id="S" * 64),
        _setting("exit_stop_id: the entry's stop", exit_stop_id=STOP),
        # No fare from an Underground entry: it was claimed, priced at nothing and the
        # whole maximum fare refunded (now BAD_EXIT_STOP).
        _setting("exit_stop_id: a bus stop", exit_stop_id="BUS_A1"),
        _setting("journey_id: claimed already", card_token=card, journey_id=journey),
        _setting("journey_id: another card's", journey_id=journey),
        _setting(
            "journey_id: a complete journey",
            card_token=held.complete[0],
            journey_id=held.complete[1],
        ),
        _setting("journey_id: with a trailing space", journey_id=lambda v: f"{v} "),
        _setting("journey_id: upper-cased", journey_id=str.upper),
    ]


def _charge_edges(held: Held) -> list[Case]:
    paid_card, paid_charge = held.paid
    return [
        _setting("charge_id: paid already", card_token=paid_card, charge_id=paid_charge),
        _setting("charge_id: the traveller's other card's", charge_id=paid_charge),
        _setting("card_token: the traveller's other card", card_token=paid_card),
        _setting("card_token: a bank card of nobody's", card_token=_new_bank_card()),
        _setting("charge_id: with a trailing space", charge_id=lambda v: f"{v} "),
        _setting("charge_id: upper-cased", charge_id=str.upper),
    ]


def _reset_edges(held: Held) -> list[Case]:
    return [
        _setting("reset_token: spent already", reset_token=held.spent_token),
        _setting("reset_token: with a trailing newline", reset_token=lambda v: f"{v}\n"),
        _setting("reset_token: upper-cased", reset_token=str.upper),
        _setting("new_password: 11 characters", new_password="p" * 11),
        _setting("new_password: 12 characters", new_password="p" * 12),
        _setting("new_password: 256 characters", new_password="p" * 256),
        _setting("new_password: 257 characters", new_password="p" * 257),
        _setting("new_password: a NUL in 12 characters", new_password="password\x00123"),
        _setting("new_password: 256 non-ASCII characters", new_password="東" * 256),
    ]


# The methods that act on the fixture's state, and the edges of the checks behind their
# lookups, swept after the hostile values.
DEEPER: dict[str, Callable[[Held], list[Case]]] = {
    CLAIM: _claim_edges,
    RETRY: _charge_edges,
    RESET: _reset_edges,
}


def deeper_cases(s: Sweep, method: MethodDescriptor) -> list[Case]:
    """The edge cases of a method that acts on the fixture's state (none for the others)."""
    edges = DEEPER.get(path_of(method))
    if edges is None:
        return []
    assert s.held is not None
    return edges(s.held)


async def _grant(s: Sweep, tag: str) -> str:
    """A youth allowance of Camden for the traveller `tag`, granted by the officer."""
    today = datetime.now(UTC).date()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{s.accounts}") as ch:
        grant = ch.unary_unary(
            "/clearway.benefits.v1.OfficerService/GrantEntitlement",
            request_serializer=benefits_pb2.GrantEntitlementRequest.SerializeToString,
            response_deserializer=benefits_pb2.GrantEntitlementResponse.FromString,
        )
        granted = await grant(
            benefits_pb2.GrantEntitlementRequest(
                traveller_email=f"{tag}@example.org",
                scheme_id="camden-youth-leisure",
                date_of_birth=date(today.year - 15, 1, 1).isoformat(),
                residence_area="camden",
                evidence="school letter",
                idempotency_key=f"grant-{tag}",
            ),
            metadata=s.officer,
        )
    return str(granted.entitlement.entitlement_id)


def _values(
    s: Sweep, tag: str, device: DeviceIdentity, card: str, entitlement_id: str
) -> dict[str, Any]:
    """Plausible values by field name (qualified by the message where a name is ambiguous)."""
    now = datetime.now(UTC)
    today = now.date()
    return {
        # taps, batches and the deny list
        "clearway.events.v1.Tap.tap_id": "",
        "clearway.events.v1.Tap.device_id": device.device_id,
        "clearway.events.v1.Tap.sequence_number": s.next(),
        "clearway.events.v1.Tap.card_token": "tok_sweep00000001",
        "clearway.events.v1.Tap.tapped_at": now - timedelta(seconds=30),
        "clearway.events.v1.Tap.received_at": None,
        "clearway.events.v1.Tap.stop_id": STOP,
        "clearway.events.v1.Tap.kind": events_pb2.TAP_KIND_ENTRY,
        "clearway.events.v1.Tap.operator_id": OPERATOR,
        "clearway.ingest.v1.TapBatch.taps": 1,
        "clearway.ingest.v1.StreamTapsRequest.taps": 0,
        "clearway.ingest.v1.DeviceAssertion.device_id": device.device_id,
        "clearway.ingest.v1.DeviceAssertion.purpose": "deny-list",
        "clearway.ingest.v1.DeviceAssertion.issued_at": now,
        "clearway.ingest.v1.SubscribeDenyListRequest.since_version": 0,
        "clearway.ingest.v1.AddDenyListEntryRequest.reason": ingest_pb2.DENY_REASON_LOST_OR_STOLEN,
        "clearway.fares.v1.QuoteFareRequest.taps": 1,
        "clearway.fares.v1.GetCapsProgressRequest.at": now,
        # the device registry
        "device_id": device.device_id,
        "operator_id": OPERATOR,
        "allowed_stop_ids": [STOP],
        "public_key": DeviceIdentity.generate("next key").public_key,
        "clearway.ingest.v1.RegisterDeviceRequest.public_key": device.public_key,
        "clearway.ingest.v1.RetireDeviceKeyRequest.key_id": device.key_id,
        # fares and settlement
        "service_day": _recent_day(),
        "catch_up_timeout_seconds": 5,
        "period_id": _recent_day(),
        "party_id": "operator:LUL",
        "name": "summary.json",
        # travellers, officers, tills (the journey, charge and reset token of the methods
        # that act on state are the fixture's: `_held_door`)
        "card_token": card,
        "email": f"{tag}@example.org",
        "clearway.accounts.v1.SignUpRequest.email": f"new-{tag}@example.org",
        "password": PASSWORD,
        "new_password": PASSWORD,
        "label": "my card",
        "page_size": 10,
        "page_token": "",
        "amount": (500, "GBP"),
        "clearway.benefits.v1.Redemption.amount": (100, "GBP"),
        "idempotency_key": f"key-{tag}",
        "traveller_email": f"{tag}@example.org",
        "scheme_id": "camden-youth-leisure",
        "date_of_birth": date(today.year - 15, 1, 1).isoformat(),
        "residence_area": "camden",
        "evidence": "school letter",
        "valid_from": "",
        "entitlement_id": entitlement_id,
        "reason": "a sweep",
        "rule_id": "camden-volunteering",
        "month": today.strftime("%Y-%m"),
        "category": "swimming",
        "requested_at": now - timedelta(minutes=1),
        "clearway.benefits.v1.RedeemRequest.redemption": b"",
    }


def _fill(base: Logical, message: Message, path: tuple[Any, ...], values: dict[str, Any]) -> None:
    """Set each field of `message` that `values` names (signed payloads as their own
    messages in `base.payloads`)."""
    descriptor = message.DESCRIPTOR
    envelope = ENVELOPES.get(descriptor.full_name)
    for f in descriptor.fields:
        key = f"{descriptor.full_name}.{f.name}"
        if envelope is not None and f.name == envelope[1]:
            payload = envelope[0]()
            base.payloads[path] = payload
            _fill(base, payload, (*path, PAYLOAD), values)
            continue
        value = values.get(key, values.get(f.name))
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            kind = _type_of(f).full_name
            if kind == "google.protobuf.Timestamp":
                if isinstance(value, datetime):
                    getattr(message, f.name).FromDatetime(value)
            elif kind == "clearway.common.v1.Money":
                if isinstance(value, tuple):
                    getattr(message, f.name).amount_minor = value[0]
                    getattr(message, f.name).currency = value[1]
            elif f.is_repeated:
                for _ in range(value or 0):
                    _fill(
                        base,
                        getattr(message, f.name).add(),
                        (*path, f.name, len(getattr(message, f.name)) - 1),
                        values,
                    )
            elif kind in ENVELOPES:
                _fill(base, getattr(message, f.name), (*path, f.name), values)
            continue
        if value is None or isinstance(value, tuple | datetime):
            continue
        if f.is_repeated:
            getattr(message, f.name).extend(value)
        else:
            setattr(message, f.name, value)


# -- calling -------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: grpc.StatusCode
    reason: str | None = None
    details: str = ""
    responses: list[Message] = field(default_factory=list)
    transport: bool = False  # refused before any server code ran (no trailers at all)


async def call(
    channel: grpc.aio.Channel,
    method: MethodDescriptor,
    request: Message,
    metadata: tuple[tuple[str, str], ...] = (),
) -> Outcome:
    """Call `method` with `request` (a stream of that one request for a streaming method)."""
    path = f"/{path_of(method)}"
    response_class = GetMessageClass(method.output_type)
    options = {
        "request_serializer": lambda m: m.SerializeToString(),
        "response_deserializer": response_class.FromString,
    }
    responses: list[Message] = []

    async def one() -> AsyncIterator[Message]:
        yield request

    try:
        if not method.client_streaming and not method.server_streaming:
            responses.append(
                await channel.unary_unary(path, **options)(
                    request, metadata=metadata, timeout=CALL_TIMEOUT_S
                )
            )
        elif method.client_streaming and not method.server_streaming:
            responses.append(
                await channel.stream_unary(path, **options)(
                    one(), metadata=metadata, timeout=CALL_TIMEOUT_S
                )
            )
        else:
            stream: Any
            if method.client_streaming:
                stream = channel.stream_stream(path, **options)(
                    one(), metadata=metadata, timeout=CALL_TIMEOUT_S
                )
            else:
                stream = channel.unary_stream(path, **options)(
                    request, metadata=metadata, timeout=CALL_TIMEOUT_S
                )
            try:
                while True:
                    got = await asyncio.wait_for(stream.read(), STREAM_IDLE_S)
                    if got is grpc.aio.EOF:
                        break
                    responses.append(got)
            except TimeoutError:
                stream.cancel()  # still open after its answers: a live subscription
                return Outcome(grpc.StatusCode.OK, responses=responses)
            code = await stream.code()
            if code != grpc.StatusCode.OK:
                trailers = await stream.trailing_metadata()
                return Outcome(code, reason_of(trailers), await stream.details(), responses)
    except grpc.aio.AioRpcError as exc:
        trailers = exc.trailing_metadata()
        return Outcome(
            exc.code(),
            reason_of(trailers),
            exc.details() or "",
            responses,
            transport=not trailers and not exc.initial_metadata(),
        )
    return Outcome(grpc.StatusCode.OK, responses=responses)


# -- checks --------------------------------------------------------------------------------


def _has_field(descriptor: Descriptor, name: str, seen: set[str] | None = None) -> bool:
    seen = set() if seen is None else seen
    if descriptor.full_name in seen:
        return False
    seen.add(descriptor.full_name)
    for f in descriptor.fields:
        if f.name == name:
            return True
        if f.type == FieldDescriptor.TYPE_MESSAGE and _has_field(_type_of(f), name, seen):
            return True
    return False


def secrets_in(logical: Logical) -> set[tuple[str, str]]:
    """(field name, value) of every card token, password and reset token the request
    carries."""
    found: set[tuple[str, str]] = set()

    def visit(message: Message) -> None:
        for f, value in message.ListFields():
            if f.type == FieldDescriptor.TYPE_MESSAGE:
                for element in value if f.is_repeated else [value]:
                    visit(element)
            elif f.name in SECRET_FIELDS and isinstance(value, str) and len(value) >= 8:
                found.add((f.name, value))

    visit(logical.request)
    for payload in logical.payloads.values():
        visit(payload)
    return found


def problems(
    method: MethodDescriptor, label: str, out: Outcome, secrets: set[tuple[str, str]]
) -> list[str]:
    """What is wrong with how a valid caller's request was answered."""
    found = []
    where = f"{path_of(method)} [{label}]"
    if out.code in NEVER_FOR_A_CLIENT_MISTAKE:
        found.append(f"{where}: {out.code.name} {out.reason} {out.details[:200]!r}")
    elif out.code != grpc.StatusCode.OK and not out.reason:
        found.append(f"{where}: {out.code.name} without a reason code: {out.details[:200]!r}")
    assert method.output_type is not None
    response_has_card = _has_field(method.output_type, "card_token")
    for name, secret in secrets:
        if secret in out.details:
            found.append(f"{where}: the error detail echoes the request's {name}")
        card = name == "card_token"
        if any(secret in str(r) for r in out.responses) and not (card and response_has_card):
            found.append(f"{where}: the response echoes the request's {name}")
    return found


# -- the sweep -------------------------------------------------------------------------------


def test_the_sweep_covers_every_service() -> None:
    services = {s.full_name for m in MODULES for s in m.DESCRIPTOR.services_by_name.values()}
    assert services == SWEPT
    assert {p for p in PUBLIC} <= {path_of(m) for m in all_methods()}


METHODS = all_methods()


@pytest.mark.parametrize("method", METHODS, ids=path_of)
async def test_a_caller_without_credentials_is_refused_or_told_why(
    sweep: Sweep, method: MethodDescriptor
) -> None:
    request = GetMessageClass(method.input_type)()
    port = port_of(sweep, method)
    mutual = port in (sweep.settlement, sweep.ingest_admin)
    target = f"127.0.0.1:{port}"
    anonymous: list[tuple[str, grpc.aio.Channel, tuple[tuple[str, str], ...]]] = []
    if mutual:
        # No certificate of the scheme: the handshake is refused, nothing is served.
        for label, channel in (
            ("TLS without a client certificate", secure_channel(target, sweep.pki, None)),
            ("plaintext", grpc.aio.insecure_channel(target)),
        ):
            async with channel:
                out = await call(channel, method, request)
            assert out.code == grpc.StatusCode.UNAVAILABLE and out.transport, (label, out)
        if port == sweep.ingest_admin:
            # The admin services are also reachable on the validators' port: refused there.
            anonymous.append(("validators' port", sweep.channel(sweep.ingest), ()))
        anonymous.append(
            (
                "a party's certificate",
                sweep.channel(port, Principal("party", "retailer:cornershop")),
                (),
            )
        )
    elif port == sweep.ingest:
        anonymous.append(("TLS, unsigned", sweep.channel(port), ()))
    else:
        anonymous.append(("no session", sweep.channel(port), ()))
        if port == sweep.accounts:
            anonymous.append(
                ("a made-up session", sweep.channel(port), (("authorization", "Bearer made-up"),))
            )
    if method.containing_service.name == "OfficerService":
        # A traveller who is not an officer.
        async with grpc.aio.insecure_channel(target) as ch:
            traveller = await sign_in(
                ch, f"not-an-officer-{uuid4().hex[:8]}@example.org", PASSWORD, sign_up=True
            )
        anonymous.append(("a traveller's session", sweep.channel(port), traveller))

    failures = []
    for label, channel, metadata in anonymous:
        async with channel:
            out = await call(channel, method, request, metadata)
        where = f"{path_of(method)} [{label}]"
        if out.code in NEVER:
            failures.append(f"{where}: {out.code.name} {out.reason} {out.details[:200]!r}")
        elif out.code != grpc.StatusCode.OK and not out.reason:
            failures.append(f"{where}: {out.code.name} without a reason code {out.details!r}")
        # A party may read its own settlement: only the operations role's methods refuse it.
        party_may = (
            label == "a party's certificate"
            and port == sweep.settlement
            and path_of(method) not in OPERATIONS_ONLY
        )
        if party_may and out.code in NEVER_FOR_A_CLIENT_MISTAKE:
            failures.append(f"{where}: {out.code.name} {out.reason}")
        elif path_of(method) not in PUBLIC and not party_may and out.code not in REFUSED:
            failures.append(
                f"{where}: a caller without the identity got {out.code.name} {out.reason}"
            )
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("method", METHODS, ids=path_of)
async def test_hostile_requests_of_a_valid_caller_get_a_specific_status(
    sweep: Sweep, method: MethodDescriptor
) -> None:
    door = await valid_door(sweep, method)
    stateful = path_of(method) in DEEPER
    failures = []
    async with door.channel:
        for case in [*hostile_cases(door.base), *deeper_cases(sweep, method)]:
            logical = case.apply(door.base, door.seal)
            out = await call(door.channel, method, logical.request, door.metadata)
            failures += problems(method, case.label, out, secrets_in(logical))
            if stateful and case.mutate is None and out.code != grpc.StatusCode.OK:
                failures.append(
                    f"{path_of(method)} [baseline]: {out.code.name} {out.reason}: the fixture's"
                    " state did not carry the baseline past its lookup"
                )
            if out.code == grpc.StatusCode.OK and door.renew is not None:
                await door.renew(door.base.request)
    assert not failures, "\n".join(failures)
