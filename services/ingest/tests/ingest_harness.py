"""An ingest service under test: the real gRPC server on real Kafka, Redis and PostgreSQL,
with registered devices, and clients that sign like validators do."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from clearway.auth import Principal, operations_role
from clearway.events.v1 import events_pb2
from clearway.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from clearway.pki import secure_channel
from clearway.rpc import reason_of
from clearway.runtime import RunningService
from clearway.settings import ServiceSettings
from services.ingest.app import IngestApp, build
from services.ingest.device_client import DeviceIdentity

OPERATOR = "LUL"
STOPS = ("940GZZLUKSX", "940GZZLUOXC", "940GZZLUBST")
ROUTES = ("R-BUS-73",)
CARD = "tok_4f9a1c2b3d5e6f70"


def tap(
    device: str,
    seq: int,
    *,
    card: str = CARD,
    stop: str = STOPS[0],
    at: datetime | None = None,
    **fields: Any,
) -> events_pb2.Tap:
    """A well-formed tap of `device` (then `fields` applied as they are)."""
    t = events_pb2.Tap(
        device_id=device,
        sequence_number=seq,
        card_token=card,
        stop_id=stop,
        kind=events_pb2.TAP_KIND_ENTRY,
        operator_id=OPERATOR,
    )
    t.tapped_at.FromDatetime(at or datetime.now(UTC) - timedelta(seconds=30))
    for name, value in fields.items():
        setattr(t, name, value)
    return t


@dataclass
class Ingest:
    """A running ingest service and what a test needs to talk to it."""

    running: RunningService
    app: IngestApp
    settings: ServiceSettings
    pki: Path
    devices: dict[str, DeviceIdentity] = field(default_factory=dict)

    @property
    def target(self) -> str:
        """The validators' port."""
        return f"127.0.0.1:{self.running.port}"

    @property
    def admin_target(self) -> str:
        """The admin port (mutual TLS)."""
        return f"127.0.0.1:{self.running.admin_port}"

    def channel(self) -> grpc.aio.Channel:
        """A validator's channel: TLS with the scheme CA, no client certificate."""
        return secure_channel(self.target, self.pki, None)

    def admin_channel(self, who: Principal | None = None) -> grpc.aio.Channel:
        """A channel to the admin port as `who` (default the operations role)."""
        return secure_channel(self.admin_target, self.pki, who or operations_role())

    async def register(
        self,
        device_id: str,
        *,
        operator: str = OPERATOR,
        stops: Sequence[str] = STOPS,
        routes: Sequence[str] = (),
    ) -> DeviceIdentity:
        """Register a device with a fresh key; its identity signs its batches."""
        identity = DeviceIdentity.generate(device_id)
        async with self.admin_channel() as channel:
            stub = ingest_pb2_grpc.DeviceRegistryServiceStub(channel)
            await stub.RegisterDevice(
                ingest_pb2.RegisterDeviceRequest(
                    device_id=device_id,
                    operator_id=operator,
                    allowed_stop_ids=list(stops),
                    allowed_route_ids=list(routes),
                    public_key=identity.public_key,
                )
            )
        self.devices[device_id] = identity
        return identity

    async def registry(self, method: str, request: Any) -> Any:
        """Call a DeviceRegistryService method as the operations role."""
        async with self.admin_channel() as channel:
            stub = ingest_pb2_grpc.DeviceRegistryServiceStub(channel)
            return await getattr(stub, method)(request)

    async def stream(
        self,
        batches: Iterable[ingest_pb2.SignedTapBatch | ingest_pb2.StreamTapsRequest],
        channel: grpc.aio.Channel | None = None,
    ) -> list[list[ingest_pb2.TapAck]]:
        """Send the batches on one stream; the acks of each response."""

        async def requests() -> AsyncIterator[ingest_pb2.StreamTapsRequest]:
            for b in batches:
                yield (
                    b
                    if isinstance(b, ingest_pb2.StreamTapsRequest)
                    else ingest_pb2.StreamTapsRequest(signed=b)
                )

        if channel is None:
            async with self.channel() as own:
                return await self.stream(batches, own)
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        return [list(r.acks) async for r in stub.StreamTaps(requests())]

    async def send(self, device: str, taps: list[events_pb2.Tap]) -> list[ingest_pb2.TapAck]:
        """One signed batch of `device` on its own stream; its acks."""
        (acks,) = await self.stream([self.devices[device].sign_batch(taps)])
        return acks

    async def upload(
        self, batches: Iterable[ingest_pb2.SignedTapBatch]
    ) -> ingest_pb2.UploadBacklogResponse:
        """A backlog upload of the signed batches."""

        async def requests() -> AsyncIterator[ingest_pb2.UploadBacklogRequest]:
            for b in batches:
                yield ingest_pb2.UploadBacklogRequest(signed=b)

        async with self.channel() as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            reply: ingest_pb2.UploadBacklogResponse = await stub.UploadBacklog(requests())
            return reply

    async def stop(self) -> None:
        """Stop the service."""
        await self.running.stop()


async def start_ingest(settings: ServiceSettings, pki: Path, **overrides: Any) -> Ingest:
    """Build and start ingest for `settings` (TLS from the session PKI)."""
    app = build(settings)
    if overrides:
        app = dataclasses.replace(app, **overrides)
    running = RunningService(app)
    await running.start()
    return Ingest(running, app, settings, pki)


def status_of(exc: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str | None]:
    """The status and the reason code of a failed call."""
    return exc.code(), reason_of(exc.trailing_metadata())


async def read_topic(
    bootstrap: str, topic: str, *, settle_s: float = 1.5, limit_s: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every committed record on `topic` (read_committed, as fares reads it), reading until
    nothing new arrives for `settle_s`."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    quiet_since = loop.time()
    try:
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=250, max_records=10_000)
            got = [r for recs in batch.values() for r in recs]
            if got:
                records.extend(got)
                quiet_since = loop.time()
            elif loop.time() - quiet_since > settle_s:
                break
    finally:
        await consumer.stop()
    return records


def taps_on(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[events_pb2.Tap]:
    """The taps in records of the taps topic."""
    out = []
    for record in records:
        t = events_pb2.Tap()
        t.ParseFromString(record.value or b"")
        out.append(t)
    return out
