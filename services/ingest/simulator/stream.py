"""Streams a simulated day to ingest over N concurrent validator streams and tallies the acks.

Every simulated device signs its batches with a key derived from a fleet secret
(`DeviceIdentity.derived`), and `register_devices` puts those devices and keys in ingest's
device registry (as the operations role, over the admin port)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from opentelemetry import trace

from clearway.auth import operations_role
from clearway.events.v1 import events_pb2
from clearway.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from clearway.pki import secure_channel
from clearway.telemetry import grpc_metadata_with_trace
from services.ingest.device_client import DeviceIdentity
from services.ingest.simulator.day import SimulatedDay, SimulatedDevice

FLEET_SECRET = "clearway-simulator"

tracer = trace.get_tracer("clearway.simulator")


@dataclass(slots=True)
class Tally:
    """What the validators sent and what ingest answered, tap by tap."""

    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    retried_batches: int = 0
    # When not None: every ack's status per tap (device id, sequence number), in order.
    by_tap: dict[tuple[str, int], list[int]] | None = None

    @property
    def rejected_total(self) -> int:
        """All rejections, whatever the reason."""
        return sum(self.rejected.values())

    def balanced(self) -> bool:
        """Every tap sent is accounted for: accepted + duplicate + rejected = sent."""
        return self.accepted + self.duplicates + self.rejected_total == self.sent

    def add(self, acks: list[ingest_pb2.TapAck]) -> None:
        """Count one response's acks."""
        for ack in acks:
            if self.by_tap is not None:
                self.by_tap.setdefault((ack.device_id, ack.sequence_number), []).append(ack.status)
            if ack.status == ingest_pb2.ACK_STATUS_ACCEPTED:
                self.accepted += 1
            elif ack.status == ingest_pb2.ACK_STATUS_DUPLICATE:
                self.duplicates += 1
            else:
                self.rejected[ack.reason_code or "UNSPECIFIED"] += 1


def _batches(taps: list[events_pb2.Tap], size: int) -> list[list[events_pb2.Tap]]:
    return [taps[i : i + size] for i in range(0, len(taps), size)]


async def _one_stream(
    stub: ingest_pb2_grpc.IngestServiceAsyncStub,
    batches: list[list[events_pb2.Tap]],
    tally: Tally,
    secret: str,
    attempts: int = 5,
    *,
    in_flight: int = 0,
) -> None:
    """Send `batches` in order on one stream; on a broken link (UNAVAILABLE: ingest away,
    or Kafka, Redis or the registry behind it), resend what was not acked, up to `attempts`
    times, waiting a little longer each time (at most 2 s). With `in_flight` > 0, at most
    that many batches are sent ahead of their acks (0: as many as gRPC flow control lets)."""
    done = 0
    identities: dict[str, DeviceIdentity] = {}

    def signed(batch: list[events_pb2.Tap]) -> ingest_pb2.SignedTapBatch:
        device = batch[0].device_id
        if device not in identities:
            identities[device] = DeviceIdentity.derived(device, secret)
        return identities[device].sign_batch(batch)

    for attempt in range(attempts):
        pending = batches[done:]
        if not pending:
            return

        window = asyncio.Semaphore(in_flight or len(pending))

        async def requests(
            pending: list[list[events_pb2.Tap]] = pending,
            window: asyncio.Semaphore = window,
        ) -> AsyncIterator[ingest_pb2.StreamTapsRequest]:
            for batch in pending:
                await window.acquire()
                yield ingest_pb2.StreamTapsRequest(signed=signed(batch))

        call = stub.StreamTaps(requests(), metadata=tuple(grpc_metadata_with_trace()))
        try:
            async for response in call:
                tally.add(list(response.acks))
                tally.sent += len(batches[done])
                done += 1
                window.release()
            return
        except grpc.aio.AioRpcError as exc:
            call.cancel()  # ends the request iterator, which may be waiting for the window
            if not _broken_link(exc) or attempt == attempts - 1:
                raise
            tally.retried_batches += 1
            await asyncio.sleep(min(2.0, 0.2 * (attempt + 1)))


# A validator reconnects quickly after ingest restarts (gRPC's default back-off grows to
# two minutes).
RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def _broken_link(exc: grpc.aio.AioRpcError) -> bool:
    """UNAVAILABLE (ingest, or Kafka, Redis or the registry behind it, away), or the gRPC
    client's own failure to send on a stream whose connection the server just dropped
    (INTERNAL "Internal error from Core", with no reason code: not an answer of ingest).
    Resending is always safe: taps are deduplicated by (device, sequence number)."""
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        return True
    return exc.code() == grpc.StatusCode.INTERNAL and exc.details() == "Internal error from Core"


def ingest_channel(target: str, pki_dir: Path | None) -> grpc.aio.Channel:
    """A channel to ingest's validator port: TLS (the scheme CA's server certificate, no
    client certificate: devices prove themselves by signing) when `pki_dir` is given."""
    if pki_dir is None:
        return grpc.aio.insecure_channel(target, options=RECONNECT_OPTIONS)
    return secure_channel(target, pki_dir, None, options=RECONNECT_OPTIONS)


async def send_day(
    target: str,
    day: SimulatedDay,
    validators: int = 8,
    batch_size: int = 50,
    *,
    pki_dir: Path | None = None,
    secret: str = FLEET_SECRET,
    attempts: int = 5,
    tally: Tally | None = None,
    in_flight: int = 0,
) -> Tally:
    """Stream every device's taps, devices spread over `validators` concurrent streams,
    each batch signed by its device; each stream resends what was not acked up to
    `attempts` times (a fault run gives it thousands), with at most `in_flight` batches
    ahead of their acks when > 0 (1: each batch written before the next is sent, so the
    taps reach the topic in the order sent). Counts into `tally` when given."""
    tally = Tally() if tally is None else tally
    lanes: list[list[list[events_pb2.Tap]]] = [[] for _ in range(max(1, validators))]
    for i, device in enumerate(sorted(day.by_device)):
        lanes[i % len(lanes)].extend(_batches(day.by_device[device], batch_size))
    with tracer.start_as_current_span("simulator.send_day") as span:
        span.set_attribute("clearway.taps", day.total())
        async with ingest_channel(target, pki_dir) as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            await asyncio.gather(
                *(
                    _one_stream(stub, lane, tally, secret, attempts, in_flight=in_flight)
                    for lane in lanes
                    if lane
                )
            )
    return tally


async def register_devices(
    admin_target: str,
    pki_dir: Path,
    devices: list[SimulatedDevice],
    secret: str = FLEET_SECRET,
) -> int:
    """Register every simulated device with its derived key (as the operations role, on
    ingest's admin port); repeating it changes nothing. Returns how many were new."""
    created = 0
    async with secure_channel(admin_target, pki_dir, operations_role()) as channel:
        stub = ingest_pb2_grpc.DeviceRegistryServiceStub(channel)
        for device in devices:
            identity = DeviceIdentity.derived(device.device_id, secret)
            reply = await stub.RegisterDevice(
                ingest_pb2.RegisterDeviceRequest(
                    device_id=device.device_id,
                    operator_id=device.operator_id,
                    allowed_stop_ids=device.stop_ids,
                    allowed_route_ids=device.route_ids,
                    public_key=identity.public_key,
                )
            )
            created += int(reply.created)
    return created
