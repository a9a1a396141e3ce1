"""Accepting a signed batch of taps: prove the device, check every tap, write the good ones
exactly once, park the bad ones with their reason, answer one ack per tap.

The live stream and the backlog upload both come here: one path, the same guarantees.
A tap of a card with a travel-pass concession in force on its service day is written with
the concession's rider category (domain.concessions) before it is claimed and written, so
the one copy Kafka holds carries it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from redis.exceptions import RedisError

from clearway.errors import ClearwayError, ErrorKind
from clearway.events.v1 import events_pb2
from clearway.ingest.v1 import ingest_pb2
from clearway.kafka import dead_letter_headers
from clearway.telemetry import kafka_headers_with_trace
from services.ingest.adapters.tap_writer import Message, TapToWrite
from services.ingest.domain.concessions import (
    DEFAULT_CONCESSION_RULES,
    Concession,
    ConcessionRules,
)
from services.ingest.domain.dead_letters import bound_fields, redact_card_token
from services.ingest.domain.devices import BATCH_CONTEXT, Device, DeviceAuthError, verify_signed
from services.ingest.domain.validation import (
    DEFAULT_POLICY,
    MAX_BATCH_TAPS,
    DeviceScope,
    RejectReason,
    TapSubmission,
    ValidationPolicy,
    Verdict,
    id_problem,
    validate_tap,
)

log = logging.getLogger(__name__)
tracer = trace.get_tracer("clearway.ingest")

ACCEPTED = ingest_pb2.ACK_STATUS_ACCEPTED
DUPLICATE = ingest_pb2.ACK_STATUS_DUPLICATE
REJECTED = ingest_pb2.ACK_STATUS_REJECTED
KIND_NAMES = {
    events_pb2.TAP_KIND_ENTRY: "entry",
    events_pb2.TAP_KIND_EXIT: "exit",
    events_pb2.TAP_KIND_BOARD: "board",
}
# The string fields of a tap a dead letter carries (bounded so it always fits in Kafka).
TAP_STRING_FIELDS = (
    "tap_id",
    "device_id",
    "card_token",
    "stop_id",
    "route_id",
    "operator_id",
    "rider_category_id",
    "fare_media_id",
)


class UnsignedBatchError(ClearwayError):
    """A request without a signed batch."""

    code = "UNSIGNED_BATCH"
    kind = ErrorKind.UNAUTHENTICATED


class UndecodableBatchError(ClearwayError):
    """The signed bytes are not a TapBatch."""

    code = "UNDECODABLE_BATCH"
    kind = ErrorKind.INVALID_ARGUMENT


class RegistryUnavailableError(ClearwayError):
    """The device registry did not answer; nothing of the batch was taken."""

    code = "REGISTRY_UNAVAILABLE"
    kind = ErrorKind.UNAVAILABLE


class DeviceLookup(Protocol):
    """The device registry, as accepting reads it."""

    async def device(self, device_id: str) -> Device | None:
        """The device as registered now."""
        ...


class TapWrites(Protocol):
    """Exactly-once writes of taps and dead letters (tap_writer.TapWriter)."""

    async def write(self, taps: list[TapToWrite], dead_letters: list[Message]) -> list[bool]:
        """Per tap: True written now, False already there."""
        ...


class DenyListView(Protocol):
    """The deny list as this process knows it."""

    def blocked(self, card_token: str) -> bool:
        """True when the card is on the list."""
        ...

    @property
    def version(self) -> int:
        """The list's version (0: empty, never changed)."""
        ...


class ConcessionView(Protocol):
    """Cards' concessions as this process knows them."""

    def concession(self, card_token: str) -> Concession | None:
        """The card's concession, whatever its days."""
        ...


class NoConcessions:
    """No card has a concession (a process that does not follow the topic)."""

    def concession(self, card_token: str) -> Concession | None:
        """None: no concession."""
        return None


NO_CONCESSIONS = NoConcessions()


@dataclass(frozen=True, slots=True)
class AcceptPorts:
    """What accepting a batch talks to."""

    registry: DeviceLookup
    writer: TapWrites
    deny_list: DenyListView
    taps_topic: str
    policy: ValidationPolicy = DEFAULT_POLICY
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    concessions: ConcessionView = NO_CONCESSIONS
    concession_rules: ConcessionRules = DEFAULT_CONCESSION_RULES


async def authenticate_batch(
    ports: AcceptPorts, signed: ingest_pb2.SignedTapBatch
) -> tuple[Device, ingest_pb2.TapBatch]:
    """The device that signed `signed` and its taps; raises the status to answer with."""
    if not signed.device_id and not signed.signature:
        raise UnsignedBatchError(
            "send taps in a SignedTapBatch signed by the device's registered key"
        )
    if id_problem(signed.device_id) is not None:
        # No registered device has such an id (the registry refuses them): unknown, without
        # asking PostgreSQL, which cannot even compare a text holding a NUL.
        raise DeviceAuthError("the device is not registered", code="UNKNOWN_DEVICE")
    try:
        device = await ports.registry.device(signed.device_id)
    except (RedisError, OSError) as exc:
        raise RegistryUnavailableError("the device registry did not answer; resend") from exc
    verify_signed(
        device,
        key_id=signed.key_id,
        context=BATCH_CONTEXT,
        payload=signed.batch,
        signature=signed.signature,
    )
    assert device is not None
    batch = ingest_pb2.TapBatch()
    try:
        batch.ParseFromString(signed.batch)
    except DecodeError:
        raise UndecodableBatchError("the signed bytes are not a TapBatch") from None
    return device, batch


def submission_of(tap: events_pb2.Tap) -> TapSubmission:
    """The raw fields validation looks at."""
    has_time = tap.HasField("tapped_at")
    return TapSubmission(
        device_id=tap.device_id,
        sequence_number=tap.sequence_number,
        card_token=tap.card_token,
        tapped_at_seconds=tap.tapped_at.seconds if has_time else None,
        tapped_at_nanos=tap.tapped_at.nanos if has_time else 0,
        utc_offset_minutes=tap.utc_offset_minutes,
        stop_id=tap.stop_id,
        kind=KIND_NAMES.get(tap.kind, "unknown"),
        route_id=tap.route_id,
        operator_id=tap.operator_id,
        rider_category_id=tap.rider_category_id,
        fare_media_id=tap.fare_media_id,
    )


def scope_of(device: Device) -> DeviceScope:
    """What validation checks a tap of `device` against."""
    return DeviceScope(
        device_id=device.device_id,
        operator_id=device.operator_id,
        allowed_stop_ids=device.allowed_stop_ids,
        allowed_route_ids=device.allowed_route_ids,
    )


async def accept_taps(
    ports: AcceptPorts,
    device: Device,
    taps: list[events_pb2.Tap],
    *,
    after: asyncio.Event | None = None,
    turn_done: asyncio.Event | None = None,
) -> list[ingest_pb2.TapAck]:
    """One ack per tap, in order, once every accepted tap and every dead letter is durable.
    Raises an UNAVAILABLE ClearwayError when nothing of the batch could be written.

    A stream keeps its batches in order with the two events: this one waits for `after`
    (set once the batch sent before it is in the writer's queue) before it even stamps its
    taps' `received_at`, and sets `turn_done` just before handing its own to the writer.
    Setting an event only wakes its waiter later, and the writer queues a write before it
    first yields, so the batch after this one always queues behind it."""
    with tracer.start_as_current_span("ingest.accept_batch") as span:
        span.set_attribute("clearway.taps", len(taps))
        span.set_attribute("clearway.device", device.device_id)
        if after is not None:
            await after.wait()
        received_at = ports.clock()
        scope = scope_of(device)
        acks = [
            ingest_pb2.TapAck(device_id=t.device_id[:128], sequence_number=t.sequence_number)
            for t in taps
        ]
        to_write: list[TapToWrite] = []
        written_at: list[int] = []
        letters: list[Message] = []
        seen: set[int] = set()
        stamped = 0
        version = ports.deny_list.version
        stamp = events_pb2.Tap().received_at
        stamp.FromDatetime(received_at)
        headers = kafka_headers_with_trace()  # the batch's span: the same for all its taps
        for i, tap in enumerate(taps):
            verdict = (
                Verdict(RejectReason.BATCH_TOO_LARGE, f"at most {MAX_BATCH_TAPS} taps a batch")
                if len(taps) > MAX_BATCH_TAPS
                else validate_tap(submission_of(tap), received_at, scope, ports.policy)
            )
            if verdict.reason is not None:
                letters.append(_dead_letter(tap, verdict, stamp))
                acks[i].status = REJECTED
                acks[i].reason_code = verdict.reason.value
                acks[i].detail = verdict.detail
                continue
            if tap.sequence_number in seen:  # the same tap twice in one batch
                acks[i].status = DUPLICATE
                continue
            seen.add(tap.sequence_number)
            blocked = ports.deny_list.blocked(tap.card_token)
            record = _accepted(tap, stamp, verdict.late, blocked, version)
            category = _concession_category(ports, tap)
            if category is not None:
                record.rider_category_id = category
                stamped += 1
            acks[i].late = verdict.late
            acks[i].card_blocked = blocked
            acks[i].deny_list_version = version
            message = (
                tap.card_token.encode(),
                record.SerializeToString(deterministic=True),
                headers,
            )
            to_write.append(TapToWrite((tap.device_id, tap.sequence_number), message))
            written_at.append(i)
        if turn_done is not None:
            turn_done.set()
        results = await ports.writer.write(to_write, letters)
        _answer_written(acks, written_at, results)
        if letters:
            span.set_attribute("clearway.rejected", len(letters))
        if stamped:
            span.set_attribute("clearway.concessions", stamped)
        return acks


def _answer_written(acks: list[ingest_pb2.TapAck], written_at: list[int], new: list[bool]) -> None:
    """The writer's answer on the acks of the taps handed to it (`written_at`): ACCEPTED
    when written now; DUPLICATE, and never late, when it was already in Kafka."""
    for i, written in zip(written_at, new, strict=True):
        acks[i].status = ACCEPTED if written else DUPLICATE
        if not written:
            acks[i].late = False


def _accepted(
    tap: events_pb2.Tap, stamp: Timestamp, late: bool, blocked: bool, version: int
) -> events_pb2.Tap:
    """The tap as written to `taps`: its id, when it arrived, whether it is late, and
    whether its card is blocked at deny-list `version`."""
    record = events_pb2.Tap()
    record.CopyFrom(tap)
    record.tap_id = f"{tap.device_id}:{tap.sequence_number}"
    record.received_at.CopyFrom(stamp)
    record.late = late
    record.card_blocked = blocked
    record.deny_list_version = version if blocked else 0
    return record


def _concession_category(ports: AcceptPorts, tap: events_pb2.Tap) -> str | None:
    """The concession's rider category when the tap's card has one in force on the tap's
    service day and the tap's own category is one a concession replaces; else None."""
    concession = ports.concessions.concession(tap.card_token)
    if concession is None:
        return None
    tapped_at = tap.tapped_at.ToDatetime(tzinfo=UTC)
    return ports.concession_rules.category_for(tap.rider_category_id, concession, tapped_at)


def _dead_letter(tap: events_pb2.Tap, verdict: Verdict, stamp: object) -> Message:
    """The tap parked with its reason: oversize fields cut (and hashed) so it always fits,
    a card number never stored."""
    assert verdict.reason is not None
    fields = {name: getattr(tap, name) for name in TAP_STRING_FIELDS}
    fields["card_token"] = redact_card_token(verdict.reason, tap.card_token)
    bounded, truncated = bound_fields(fields)
    kept = events_pb2.Tap()
    kept.CopyFrom(tap)
    for name, value in bounded.items():
        setattr(kept, name, value)
    letter = events_pb2.RejectedTap(
        tap=kept,
        reason_code=verdict.reason.value,
        detail=verdict.detail,
        truncated_fields=truncated,
    )
    letter.rejected_at.CopyFrom(stamp)  # type: ignore[arg-type]
    key = bounded["device_id"].encode() or b"unknown-device"
    headers = dead_letter_headers(verdict.reason.value, verdict.detail)
    return key, letter.SerializeToString(deterministic=True), headers
