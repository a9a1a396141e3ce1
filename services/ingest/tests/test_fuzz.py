"""Ingest fuzzed over its real gRPC server, with real Kafka, Redis and PostgreSQL (issue 9):
random and malformed signed batches, raw request bytes, forged and altered signatures.

Whatever arrives, the server never answers UNKNOWN or INTERNAL and never goes down; a call
it refuses ends with a client-error status and a reason code; a batch it takes gets one ack
per tap, each ACCEPTED, DUPLICATE or REJECTED (with a reason code); and the taps on the taps
topic are exactly the taps acked ACCEPTED, each once.

One ingest server serves the whole module, on the test session's event loop. Hypothesis runs
each property in a worker thread, so that a test can check the taps topic once all its
examples have run: the signed-batch examples run their calls on the server's loop; the raw
and forged ones call through a blocking channel (see `Fuzzed.blocking`). Examples are
derandomized (the same ones every run) and no example database is written.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import uuid4

import grpc
import pytest
from cryptography.exceptions import InvalidSignature
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clearway.events.v1 import events_pb2
from clearway.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from clearway.pki import client_credentials
from clearway.settings import ServiceSettings
from conftest import service_settings
from services.ingest.device_client import DeviceIdentity
from services.ingest.domain.devices import ASSERTION_CONTEXT, BATCH_CONTEXT
from services.ingest.domain.validation import (
    MAX_BATCH_TAPS,
    DeviceScope,
    RejectReason,
    validate_tap,
)
from services.ingest.service_layer.accepting import submission_of
from services.ingest.tests.ingest_harness import (
    CARD,
    Ingest,
    read_topic,
    start_ingest,
    status_of,
    taps_on,
)

pytestmark = pytest.mark.integration

T = TypeVar("T")
ACCEPTED = ingest_pb2.ACK_STATUS_ACCEPTED
DUPLICATE = ingest_pb2.ACK_STATUS_DUPLICATE
REJECTED = ingest_pb2.ACK_STATUS_REJECTED
REASONS = frozenset(r.value for r in RejectReason)
# What a refused call may end with: a client's mistake, always with a reason code.
CLIENT_ERRORS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)
SERVICE = "/clearway.ingest.v1.IngestService/"
MAX_REQUEST_BYTES = 3_500_000  # under gRPC's default 4 MiB limit on a received message
BANK_TOKEN = "bk_BiIkEgE4KkWRL7IoKLP321FTzyBycipz3tImI-p5q8k"

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


@dataclass(frozen=True)
class Profile:
    """A device as registered: what a well-formed tap of it carries."""

    device_id: str
    operator_id: str
    stops: tuple[str, ...]
    routes: tuple[str, ...] = ()

    @property
    def scope(self) -> DeviceScope:
        """What ingest checks its taps against."""
        return DeviceScope(
            self.device_id, self.operator_id, frozenset(self.stops), frozenset(self.routes)
        )


GATE = Profile("fz-gate-01", "LUL", ("940GZZLUKSX", "940GZZLUOXC", "940GZZLUBST"))
GATE2 = Profile("fz-gate-02", "LUL", ("940GZZLUOXC",))
BUS = Profile("fz-bus-73", "BUSCO", ("490000077Z", "490000173N"), ("R-BUS-73", "R-BUS-390"))
PROFILES = {p.device_id: p for p in (GATE, GATE2, BUS)}
REVOKED = Profile("fz-revoked-01", "LUL", GATE.stops)
ROTATED = Profile("fz-rotated-01", "LUL", GATE.stops)  # its first key is retired
ALL_STOPS = tuple(sorted({s for p in PROFILES.values() for s in p.stops}))


@dataclass
class Ledger:
    """Every tap the server acked, across the module."""

    accepted: set[tuple[str, int]] = field(default_factory=set)
    duplicates: set[tuple[str, int]] = field(default_factory=set)
    statuses: Counter[str] = field(default_factory=Counter)

    def answer(self, taps: Sequence[events_pb2.Tap], acks: Sequence[ingest_pb2.TapAck]) -> None:
        """Check one batch's acks and record them."""
        assert len(acks) == len(taps), f"{len(taps)} taps sent, {len(acks)} acks"
        for sent, ack in zip(taps, acks, strict=True):
            key = (sent.device_id, sent.sequence_number)
            assert ack.sequence_number == sent.sequence_number
            assert ack.device_id == sent.device_id[:128]
            if ack.status == REJECTED:
                assert ack.reason_code in REASONS, ack.reason_code
                assert ack.detail
                self.statuses[ack.reason_code] += 1
            elif ack.status == ACCEPTED:
                assert not ack.reason_code
                assert key not in self.accepted, f"{key[0][:40]!r}:{key[1]} accepted twice"
                self.accepted.add(key)
                self.statuses["ACCEPTED"] += 1
            elif ack.status == DUPLICATE:
                assert not ack.reason_code
                self.duplicates.add(key)
                self.statuses["DUPLICATE"] += 1
            else:
                pytest.fail(f"ack status {ack.status} for {key[0][:40]!r}:{key[1]}")


@dataclass
class Fuzzed:
    """The module's ingest server and what the properties share."""

    ingest: Ingest
    channel: grpc.aio.Channel
    # A blocking channel, for Hypothesis' thread: grpcio's asyncio client reports INTERNAL
    # ("Internal error from Core", no trailers) instead of the server's status when the
    # server ends a call while the client is still writing requests; its blocking client
    # reports the server's status.
    blocking: grpc.Channel
    loop: asyncio.AbstractEventLoop
    ledger: Ledger = field(default_factory=Ledger)
    fresh: int = 10**12  # sequence numbers no property draws

    def identity(self, device_id: str) -> DeviceIdentity:
        """The registered key of a device."""
        return self.ingest.devices[device_id]

    def next_seq(self) -> int:
        """A sequence number never used before in this module."""
        self.fresh += 1
        return self.fresh

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the server's loop from Hypothesis' thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=180)


def _settings(endpoints: Any, pki: Path) -> ServiceSettings:
    """The root conftest's settings_for("ingest"), once for the module."""
    return service_settings("ingest", endpoints, pki, f"t{uuid4().hex[:10]}")


@pytest.fixture(scope="module")
async def fuzz(endpoints, pki) -> AsyncIterator[Fuzzed]:
    service = await start_ingest(_settings(endpoints, pki), pki)
    try:
        for p in (*PROFILES.values(), REVOKED, ROTATED):
            await service.register(
                p.device_id, operator=p.operator_id, stops=p.stops, routes=p.routes
            )
        await service.registry(
            "RevokeDevice",
            ingest_pb2.RevokeDeviceRequest(device_id=REVOKED.device_id, reason="fuzz"),
        )
        old = service.devices[ROTATED.device_id]
        new = DeviceIdentity.generate(ROTATED.device_id)
        await service.registry(
            "AddDeviceKey",
            ingest_pb2.AddDeviceKeyRequest(device_id=ROTATED.device_id, public_key=new.public_key),
        )
        await service.registry(
            "RetireDeviceKey",
            ingest_pb2.RetireDeviceKeyRequest(device_id=ROTATED.device_id, key_id=old.key_id),
        )
        blocking = grpc.secure_channel(service.target, client_credentials(pki, None))
        try:
            async with service.channel() as channel:
                yield Fuzzed(service, channel, blocking, asyncio.get_running_loop())
        finally:
            blocking.close()
    finally:
        await service.stop()


# ---------------------------------------------------------------------------------------
# Strategies: what a broken (or hostile) validator may send


@dataclass(frozen=True)
class Huge:
    """A long string, kept short in Hypothesis' reports."""

    char: str
    n: int

    def __str__(self) -> str:
        return self.char * self.n


HUGE = st.builds(
    Huge,
    st.sampled_from(["x", "7", "é", "€", "\U0001d11e", "\n", "\u200b", "\x00"]),
    st.one_of(st.integers(129, 2_000), st.sampled_from([65_536, 200_000])),
)
CONTROL = st.text(st.characters(categories=("Cc", "Cf", "Zl", "Zp", "Zs")), min_size=1, max_size=4)


def junk_ids(good: str) -> st.SearchStrategy[Any]:
    """Values that are not a valid id, or only nearly one."""
    return st.one_of(
        st.sampled_from(["", good + "\n", f" {good}", good + "\x00", good + "\u200b", "x" * 129]),
        st.just("x" * 128),
        st.text(max_size=24),
        CONTROL,
        HUGE,
    )


CARDS = st.one_of(
    st.from_regex(r"tok_[A-Za-z0-9]{8,64}", fullmatch=True),
    st.from_regex(r"sc_(?:[0-9a-f]{8}|[0-9a-f]{14}|[0-9a-f]{20})", fullmatch=True),
    st.sampled_from(
        [
            CARD,
            BANK_TOKEN,
            BANK_TOKEN[:-1] + "B",  # not a canonical base64url encoding
            "4111111111111111",  # raw card numbers
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            ";4111111111111111=25121010000000000000?",
            "\uff14\uff11\uff11\uff11" * 4,
            CARD + "\n",
            " " + CARD,
            CARD.upper(),
            "tok_short",
            "",
        ]
    ),
    st.from_regex(r"[0-9]{12,19}", fullmatch=True),
    st.text(max_size=40),
    HUGE,
)
KINDS = st.one_of(st.sampled_from([0, 1, 2, 3, 4]), st.integers(-(2**31), 2**31 - 1))
OFFSETS = st.one_of(st.integers(-840, 840), st.sampled_from([-841, 841, -(2**31), 2**31 - 1]))
NANOS = st.one_of(
    st.just(0),
    st.integers(0, 999_999_999),
    st.sampled_from([-1, 1_000_000_000, -(2**31), 2**31 - 1]),
)
DAY = 86_400
# tapped_at: ("ago", seconds before now, nanos) | ("at", epoch seconds, nanos) | absent
WHEN = st.one_of(
    st.just(("ago", 30, 0)),
    st.tuples(
        st.just("ago"),
        st.one_of(
            st.integers(-400, 1_200),  # clock skew (5 min ahead) .. late (15 min ago)
            st.integers(-30 * DAY, 30 * DAY),
            st.sampled_from([14 * DAY - 60, 14 * DAY + 60, -299, -301, 899, 901]),
        ),
        NANOS,
    ),
    st.tuples(
        st.just("at"),
        st.one_of(
            st.sampled_from(
                [
                    -62_135_596_800,  # 0001-01-01T00:00:00Z
                    -62_135_596_801,
                    253_402_300_799,  # 9999-12-31T23:59:59Z
                    253_402_300_800,
                    0,
                    -(2**63),
                    2**63 - 1,
                ]
            ),
            st.integers(-(2**63), 2**63 - 1),
        ),
        NANOS,
    ),
    st.just(("absent", 0, 0)),
)
SEQS = st.one_of(
    st.integers(1, 12),  # a small pool: duplicates within and across batches and examples
    st.integers(1, 2**64 - 1),
    st.sampled_from([0, 2**64 - 1]),
)


@dataclass(frozen=True)
class TapPlan:
    """A tap of the batch's signer: well-formed, then `fields` set as they are."""

    seq: int
    fields: tuple[tuple[str, Any], ...] = ()
    when: tuple[str, int, int] = ("ago", 30, 0)

    def build(self, profile: Profile, now: datetime) -> events_pb2.Tap:
        """The tap, its time relative to `now`."""
        tap = events_pb2.Tap(
            device_id=profile.device_id,
            sequence_number=self.seq,
            card_token=CARD,
            stop_id=profile.stops[0],
            kind=events_pb2.TAP_KIND_ENTRY,
            operator_id=profile.operator_id,
        )
        how, seconds, nanos = self.when
        if how == "ago":
            tap.tapped_at.FromDatetime(now - timedelta(seconds=seconds))
            if nanos:
                tap.tapped_at.nanos = nanos
        elif how == "at":
            tap.tapped_at.seconds = seconds
            tap.tapped_at.nanos = nanos
        for name, value in self.fields:
            setattr(tap, name, str(value) if isinstance(value, Huge) else value)
        return tap


def tap_plans(profile: Profile) -> st.SearchStrategy[TapPlan]:
    """Taps of `profile`'s device: some well-formed, most with a few fields broken."""
    others = tuple(s for s in ALL_STOPS if s not in profile.stops)
    changes = st.one_of(
        st.tuples(
            st.just("device_id"),
            st.one_of(st.sampled_from([*PROFILES, "fz-nobody"]), junk_ids(profile.device_id)),
        ),
        st.tuples(st.just("card_token"), CARDS),
        st.tuples(
            st.just("stop_id"),
            st.one_of(st.sampled_from(profile.stops + others), junk_ids(profile.stops[0])),
        ),
        st.tuples(
            st.just("route_id"),
            st.one_of(st.sampled_from(["", *BUS.routes, "R-OTHER"]), junk_ids("R-BUS-73")),
        ),
        st.tuples(
            st.just("operator_id"),
            st.one_of(st.sampled_from(["LUL", "BUSCO", "ELIZ"]), junk_ids("LUL")),
        ),
        st.tuples(st.just("kind"), KINDS),
        st.tuples(st.just("rider_category_id"), st.one_of(st.just("adult"), junk_ids("adult"))),
        st.tuples(st.just("fare_media_id"), st.one_of(st.just("card"), junk_ids("card"))),
        st.tuples(st.just("utc_offset_minutes"), OFFSETS),
    )
    return st.builds(TapPlan, SEQS, st.lists(changes, max_size=3).map(tuple), WHEN)


@dataclass(frozen=True)
class BatchPlan:
    """One signed batch of `signer`; `oversize` pads it past the limit with good taps."""

    signer: str
    taps: tuple[TapPlan, ...]
    oversize: bool = False

    def build(self, now: datetime, fresh: Callable[[], int]) -> list[events_pb2.Tap]:
        """The batch's taps (fewer when they would not fit in one gRPC message)."""
        profile = PROFILES[self.signer]
        taps = [t.build(profile, now) for t in self.taps]
        while taps and ingest_pb2.TapBatch(taps=taps).ByteSize() > MAX_REQUEST_BYTES:
            taps.pop()
        if self.oversize:
            template = TapPlan(0).build(profile, now)
            for _ in range(MAX_BATCH_TAPS + 1 - len(taps)):
                padding = events_pb2.Tap()
                padding.CopyFrom(template)
                padding.sequence_number = fresh()
                taps.append(padding)
        return taps


@st.composite
def batch_plans(draw: st.DrawFn) -> BatchPlan:
    signer = draw(st.sampled_from(list(PROFILES)))
    taps = draw(st.lists(tap_plans(PROFILES[signer]), max_size=6))
    oversize = draw(st.integers(0, 39)) == 39
    return BatchPlan(signer, tuple(taps), oversize)


@dataclass(frozen=True)
class StreamPlan:
    """Batches on one StreamTaps stream, or one UploadBacklog call."""

    via: str
    batches: tuple[BatchPlan, ...]


@st.composite
def stream_plans(draw: st.DrawFn) -> StreamPlan:
    via = draw(st.sampled_from(["stream", "upload"]))
    batches: list[BatchPlan] = []
    for _ in range(draw(st.integers(1, 3))):
        if batches and draw(st.integers(0, 3)) == 3:  # a batch sent again
            batches.append(batches[draw(st.integers(0, len(batches) - 1))])
        else:
            batches.append(draw(batch_plans()))
    return StreamPlan(via, tuple(batches))


# ---------------------------------------------------------------------------------------
# Calls


def assert_refused_properly(exc: Any) -> tuple[grpc.StatusCode, str | None]:
    """A refusal: a client-error status with a reason code, never UNKNOWN or INTERNAL."""
    code, reason = status_of(exc)
    assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (
        code,
        reason,
        exc.details(),
    )
    assert code in CLIENT_ERRORS, (code, reason, exc.details())
    assert reason, (code, exc.details())
    assert exc.details().startswith(reason), exc.details()
    return code, reason


async def upload(
    channel: grpc.aio.Channel, batches: Sequence[ingest_pb2.SignedTapBatch]
) -> ingest_pb2.UploadBacklogResponse:
    """One UploadBacklog call."""

    async def requests() -> AsyncIterator[ingest_pb2.UploadBacklogRequest]:
        for b in batches:
            yield ingest_pb2.UploadBacklogRequest(signed=b)

    stub = ingest_pb2_grpc.IngestServiceStub(channel)
    reply: ingest_pb2.UploadBacklogResponse = await stub.UploadBacklog(requests(), timeout=120)
    return reply


def split_upload(
    reply: ingest_pb2.UploadBacklogResponse, sizes: Sequence[int]
) -> list[list[ingest_pb2.TapAck]]:
    """An upload's acks per batch; its counts checked against them."""
    acks = list(reply.acks)
    assert len(acks) == sum(sizes), f"{sum(sizes)} taps uploaded, {len(acks)} acks"
    statuses = Counter(a.status for a in acks)
    assert (reply.accepted, reply.duplicates, reply.rejected) == (
        statuses[ACCEPTED],
        statuses[DUPLICATE],
        statuses[REJECTED],
    )
    assert reply.late == sum(1 for a in acks if a.status == ACCEPTED and a.late)
    out, start = [], 0
    for n in sizes:
        out.append(acks[start : start + n])
        start += n
    return out


async def send_signed(
    fz: Fuzzed, via: str, batches: Sequence[ingest_pb2.SignedTapBatch]
) -> list[list[ingest_pb2.TapAck]]:
    """The acks of each batch, sent on one stream or one upload."""
    if via == "stream":

        async def requests() -> AsyncIterator[ingest_pb2.StreamTapsRequest]:
            for b in batches:
                yield ingest_pb2.StreamTapsRequest(signed=b)

        stub = ingest_pb2_grpc.IngestServiceStub(fz.channel)
        return [list(r.acks) async for r in stub.StreamTaps(requests(), timeout=120)]
    reply = await upload(fz.channel, batches)
    return split_upload(reply, [len(ingest_pb2.TapBatch.FromString(b.batch).taps) for b in batches])


async def stored_taps(fz: Fuzzed) -> Counter[tuple[str, int]]:
    """(device_id, sequence_number) of every tap on the taps topic, with how often."""
    records = await read_topic(
        fz.ingest.settings.endpoints.kafka_bootstrap, fz.ingest.settings.topics.taps, settle_s=1.0
    )
    taps = taps_on(records)
    for t in taps:
        assert t.tap_id == f"{t.device_id}:{t.sequence_number}"
    return Counter((t.device_id, t.sequence_number) for t in taps)


# ---------------------------------------------------------------------------------------
# 1. Random signed batches from registered devices


def check_verdicts(
    fz: Fuzzed,
    batches: Sequence[tuple[Profile, list[events_pb2.Tap]]],
    answered: Sequence[Sequence[ingest_pb2.TapAck]],
    window: tuple[datetime, datetime],
    prior: set[tuple[str, int]],
) -> None:
    """Each ack is the verdict validation gives the tap at any instant of `window` (the
    server received the batch then); of the good taps of the call, a tap accepted before
    is DUPLICATE, and a new one ACCEPTED exactly once."""
    policy = fz.ingest.app.policy
    good: defaultdict[tuple[str, int], list[int]] = defaultdict(list)
    for (profile, taps), acks in zip(batches, answered, strict=True):
        if len(taps) > MAX_BATCH_TAPS:
            assert {(a.status, a.reason_code) for a in acks} == {(REJECTED, "BATCH_TOO_LARGE")}
            continue
        for tap, ack in zip(taps, acks, strict=True):
            submission = submission_of(tap)
            first, last = (validate_tap(submission, w, profile.scope, policy) for w in window)
            reasons = {v.reason.value if v.reason else None for v in (first, last)}
            if ack.status == REJECTED:
                assert ack.reason_code in reasons, (ack.reason_code, reasons, ack.detail)
                continue
            assert None in reasons, (ack.status, reasons)
            if ack.status == ACCEPTED and first.late == last.late:
                assert ack.late == first.late
            good[(tap.device_id, tap.sequence_number)].append(ack.status)
    for key, statuses in good.items():
        if key in prior:
            assert set(statuses) == {DUPLICATE}, (key, statuses)
        else:
            assert sorted(statuses) == [ACCEPTED] + [DUPLICATE] * (len(statuses) - 1), (
                key,
                statuses,
            )


async def play(fz: Fuzzed, plan: StreamPlan) -> None:
    now = datetime.now(UTC)
    batches = [(PROFILES[b.signer], b.build(now, fz.next_seq)) for b in plan.batches]
    signed = [fz.identity(p.device_id).sign_batch(taps) for p, taps in batches]
    prior = set(fz.ledger.accepted)
    before = datetime.now(UTC)
    try:
        answered = await send_signed(fz, plan.via, signed)
    except grpc.aio.AioRpcError as exc:
        assert_refused_properly(exc)
        pytest.fail(f"batches signed by an active device were refused: {status_of(exc)}")
    after = datetime.now(UTC)
    assert len(answered) == len(batches)
    for (_, taps), acks in zip(batches, answered, strict=True):
        fz.ledger.answer(taps, acks)
    check_verdicts(fz, batches, answered, (before, after), prior)


EMPTY_AND_OVERSIZE = StreamPlan(
    "stream",
    (
        BatchPlan(GATE.device_id, ()),
        BatchPlan(GATE.device_id, (TapPlan(1), TapPlan(1)), oversize=True),
        BatchPlan(GATE.device_id, (TapPlan(1), TapPlan(1), TapPlan(2, (("stop_id", ""),)))),
    ),
)
UPLOADED_TWICE = StreamPlan(
    "upload",
    (
        BatchPlan(BUS.device_id, (TapPlan(3, (("route_id", "R-BUS-73"),)), TapPlan(4))),
        BatchPlan(BUS.device_id, (TapPlan(3, (("route_id", "R-BUS-73"),)), TapPlan(4))),
    ),
)


async def test_random_signed_batches_get_one_verdict_per_tap_and_only_accepted_taps_are_stored(
    fuzz: Fuzzed,
):
    @settings(FUZZ, max_examples=200)
    @given(plan=stream_plans())
    @example(plan=EMPTY_AND_OVERSIZE)
    @example(plan=UPLOADED_TWICE)
    def property_(plan: StreamPlan) -> None:
        fuzz.run(play(fuzz, plan))

    await asyncio.to_thread(property_)
    stored = await stored_taps(fuzz)
    ours = {k: n for k, n in stored.items() if k[0] in PROFILES}
    accepted = {k for k in fuzz.ledger.accepted if k[0] in PROFILES}
    assert max(ours.values(), default=1) == 1, "a tap stored twice"
    assert set(ours) == accepted
    assert fuzz.ledger.duplicates <= fuzz.ledger.accepted
    # the examples did reach every kind of answer
    assert {"ACCEPTED", "DUPLICATE", "BATCH_TOO_LARGE"} <= set(fuzz.ledger.statuses)
    assert len(set(fuzz.ledger.statuses) & REASONS) >= 10, fuzz.ledger.statuses


# ---------------------------------------------------------------------------------------
# 2. Raw request bytes


@dataclass(frozen=True)
class Mutation:
    """An edit of a valid request's bytes: flip a bit, cut, insert or append bytes."""

    how: str
    at: int
    data: bytes

    def apply(self, base: bytes) -> bytes:
        """The edited bytes."""
        at = self.at % (len(base) + 1)
        if self.how == "flip" and at < len(base):
            return base[:at] + bytes([base[at] ^ (1 << (self.at % 8))]) + base[at + 1 :]
        if self.how == "cut":
            return base[:at]
        if self.how == "insert":
            return base[:at] + self.data + base[at:]
        if self.how == "delete":
            return base[:at] + base[at + 1 + len(self.data) :]
        return base + self.data


MUTATIONS = st.builds(
    Mutation,
    st.sampled_from(["flip", "cut", "insert", "delete", "append"]),
    st.integers(0, 2**16),
    st.binary(max_size=24),
)
# A message: random bytes, or a mutated valid request of the method.
RAW = st.one_of(st.binary(max_size=600), MUTATIONS, st.just(b""))


@dataclass(frozen=True)
class Method:
    """One IngestService method called with raw bytes."""

    name: str
    request: type[Message]
    streamed: bool

    def decode(self, data: bytes) -> Message | None:
        try:
            return self.request.FromString(data)
        except DecodeError:
            return None


STREAM_TAPS = Method("StreamTaps", ingest_pb2.StreamTapsRequest, True)
UPLOAD = Method("UploadBacklog", ingest_pb2.UploadBacklogRequest, True)
GET_DENY_LIST = Method("GetDenyList", ingest_pb2.GetDenyListRequest, False)
SUBSCRIBE = Method("SubscribeDenyList", ingest_pb2.SubscribeDenyListRequest, False)
METHODS = {m.name: m for m in (STREAM_TAPS, UPLOAD, GET_DENY_LIST, SUBSCRIBE)}


def valid_request(fz: Fuzzed, method: Method) -> bytes:
    """A request of `method` the server takes: what the mutations start from."""
    identity = fz.identity(GATE.device_id)
    now = datetime.now(UTC)
    signed = identity.sign_batch([TapPlan(seq).build(GATE, now) for seq in (900, 901)])
    message: Message = {
        "StreamTaps": lambda: ingest_pb2.StreamTapsRequest(signed=signed),
        "UploadBacklog": lambda: ingest_pb2.UploadBacklogRequest(signed=signed),
        "GetDenyList": lambda: ingest_pb2.GetDenyListRequest(credential=identity.assertion()),
        "SubscribeDenyList": lambda: ingest_pb2.SubscribeDenyListRequest(
            credential=identity.assertion(), since_version=0
        ),
    }[method.name]()
    return message.SerializeToString()


def first_refusal(method: Method, requests: Sequence[Message | None]) -> tuple[str, str] | None:
    """The status a call must end with when its first request alone settles it."""
    first = requests[0]
    if first is None:
        return "INVALID_ARGUMENT", "UNDECODABLE_REQUEST"
    if method.streamed:
        signed = first.signed  # type: ignore[attr-defined]
        if not signed.device_id and not signed.signature:
            return "UNAUTHENTICATED", "UNSIGNED_BATCH"
        return None
    credential = first.credential  # type: ignore[attr-defined]
    if credential == ingest_pb2.SignedDeviceAssertion():  # absent, or empty
        return "UNAUTHENTICATED", "MISSING_CREDENTIAL"
    return None


def authentic_subscription(fz: Fuzzed, request: Message | None) -> bool:
    """Whether `request` subscribes with a valid credential of GATE (what a mutation that
    leaves the request valid sends)."""
    if request is None:
        return False
    credential = request.credential  # type: ignore[attr-defined]
    identity = fz.identity(GATE.device_id)
    try:
        assertion = ingest_pb2.DeviceAssertion.FromString(credential.assertion)
        identity.private_key.public_key().verify(
            credential.signature, ASSERTION_CONTEXT + credential.assertion
        )
    except (DecodeError, InvalidSignature):
        return False
    return (
        credential.key_id == identity.key_id
        and assertion.device_id == GATE.device_id
        and assertion.purpose == "deny-list"
    )


def taps_of(request: Message | None) -> list[events_pb2.Tap]:
    """The taps a decoded StreamTaps/UploadBacklog request carries (as the server parses
    them; only asked of requests the server answered)."""
    assert request is not None
    batch = ingest_pb2.TapBatch.FromString(request.signed.batch)  # type: ignore[attr-defined]
    return list(batch.taps)


def call_raw(fz: Fuzzed, method: Method, messages: Sequence[bytes]) -> None:
    """Send `messages` as the method's request bytes; check the answer."""
    path = SERVICE + method.name
    channel = fz.blocking
    requests = [method.decode(m) for m in messages]
    answered: list[bytes] = []
    failed: grpc.RpcError | None = None
    raw = {"request_serializer": bytes, "response_deserializer": bytes}
    try:
        if method is STREAM_TAPS:
            answered.extend(channel.stream_stream(path, **raw)(iter(messages), timeout=60))
        elif method is UPLOAD:
            answered.append(channel.stream_unary(path, **raw)(iter(messages), timeout=60))
        elif method is GET_DENY_LIST:
            answered.append(channel.unary_unary(path, **raw)(messages[0], timeout=60))
        else:
            try:
                answered.extend(channel.unary_stream(path, **raw)(messages[0], timeout=1.5))
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
                # a subscription that took: it waits for changes
                assert authentic_subscription(fz, requests[0]), exc.details()
    except grpc.RpcError as exc:
        failed = exc
    expected = first_refusal(method, requests)
    if failed is not None:
        code, reason = assert_refused_properly(failed)
        if expected is not None:
            assert (code.name, reason) == expected, failed.details()
    else:
        assert expected is None, f"{method.name} answered {expected} requests"
    # every batch the server answered is accounted tap by tap
    if method is STREAM_TAPS:
        for request, raw in zip(requests, answered, strict=False):
            fz.ledger.answer(taps_of(request), ingest_pb2.StreamTapsResponse.FromString(raw).acks)
    elif method is UPLOAD and answered:
        reply = ingest_pb2.UploadBacklogResponse.FromString(answered[0])
        taps = [taps_of(r) for r in requests]
        for sent, acks in zip(taps, split_upload(reply, [len(t) for t in taps]), strict=True):
            fz.ledger.answer(sent, acks)
    elif method is GET_DENY_LIST and answered:
        ingest_pb2.GetDenyListResponse.FromString(answered[0])


async def test_raw_request_bytes_are_refused_with_a_reason_never_unknown(fuzz: Fuzzed):
    bases: dict[str, bytes] = {}

    @settings(FUZZ, max_examples=300)
    @given(
        method=st.sampled_from(list(METHODS)),
        raw=st.lists(RAW, min_size=1, max_size=3),
    )
    @example(method="StreamTaps", raw=[b"\xff\xff\xff\xff\x0f"])
    @example(method="UploadBacklog", raw=[b"\x0a\x03\xff\xfe\xfd"])
    @example(method="GetDenyList", raw=[b"\x0a"])
    @example(method="SubscribeDenyList", raw=[b"\x80"])
    @example(method="StreamTaps", raw=[Mutation("append", 0, b""), b"\x12"])
    def property_(method: str, raw: list[bytes | Mutation]) -> None:
        m = METHODS[method]
        if method not in bases:
            bases[method] = valid_request(fuzz, m)
        messages = [r.apply(bases[method]) if isinstance(r, Mutation) else r for r in raw]
        if not m.streamed:
            messages = messages[:1]
        call_raw(fuzz, m, messages)

    await asyncio.to_thread(property_)


async def test_a_message_over_grpc_s_size_limit_is_resource_exhausted(fuzz: Fuzzed):
    call = fuzz.channel.stream_stream(
        SERVICE + "StreamTaps", request_serializer=bytes, response_deserializer=bytes
    )

    async def one() -> AsyncIterator[bytes]:
        batch = ingest_pb2.SignedTapBatch(device_id=GATE.device_id, batch=bytes(5 * 2**20))
        yield ingest_pb2.StreamTapsRequest(signed=batch).SerializeToString()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call(one(), timeout=60):
            pass
    # refused by gRPC itself, before ingest's code sees it: no reason code, never UNKNOWN
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# ---------------------------------------------------------------------------------------
# 3. Forged, altered and random signed batches

AUTH_REASONS = {
    "UNSIGNED_BATCH": "UNAUTHENTICATED",
    "UNKNOWN_DEVICE": "UNAUTHENTICATED",
    "UNKNOWN_KEY": "UNAUTHENTICATED",
    "KEY_RETIRED": "UNAUTHENTICATED",
    "BAD_SIGNATURE": "UNAUTHENTICATED",
    "DEVICE_REVOKED": "PERMISSION_DENIED",
    "UNDECODABLE_BATCH": "INVALID_ARGUMENT",
}
# What each forgery must be refused with (None: any of AUTH_REASONS).
FORGERIES: dict[str, str | None] = {
    "flip_signature_bit": "BAD_SIGNATURE",
    "random_signature": "BAD_SIGNATURE",
    "short_signature": "BAD_SIGNATURE",
    "long_signature": "BAD_SIGNATURE",
    "no_signature": "BAD_SIGNATURE",
    "signed_without_context": "BAD_SIGNATURE",
    "signed_other_bytes": "BAD_SIGNATURE",
    "flip_batch_bit": "BAD_SIGNATURE",
    "batch_appended": "BAD_SIGNATURE",
    "taps_swapped": "BAD_SIGNATURE",
    "other_key_same_device": "UNKNOWN_KEY",
    "junk_key_id": "UNKNOWN_KEY",
    "as_other_device": "UNKNOWN_KEY",
    "retired_key": "KEY_RETIRED",
    "revoked_device": "DEVICE_REVOKED",
    "unregistered_device": "UNKNOWN_DEVICE",
    "junk_device_id": "UNKNOWN_DEVICE",
    "unsigned_taps": "UNSIGNED_BATCH",
    "empty_request": "UNSIGNED_BATCH",
    "signed_undecodable": "UNDECODABLE_BATCH",
    "signed_bad_utf8": "UNDECODABLE_BATCH",
    "random_fields": None,
}
DEVICE_IDS = st.one_of(
    st.sampled_from([*PROFILES, REVOKED.device_id, ROTATED.device_id, ""]),
    junk_ids(GATE.device_id),
)


@dataclass(frozen=True)
class Forgery:
    """A batch of `device`'s good taps, forged or altered as `how` says."""

    how: str
    device: str
    at: int
    junk: bytes
    device_id: Any  # for junk_device_id and random_fields
    key_id: str
    signature: bytes
    via: str
    after_a_good_batch: bool


FORGERY_PLANS = st.builds(
    Forgery,
    st.sampled_from(list(FORGERIES)),
    st.sampled_from(list(PROFILES)),
    st.integers(0, 2**16),
    st.binary(min_size=1, max_size=40),
    DEVICE_IDS,
    st.one_of(st.text(max_size=20), st.just("0" * 16)),
    st.one_of(st.binary(max_size=100), st.binary(min_size=64, max_size=64)),
    st.sampled_from(["stream", "upload"]),
    st.booleans(),
)


def forge(fz: Fuzzed, plan: Forgery, taps: list[events_pb2.Tap]) -> ingest_pb2.StreamTapsRequest:
    """The forged request."""
    identity = fz.identity(plan.device)
    signed = identity.sign_batch(taps)
    how, at = plan.how, plan.at

    def flip(data: bytes) -> bytes:
        i = at % len(data)
        return data[:i] + bytes([data[i] ^ (1 << (at % 8))]) + data[i + 1 :]

    if how == "flip_signature_bit":
        signed.signature = flip(signed.signature)
    elif how == "random_signature":
        signed.signature = (plan.junk * 64)[:64]
    elif how == "short_signature":
        signed.signature = signed.signature[: at % 64]
    elif how == "long_signature":
        signed.signature += plan.junk
    elif how == "no_signature":
        signed.ClearField("signature")
    elif how == "signed_without_context":
        signed.signature = identity.private_key.sign(signed.batch)
    elif how == "signed_other_bytes":
        signed.signature = identity.private_key.sign(BATCH_CONTEXT + signed.batch + plan.junk)
    elif how == "flip_batch_bit":
        signed.batch = flip(signed.batch)
    elif how == "batch_appended":
        signed.batch += plan.junk
    elif how == "taps_swapped":
        signed.batch = ingest_pb2.TapBatch(taps=taps[::-1] + taps).SerializeToString()
    elif how == "other_key_same_device":
        other = DeviceIdentity.generate(plan.device).sign_batch(taps)
        signed.key_id, signed.signature = other.key_id, other.signature
    elif how == "junk_key_id":
        signed.key_id = "zz" + plan.key_id
    elif how == "as_other_device":
        signed.device_id = next(d for d in PROFILES if d != plan.device)
    elif how == "retired_key":
        signed = fz.identity(ROTATED.device_id).sign_batch(taps)
    elif how == "revoked_device":
        signed = fz.identity(REVOKED.device_id).sign_batch(taps)
    elif how == "unregistered_device":
        signed = DeviceIdentity.generate("fz-nobody-" + plan.key_id[:8]).sign_batch(taps)
    elif how == "junk_device_id":
        device_id = str(plan.device_id)
        if not device_id or device_id in fz.ingest.devices:
            device_id += "\x00"
        signed = DeviceIdentity(device_id, identity.private_key).sign_batch(taps)
    elif how == "unsigned_taps":
        return ingest_pb2.StreamTapsRequest(taps=taps)
    elif how == "empty_request":
        return ingest_pb2.StreamTapsRequest()
    elif how in ("signed_undecodable", "signed_bad_utf8"):
        signed.batch = (
            b"\xff\xff\xff" + plan.junk
            if how == "signed_undecodable"
            else b"\x0a\x04\x22\x02\xff\xfe"  # a tap whose card_token is not UTF-8
        )
        signed.signature = identity.private_key.sign(BATCH_CONTEXT + signed.batch)
    else:  # random_fields: nothing the device signed
        signed = ingest_pb2.SignedTapBatch(
            device_id=str(plan.device_id),
            key_id=plan.key_id,
            batch=signed.batch if at % 2 else plan.junk,
            signature=plan.signature,
        )
    return ingest_pb2.StreamTapsRequest(signed=signed)


def attempt_forgery(fz: Fuzzed, plan: Forgery, forged_keys: set[tuple[str, int]]) -> None:
    profile = PROFILES[plan.device]
    now = datetime.now(UTC)
    taps = [TapPlan(fz.next_seq()).build(profile, now) for _ in range(1 + plan.at % 3)]
    forged_keys.update((t.device_id, t.sequence_number) for t in taps)
    request = forge(fz, plan, taps)
    good = [TapPlan(fz.next_seq()).build(GATE, now)]
    first: list[ingest_pb2.StreamTapsRequest] = []
    if plan.after_a_good_batch and plan.via == "stream":
        first = [ingest_pb2.StreamTapsRequest(signed=fz.identity(GATE.device_id).sign_batch(good))]
    answered: list[list[ingest_pb2.TapAck]] = []
    stub = ingest_pb2_grpc.IngestServiceStub(fz.blocking)
    with pytest.raises(grpc.RpcError) as caught:
        if plan.via == "stream":
            for response in stub.StreamTaps(iter([*first, request]), timeout=60):
                answered.append(list(response.acks))
        else:
            stub.UploadBacklog(
                iter([ingest_pb2.UploadBacklogRequest(signed=request.signed)]), timeout=60
            )
    # the good batch before it was answered in full, and only it
    assert len(answered) == len(first)
    if first:
        fz.ledger.answer(good, answered[0])
        assert [a.status for a in answered[0]] == [ACCEPTED]
    code, reason = assert_refused_properly(caught.value)
    assert reason in AUTH_REASONS, (plan.how, reason)
    assert code.name == AUTH_REASONS[reason], (plan.how, code, reason)
    expected = FORGERIES[plan.how]
    if expected is not None:
        assert reason == expected, (plan.how, reason, caught.value.details())


async def test_forged_altered_and_random_signed_batches_are_refused_and_nothing_is_stored(
    fuzz: Fuzzed,
):
    forged_keys: set[tuple[str, int]] = set()

    @settings(FUZZ, max_examples=200)
    @given(plan=FORGERY_PLANS)
    def property_(plan: Forgery) -> None:
        attempt_forgery(fuzz, plan, forged_keys)

    await asyncio.to_thread(property_)
    # every kind of forgery once more, and device ids with a NUL, a megabyte, nothing
    explicit = [(how, "bad\nid") for how in FORGERIES] + [
        ("junk_device_id", "fz-gate-01\x00"),
        ("junk_device_id", Huge("d", 2**20)),
        ("random_fields", ""),
        ("random_fields", "fz-gate-02\x00"),
    ]
    for i, (how, device_id) in enumerate(explicit):
        devices = list(PROFILES)
        plan = Forgery(
            how,
            devices[i % len(devices)],
            i,
            b"\x01\x02",
            device_id,
            "abc",
            bytes(64) if i % 2 else b"",
            "stream" if i % 2 else "upload",
            bool(i % 3),
        )
        await asyncio.to_thread(attempt_forgery, fuzz, plan, forged_keys)
    stored = await stored_taps(fuzz)
    assert not forged_keys & set(stored), "a forged batch's tap was stored"


# ---------------------------------------------------------------------------------------
# A defect the fuzzing found in the deny list's door


async def test_a_deny_list_credential_whose_device_id_holds_a_nul_is_unauthenticated(
    fuzz: Fuzzed,
):
    credential = DeviceIdentity.generate("fz-gate-01\x00").assertion()
    stub = ingest_pb2_grpc.IngestServiceStub(fuzz.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetDenyList(ingest_pb2.GetDenyListRequest(credential=credential), timeout=30)
    assert status_of(caught.value) == (grpc.StatusCode.UNAUTHENTICATED, "UNKNOWN_DEVICE")


# ---------------------------------------------------------------------------------------
# 4. Still serving, and the taps topic holds exactly the taps acked ACCEPTED


async def test_after_the_fuzzing_the_server_still_accepts_and_stored_exactly_what_it_accepted(
    fuzz: Fuzzed,
):
    ingest = fuzz.ingest
    device = await ingest.register("fz-after-01", stops=GATE.stops)
    now = datetime.now(UTC)
    live = [TapPlan(1).build(dataclasses.replace(GATE, device_id="fz-after-01"), now)]
    acks = await ingest.send("fz-after-01", live)
    assert [(a.status, a.reason_code) for a in acks] == [(ACCEPTED, "")]
    fuzz.ledger.answer(live, acks)
    again = [TapPlan(fuzz.next_seq()).build(GATE, now), TapPlan(1).build(GATE, now)]
    reply = await upload(fuzz.channel, [fuzz.identity(GATE.device_id).sign_batch(again)])
    (uploaded,) = split_upload(reply, [2])
    assert uploaded[0].status == ACCEPTED
    fuzz.ledger.answer(again, uploaded)
    stub = ingest_pb2_grpc.IngestServiceStub(fuzz.channel)
    deny_list = await stub.GetDenyList(
        ingest_pb2.GetDenyListRequest(credential=device.assertion()), timeout=30
    )
    assert deny_list.version == 0

    stored = await stored_taps(fuzz)
    assert max(stored.values(), default=1) == 1, "a tap stored twice"
    assert set(stored) == fuzz.ledger.accepted, (
        "stored, not acked ACCEPTED",
        set(stored) - fuzz.ledger.accepted,
        "acked ACCEPTED, not stored",
        fuzz.ledger.accepted - set(stored),
    )
    assert fuzz.ledger.duplicates <= fuzz.ledger.accepted
