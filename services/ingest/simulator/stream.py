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
) -> None:
    """Send `batches` in order on one stream; on a broken link, resend what was not acked."""
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

        async def requests(
            pending: list[list[events_pb2.Tap]] = pending,
        ) -> AsyncIterator[ingest_pb2.StreamTapsRequest]:
            for batch in pending:
                yield ingest_pb2.StreamTapsRequest(signed=signed(batch))

        call = stub.StreamTaps(requests(), metadata=tuple(grpc_metadata_with_trace()))
        try:
            async for response in call:
                tally.add(list(response.acks))
                tally.sent += len(batches[done])
                done += 1
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == attempts - 1:
                raise
            tally.retried_batches += 1
            await asyncio.sleep(0.2 * (attempt + 1))


def ingest_channel(target: str, pki_dir: Path | None) -> grpc.aio.Channel:
    """A channel to ingest's validator port: TLS (the scheme CA's server certificate, no
    client certificate: devices prove themselves by signing) when `pki_dir` is given."""
    if pki_dir is None:
        return grpc.aio.insecure_channel(target)
    return secure_channel(target, pki_dir, None)


async def send_day(
    target: str,
    day: SimulatedDay,
    validators: int = 8,
    batch_size: int = 50,
    *,
    pki_dir: Path | None = None,
    secret: str = FLEET_SECRET,
) -> Tally:
    """Stream every device's taps, devices spread over `validators` concurrent streams,
    each batch signed by its device."""
    tally = Tally()
    lanes: list[list[list[events_pb2.Tap]]] = [[] for _ in range(max(1, validators))]
    for i, device in enumerate(sorted(day.by_device)):
        lanes[i % len(lanes)].extend(_batches(day.by_device[device], batch_size))
    with tracer.start_as_current_span("simulator.send_day") as span:
        span.set_attribute("clearway.taps", day.total())
        async with ingest_channel(target, pki_dir) as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            await asyncio.gather(
                *(_one_stream(stub, lane, tally, secret) for lane in lanes if lane)
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
