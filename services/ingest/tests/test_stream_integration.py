"""Ingest over its real gRPC server, with real Kafka, Redis and PostgreSQL: signed batches,
one ack per tap, every reason code, device identity, the backlog upload, exactly once."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from clearway.auth import Principal
from clearway.events.v1 import events_pb2
from clearway.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from services.ingest.device_client import DeviceIdentity
from services.ingest.domain.devices import Device
from services.ingest.domain.validation import RejectReason
from services.ingest.entrypoints.grpc import STREAM_IN_FLIGHT
from services.ingest.tests.ingest_harness import (
    CARD,
    OPERATOR,
    ROUTES,
    STOPS,
    Ingest,
    read_topic,
    start_ingest,
    status_of,
    tap,
    taps_on,
)

pytestmark = pytest.mark.integration

ACCEPTED = ingest_pb2.ACK_STATUS_ACCEPTED
DUPLICATE = ingest_pb2.ACK_STATUS_DUPLICATE
REJECTED = ingest_pb2.ACK_STATUS_REJECTED
GATE = "gate-KSX-01"


@pytest.fixture
async def ingest(settings_for, pki):
    service = await start_ingest(settings_for("ingest"), pki)
    await service.register(GATE)
    try:
        yield service
    finally:
        await service.stop()


async def test_accepted_taps_are_on_the_taps_topic_once_and_resends_are_duplicates(
    ingest: Ingest, kafka_bootstrap
):
    good = [tap(GATE, 1), tap(GATE, 2, kind=events_pb2.TAP_KIND_EXIT, stop=STOPS[1])]
    bad = [tap(GATE, 3, card_token="4111111111111111"), tap(GATE, 4, stop_id="")]
    first = await ingest.send(GATE, good + bad)
    again = await ingest.send(GATE, good)

    assert [(a.sequence_number, a.status, a.reason_code) for a in first] == [
        (1, ACCEPTED, ""),
        (2, ACCEPTED, ""),
        (3, REJECTED, "RAW_CARD_NUMBER"),
        (4, REJECTED, "MISSING_STOP_ID"),
    ]
    assert [a.status for a in again] == [DUPLICATE, DUPLICATE]
    stored = taps_on(await read_topic(kafka_bootstrap, ingest.settings.topics.taps))
    assert sorted(t.tap_id for t in stored) == [f"{GATE}:1", f"{GATE}:2"]
    assert all(t.received_at.seconds > 0 and not t.late for t in stored)
    letters = await read_topic(kafka_bootstrap, ingest.settings.topics.taps_dlq)
    parked = []
    for record in letters:
        letter = events_pb2.RejectedTap()
        letter.ParseFromString(record.value)
        parked.append((letter.tap.sequence_number, letter.reason_code, letter.tap.card_token))
    assert sorted(parked) == [(3, "RAW_CARD_NUMBER", "[redacted]"), (4, "MISSING_STOP_ID", CARD)]


def _tap_for(reason: RejectReason) -> events_pb2.Tap | None:
    """A tap of GATE that fails with `reason` alone (None: not a per-tap reason)."""
    now = datetime.now(UTC)
    cases: dict[RejectReason, events_pb2.Tap] = {
        RejectReason.MISSING_DEVICE_ID: tap("", 1),
        RejectReason.BAD_DEVICE_ID: tap(GATE + "\n", 1),
        RejectReason.DEVICE_MISMATCH: tap("gate-OTHER-02", 1),
        RejectReason.MISSING_SEQUENCE_NUMBER: tap(GATE, 0),
        RejectReason.MISSING_CARD_TOKEN: tap(GATE, 1, card=""),
        RejectReason.RAW_CARD_NUMBER: tap(GATE, 1, card="4111 1111 1111 1111"),
        RejectReason.BAD_CARD_TOKEN: tap(GATE, 1, card=CARD + "\n"),
        RejectReason.MISSING_STOP_ID: tap(GATE, 1, stop=""),
        RejectReason.BAD_STOP_ID: tap(GATE, 1, stop="x" * 129),
        RejectReason.STOP_NOT_ALLOWED: tap(GATE, 1, stop="940GZZLUWLO"),
        RejectReason.BAD_ROUTE_ID: tap(GATE, 1, route_id="r\x00"),
        RejectReason.ROUTE_NOT_ALLOWED: tap(GATE, 1, route_id=ROUTES[0]),
        RejectReason.MISSING_OPERATOR_ID: tap(GATE, 1, operator_id=""),
        RejectReason.BAD_OPERATOR_ID: tap(GATE, 1, operator_id="o" * 200),
        RejectReason.OPERATOR_MISMATCH: tap(GATE, 1, operator_id="ELIZ"),
        RejectReason.UNKNOWN_TAP_KIND: tap(GATE, 1, kind=events_pb2.TAP_KIND_UNSPECIFIED),
        RejectReason.BAD_RIDER_CATEGORY: tap(GATE, 1, rider_category_id="c" * 1_000_000),
        RejectReason.BAD_FARE_MEDIA: tap(GATE, 1, fare_media_id="\u200b"),
        RejectReason.BAD_UTC_OFFSET: tap(GATE, 1, utc_offset_minutes=900),
        RejectReason.CLOCK_SKEW: tap(GATE, 1, at=now + timedelta(minutes=6)),
        RejectReason.TAP_TOO_OLD: tap(GATE, 1, at=now - timedelta(days=20)),
    }
    missing = tap(GATE, 1)
    missing.ClearField("tapped_at")
    cases[RejectReason.MISSING_TAPPED_AT] = missing
    far = tap(GATE, 1)
    far.tapped_at.seconds = 253402300800  # 10000-01-01T00:00:00Z: beyond Timestamp's range
    cases[RejectReason.BAD_TAPPED_AT] = far
    return cases.get(reason)


@pytest.mark.parametrize(
    "reason", [r for r in RejectReason if r is not RejectReason.BATCH_TOO_LARGE]
)
async def test_every_reason_code_rejects_its_tap_and_the_rest_of_the_batch_is_taken(
    ingest: Ingest, reason: RejectReason, kafka_bootstrap
):
    bad = _tap_for(reason)
    assert bad is not None, f"no case for {reason}"
    good = tap(GATE, 2)
    acks = await ingest.send(GATE, [bad, good])
    assert (acks[0].status, acks[0].reason_code) == (REJECTED, reason.value)
    assert acks[0].detail and CARD not in acks[0].detail
    assert (acks[1].sequence_number, acks[1].status) == (2, ACCEPTED)
    letters = await read_topic(kafka_bootstrap, ingest.settings.topics.taps_dlq)
    assert len(letters) == 1
    assert all(len(r.value) < 64 * 1024 for r in letters)  # a dead letter always fits


async def test_a_batch_over_the_limit_rejects_every_tap_with_batch_too_large(ingest: Ingest):
    acks = await ingest.send(GATE, [tap(GATE, i) for i in range(1, 5_002)])
    assert {(a.status, a.reason_code) for a in acks} == {(REJECTED, "BATCH_TOO_LARGE")}


async def test_oversize_fields_are_rejected_and_their_dead_letter_fits(
    ingest: Ingest, kafka_bootstrap
):
    huge = "A" * 1_000_000
    acks = await ingest.send(
        GATE, [tap(GATE, 1, card=huge), tap(GATE, 2, device_id=huge), tap(GATE, 3)]
    )
    assert [(a.status, a.reason_code) for a in acks] == [
        (REJECTED, "BAD_CARD_TOKEN"),
        (REJECTED, "BAD_DEVICE_ID"),
        (ACCEPTED, ""),
    ]
    letters = await read_topic(kafka_bootstrap, ingest.settings.topics.taps_dlq)
    assert len(letters) == 2 and all(len(r.value) < 4096 for r in letters)
    truncated = set()
    for record in letters:
        letter = events_pb2.RejectedTap()
        letter.ParseFromString(record.value)
        truncated.update(letter.truncated_fields)
    assert truncated == {"card_token", "device_id"}


async def test_late_taps_are_accepted_and_flagged(ingest: Ingest, kafka_bootstrap):
    old = datetime.now(UTC) - timedelta(hours=6)
    acks = await ingest.send(GATE, [tap(GATE, 1, at=old), tap(GATE, 2)])
    assert [(a.status, a.late) for a in acks] == [(ACCEPTED, True), (ACCEPTED, False)]
    stored = {
        t.sequence_number: t.late
        for t in taps_on(await read_topic(kafka_bootstrap, ingest.settings.topics.taps))
    }
    assert stored == {1: True, 2: False}


async def test_unsigned_forged_and_unknown_batches_are_refused_whole(ingest: Ingest):
    identity = ingest.devices[GATE]
    forged = identity.sign_batch([tap(GATE, 1)])
    forged.batch = ingest_pb2.TapBatch(taps=[tap(GATE, 1), tap(GATE, 2)]).SerializeToString()
    stranger = DeviceIdentity.generate("gate-NOBODY-9").sign_batch([tap("gate-NOBODY-9", 1)])
    impostor = DeviceIdentity.generate(GATE).sign_batch([tap(GATE, 1)])  # GATE's id, other key
    cases = [
        (ingest_pb2.StreamTapsRequest(taps=[tap(GATE, 1)]), "UNSIGNED_BATCH"),
        (forged, "BAD_SIGNATURE"),
        (stranger, "UNKNOWN_DEVICE"),
        (impostor, "UNKNOWN_KEY"),
    ]
    for request, reason in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ingest.stream([request])
        assert status_of(caught.value) == (grpc.StatusCode.UNAUTHENTICATED, reason)


async def test_a_device_cannot_send_as_another_or_for_another_operators_stops(
    ingest: Ingest, kafka_bootstrap
):
    other = "gate-OXC-02"
    await ingest.register(other, stops=[STOPS[1]])
    acks = await ingest.send(
        GATE,
        [
            tap(other, 1, stop=STOPS[1]),  # GATE signing a tap of another device
            tap(GATE, 2, operator_id="ELIZ"),  # another operator
            tap(GATE, 3, stop="910GPADTON"),  # a stop it is not registered at
        ],
    )
    assert [a.reason_code for a in acks] == [
        "DEVICE_MISMATCH",
        "OPERATOR_MISMATCH",
        "STOP_NOT_ALLOWED",
    ]
    assert await read_topic(kafka_bootstrap, ingest.settings.topics.taps, settle_s=0.5) == []


async def test_a_revoked_device_is_refused_at_once_even_on_an_open_stream(ingest: Ingest):
    identity = ingest.devices[GATE]
    revoked = asyncio.Event()

    async def requests():
        yield ingest_pb2.StreamTapsRequest(signed=identity.sign_batch([tap(GATE, 1)]))
        await revoked.wait()
        yield ingest_pb2.StreamTapsRequest(signed=identity.sign_batch([tap(GATE, 2)]))

    async with ingest.channel() as channel:
        call = ingest_pb2_grpc.IngestServiceStub(channel).StreamTaps(requests())
        first = await call.read()
        assert [a.status for a in first.acks] == [ACCEPTED]
        await ingest.registry(
            "RevokeDevice", ingest_pb2.RevokeDeviceRequest(device_id=GATE, reason="stolen")
        )
        revoked.set()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
    assert status_of(caught.value) == (grpc.StatusCode.PERMISSION_DENIED, "DEVICE_REVOKED")


async def test_key_rotation_new_key_signs_and_a_retired_key_is_refused(ingest: Ingest):
    old = ingest.devices[GATE]
    new = DeviceIdentity.generate(GATE)
    added = await ingest.registry(
        "AddDeviceKey", ingest_pb2.AddDeviceKeyRequest(device_id=GATE, public_key=new.public_key)
    )
    assert added.key_id == new.key_id
    (both,) = await ingest.stream([old.sign_batch([tap(GATE, 1)])])
    (fresh,) = await ingest.stream([new.sign_batch([tap(GATE, 2)])])
    assert [a.status for a in both + fresh] == [ACCEPTED, ACCEPTED]
    await ingest.registry(
        "RetireDeviceKey", ingest_pb2.RetireDeviceKeyRequest(device_id=GATE, key_id=old.key_id)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.stream([old.sign_batch([tap(GATE, 3)])])
    assert status_of(caught.value) == (grpc.StatusCode.UNAUTHENTICATED, "KEY_RETIRED")
    (after,) = await ingest.stream([new.sign_batch([tap(GATE, 3)])])
    assert [a.status for a in after] == [ACCEPTED]


async def test_the_registry_is_for_the_operations_role_on_the_admin_port(ingest: Ingest, pki):
    request = ingest_pb2.GetDeviceRequest(device_id=GATE)
    async with ingest.channel() as channel:  # the validators' port: no client certificate
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await ingest_pb2_grpc.DeviceRegistryServiceStub(channel).GetDevice(request)
    async with ingest.admin_channel(Principal("party", "operator:LUL")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as party:
            await ingest_pb2_grpc.DeviceRegistryServiceStub(channel).GetDevice(request)
    assert status_of(anonymous.value) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    assert status_of(party.value) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    shown = await ingest.registry("GetDevice", request)
    assert shown.device.operator_id == OPERATOR
    assert [k.key_id for k in shown.device.keys] == [ingest.devices[GATE].key_id]
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await ingest.registry("GetDevice", ingest_pb2.GetDeviceRequest(device_id="gate-NONE"))
    assert status_of(missing.value) == (grpc.StatusCode.NOT_FOUND, "DEVICE_NOT_FOUND")


async def test_undecodable_request_bytes_are_invalid_argument(ingest: Ingest):
    async with ingest.channel() as channel:
        call = channel.stream_stream(
            "/clearway.ingest.v1.IngestService/StreamTaps",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )

        async def garbage():
            yield b"\xff\xff\xff\xff\x0f"

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call(garbage()):
                pass
    assert status_of(caught.value) == (grpc.StatusCode.INVALID_ARGUMENT, "UNDECODABLE_REQUEST")
    identity = ingest.devices[GATE]
    signed = identity.sign_batch([])
    signed.batch = b"\xff\xff\xff"
    signed.signature = identity.private_key.sign(b"clearway.ingest.v1.TapBatch\x00" + signed.batch)
    with pytest.raises(grpc.aio.AioRpcError) as inner:
        await ingest.stream([signed])
    assert status_of(inner.value) == (grpc.StatusCode.INVALID_ARGUMENT, "UNDECODABLE_BATCH")


async def test_a_backlog_of_10000_taps_with_duplicates_is_counted_exactly(
    ingest: Ingest, kafka_bootstrap
):
    bus = "bus-73-0042"
    identity = await ingest.register(bus, stops=STOPS, routes=ROUTES)
    start = datetime.now(UTC) - timedelta(hours=9)
    taps = [
        tap(
            bus,
            seq,
            card=f"tok_card{seq % 700:05d}",
            stop=STOPS[seq % 3],
            route_id=ROUTES[0],
            kind=events_pb2.TAP_KIND_BOARD,
            at=start + timedelta(seconds=3 * seq),
        )
        for seq in range(1, 10_001)
    ]
    # 500 of them already sent live before the link went down
    live = await ingest.send(bus, taps[:500])
    assert Counter(a.status for a in live) == {ACCEPTED: 500}
    # the device resends everything, with 300 taps repeated inside the upload too
    mixed = taps + taps[2_000:2_300]
    reply = await ingest.upload(
        identity.sign_batch(mixed[i : i + 1_000]) for i in range(0, len(mixed), 1_000)
    )
    assert (reply.accepted, reply.duplicates, reply.rejected) == (9_500, 800, 0)
    assert reply.late == 9_500
    assert len(reply.acks) == len(mixed)
    stored = taps_on(await read_topic(kafka_bootstrap, ingest.settings.topics.taps))
    assert len(stored) == 10_000
    assert len({t.tap_id for t in stored}) == 10_000


async def test_streams_cut_off_mid_batch_then_resent_store_every_tap_exactly_once(
    ingest: Ingest, kafka_bootstrap
):
    devices = [f"gate-CUT-{i:03d}" for i in range(40)]
    for device in devices:
        await ingest.register(device)
    batches = {
        d: [tap(d, s, card=f"tok_cut{i:03d}x{s:03d}") for s in range(1, 51)]
        for i, d in enumerate(devices)
    }

    async def cut_off(device: str) -> None:
        async with ingest.channel() as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            signed = ingest.devices[device].sign_batch(batches[device])
            call = stub.StreamTaps(iter([ingest_pb2.StreamTapsRequest(signed=signed)]))
            await asyncio.sleep(0.01 * (hash(device) % 5))
            call.cancel()  # the link drops before (or while) the ack comes back

    for _ in range(5):  # 200 cut-off streams in all
        await asyncio.gather(*(cut_off(d) for d in devices))
    resent = await asyncio.gather(*(ingest.send(d, batches[d]) for d in devices))
    assert all(a.status in (ACCEPTED, DUPLICATE) for acks in resent for a in acks)
    stored = taps_on(await read_topic(kafka_bootstrap, ingest.settings.topics.taps))
    ids = Counter(t.tap_id for t in stored)
    assert len(ids) == 40 * 50
    assert max(ids.values()) == 1


class FirstLookupHeld:
    """The device registry with its first lookup held back `hold_s`: the first batch of a
    stream is then authenticated after the batches sent behind it."""

    def __init__(self, ingest: Ingest, hold_s: float) -> None:
        ports = ingest.app.ports.get()
        self.registry = ports.accept.registry
        self.hold_s = hold_s
        self.lookups = 0
        self.during_hold = 0  # lookups started while the first was held
        self.holding = False
        accept = dataclasses.replace(ports.accept, registry=self)
        ingest.app.ports.fill(dataclasses.replace(ports, accept=accept))

    async def device(self, device_id: str) -> Device | None:
        """The registered device; the first call only after `hold_s`."""
        self.lookups += 1
        if self.lookups == 1:
            self.holding = True
            await asyncio.sleep(self.hold_s)
            self.holding = False
        elif self.holding:
            self.during_hold += 1
        return await self.registry.device(device_id)


async def test_a_streams_batches_are_written_in_the_order_sent_though_authenticated_at_once(
    ingest: Ingest, kafka_bootstrap
):
    held = FirstLookupHeld(ingest, 0.3)
    identity = ingest.devices[GATE]
    sent = [[2 * b + 1, 2 * b + 2] for b in range(6)]  # one card: one partition
    answers = await ingest.stream(
        [identity.sign_batch([tap(GATE, s) for s in seqs]) for seqs in sent]
    )
    assert [[(a.sequence_number, a.status) for a in acks] for acks in answers] == [
        [(s, ACCEPTED) for s in seqs] for seqs in sent
    ]
    # The batches behind the first were authenticated while it was held, at most
    # STREAM_IN_FLIGHT at a time (the first and three behind it)...
    assert held.lookups == len(sent)
    assert held.during_hold == STREAM_IN_FLIGHT - 1
    # ...and still written after it, in the order the device sent them.
    stored = taps_on(await read_topic(kafka_bootstrap, ingest.settings.topics.taps))
    assert [t.sequence_number for t in stored if t.device_id == GATE] == list(range(1, 13))
    received = [t.received_at.ToNanoseconds() for t in stored if t.device_id == GATE]
    assert received == sorted(received)


async def test_a_refused_batch_does_not_hold_back_the_batches_sent_behind_it(
    ingest: Ingest, kafka_bootstrap
):
    FirstLookupHeld(ingest, 0.3)
    impostor = DeviceIdentity.generate(GATE).sign_batch([tap(GATE, 1)])  # GATE's id, other key
    identity = ingest.devices[GATE]
    behind = [identity.sign_batch([tap(GATE, 2)]), identity.sign_batch([tap(GATE, 3)])]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.stream([impostor, *behind])
    assert status_of(caught.value) == (grpc.StatusCode.UNAUTHENTICATED, "UNKNOWN_KEY")
    # The batches already in flight go on once the refused one is done with.
    stored = taps_on(await read_topic(kafka_bootstrap, ingest.settings.topics.taps))
    assert [t.sequence_number for t in stored if t.device_id == GATE] == [2, 3]
    again = await ingest.send(GATE, [tap(GATE, 2), tap(GATE, 3)])
    assert [a.status for a in again] == [DUPLICATE, DUPLICATE]


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (253402300800, 0),  # year 10000
        (-62135596801, 0),  # before year 1
        (1_700_000_000, -1),  # negative nanos
        (1_700_000_000, 1_000_000_000),  # nanos past a second
    ],
)
async def test_timestamps_outside_the_representable_range_are_rejected_not_unknown(
    ingest: Ingest, seconds: int, nanos: int
):
    bad = tap(GATE, 1)
    bad.tapped_at.seconds, bad.tapped_at.nanos = seconds, nanos
    acks = await ingest.send(GATE, [bad, tap(GATE, 2)])
    assert [(a.status, a.reason_code) for a in acks] == [
        (REJECTED, "BAD_TAPPED_AT"),
        (ACCEPTED, ""),
    ]
    # Resending gives the same answer (the batch is never undeliverable).
    again = await ingest.send(GATE, [bad, tap(GATE, 2)])
    assert [(a.status, a.reason_code) for a in again] == [
        (REJECTED, "BAD_TAPPED_AT"),
        (DUPLICATE, ""),
    ]
