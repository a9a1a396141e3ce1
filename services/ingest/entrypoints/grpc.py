"""The validators' door: a bidirectional stream of tap batches in, one ack per tap out."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from redis.exceptions import RedisError

from clearway.errors import ClearwayError, ErrorKind
from clearway.events.v1 import events_pb2
from clearway.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from clearway.rpc import Slot
from services.ingest.adapters.dedup import Claim, TapDeduplicator
from services.ingest.adapters.tap_log import TapLog
from services.ingest.domain import MAX_BATCH_TAPS, RejectReason, TapSubmission, validate_tap

log = logging.getLogger(__name__)
tracer = trace.get_tracer("clearway.ingest")

KIND_NAMES = {
    events_pb2.TAP_KIND_ENTRY: "entry",
    events_pb2.TAP_KIND_EXIT: "exit",
    events_pb2.TAP_KIND_BOARD: "board",
}
ACCEPTED = ingest_pb2.ACK_STATUS_ACCEPTED
DUPLICATE = ingest_pb2.ACK_STATUS_DUPLICATE
REJECTED = ingest_pb2.ACK_STATUS_REJECTED


class KafkaUnavailableError(ClearwayError):
    """Kafka did not durably take a tap; the validator must resend the batch."""

    code = "KAFKA_UNAVAILABLE"
    kind = ErrorKind.UNAVAILABLE


class DedupUnavailableError(ClearwayError):
    """Redis (the duplicate check) did not answer; nothing of the batch was acknowledged."""

    code = "DEDUP_UNAVAILABLE"
    kind = ErrorKind.UNAVAILABLE


def submission_of(tap: events_pb2.Tap) -> TapSubmission:
    """The domain view of a protobuf tap."""
    tapped_at = None
    if tap.HasField("tapped_at"):
        tapped_at = tap.tapped_at.ToDatetime(tzinfo=UTC)
    return TapSubmission(
        device_id=tap.device_id,
        sequence_number=tap.sequence_number,
        card_token=tap.card_token,
        tapped_at=tapped_at,
        utc_offset_minutes=tap.utc_offset_minutes,
        stop_id=tap.stop_id,
        kind=KIND_NAMES.get(tap.kind, "unknown"),
        route_id=tap.route_id,
        operator_id=tap.operator_id,
    )


def _timestamp(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


@dataclass(frozen=True, slots=True)
class IngestPorts:
    """What the servicer talks to; exists once the service has started."""

    dedup: TapDeduplicator
    tap_log: TapLog


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    """Accepts, deduplicates or rejects each tap; acknowledges only what Kafka durably holds."""

    def __init__(self, ports: Slot[IngestPorts]) -> None:
        self.ports = ports

    @property
    def dedup(self) -> TapDeduplicator:
        """The duplicate check (Redis)."""
        return self.ports.get().dedup

    @property
    def tap_log(self) -> TapLog:
        """The taps topic and its dead letters."""
        return self.ports.get().tap_log

    async def StreamTaps(  # noqa: N802 (gRPC method name)
        self,
        request_iterator: AsyncIterator[ingest_pb2.StreamTapsRequest],
        context: grpc.aio.ServicerContext[
            ingest_pb2.StreamTapsRequest, ingest_pb2.StreamTapsResponse
        ],
    ) -> AsyncIterator[ingest_pb2.StreamTapsResponse]:
        """One response (acks in request order) per request batch."""
        async for request in request_iterator:
            try:
                acks = await self.accept_batch(list(request.taps))
            except (RedisError, TimeoutError) as exc:
                # Nothing acknowledged from this batch: the validator resends it.
                log.warning("dedup store unavailable", extra={"error": type(exc).__name__})
                raise DedupUnavailableError("resend the batch") from exc
            yield ingest_pb2.StreamTapsResponse(acks=acks)

    async def accept_batch(self, taps: list[events_pb2.Tap]) -> list[ingest_pb2.TapAck]:
        """Acks for `taps`, in order, after accepted taps and dead letters are durable."""
        with tracer.start_as_current_span("ingest.accept_batch") as span:
            span.set_attribute("clearway.taps", len(taps))
            received_at = datetime.now(UTC)
            acks: list[ingest_pb2.TapAck] = [
                ingest_pb2.TapAck(device_id=t.device_id, sequence_number=t.sequence_number)
                for t in taps
            ]
            rejected: list[tuple[int, RejectReason, str]] = []
            candidates: list[int] = []
            seen_in_batch: set[tuple[str, int]] = set()
            for i, tap in enumerate(taps):
                verdict: tuple[RejectReason, str] | None
                if len(taps) > MAX_BATCH_TAPS:
                    verdict = (RejectReason.BATCH_TOO_LARGE, f"at most {MAX_BATCH_TAPS} taps")
                else:
                    verdict = validate_tap(submission_of(tap), received_at)
                if verdict is not None:
                    rejected.append((i, *verdict))
                elif (tap.device_id, tap.sequence_number) in seen_in_batch:
                    acks[i].status = DUPLICATE
                else:
                    seen_in_batch.add((tap.device_id, tap.sequence_number))
                    candidates.append(i)
            await self._accept(taps, candidates, acks, received_at)
            await self._reject(taps, rejected, acks, received_at)
            return acks

    async def _accept(
        self,
        taps: list[events_pb2.Tap],
        candidates: list[int],
        acks: list[ingest_pb2.TapAck],
        received_at: datetime,
    ) -> None:
        def pairs(indexes: list[int]) -> list[tuple[str, int]]:
            return [(taps[i].device_id, taps[i].sequence_number) for i in indexes]

        claims = await self.dedup.claim_many(pairs(candidates))
        new = [i for i, claim in zip(candidates, claims, strict=True) if claim is Claim.NEW]
        for i, claim in zip(candidates, claims, strict=True):
            if claim is Claim.DUPLICATE:
                acks[i].status = DUPLICATE
        to_send = []
        for i in new:
            tap = events_pb2.Tap()
            tap.CopyFrom(taps[i])
            tap.tap_id = f"{tap.device_id}:{tap.sequence_number}"
            tap.received_at.CopyFrom(_timestamp(received_at))
            to_send.append(tap)
        results = await self.tap_log.append_accepted(to_send)
        durable = [i for i, err in zip(new, results, strict=True) if err is None]
        failed = [i for i, err in zip(new, results, strict=True) if err is not None]
        await self.dedup.mark_accepted(pairs(durable))
        for i in durable:
            acks[i].status = ACCEPTED
        await self.dedup.release(pairs(failed))
        if failed:
            log.error("kafka did not take taps", extra={"failed": len(failed)})
            raise KafkaUnavailableError(f"{len(failed)} taps not durable; resend the batch")

    async def _reject(
        self,
        taps: list[events_pb2.Tap],
        rejected: list[tuple[int, RejectReason, str]],
        acks: list[ingest_pb2.TapAck],
        received_at: datetime,
    ) -> None:
        if not rejected:
            return
        letters = []
        for i, reason, detail in rejected:
            tap = events_pb2.Tap()
            tap.CopyFrom(taps[i])
            if reason is RejectReason.RAW_CARD_NUMBER:
                tap.card_token = "[redacted]"  # never store a card number, even as a dead letter
            letters.append(
                events_pb2.RejectedTap(
                    tap=tap,
                    reason_code=reason.value,
                    detail=detail,
                    rejected_at=_timestamp(received_at),
                )
            )
            acks[i].status = REJECTED
            acks[i].reason_code = reason.value
            acks[i].detail = detail
        try:
            await self.tap_log.append_rejected(letters)
        except Exception as exc:
            raise KafkaUnavailableError("dead letters not durable; resend the batch") from exc
        log.debug(
            "taps rejected",
            extra={"reasons": sorted({r.value for _, r, _ in rejected}), "count": len(rejected)},
        )


def local_time(tap: events_pb2.Tap) -> datetime:
    """The tap's instant in the validator's local offset (for display)."""
    return tap.tapped_at.ToDatetime(tzinfo=UTC).astimezone(
        timezone(timedelta(minutes=tap.utc_offset_minutes))
    )
