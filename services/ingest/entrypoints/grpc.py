"""The validators' door (signed batches in, one ack per tap out; the deny list) and the
operations role's door (the device registry), both thin: decode, call the use case, encode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from clearway.errors import ClearwayError
from clearway.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from clearway.rpc import Slot
from services.ingest.adapters.metrics import count_answered, count_refused
from services.ingest.service_layer import registry as registry_use_cases
from services.ingest.service_layer.accepting import (
    AcceptPorts,
    accept_taps,
    authenticate_batch,
)
from services.ingest.service_layer.registry import RegistryPorts

log = logging.getLogger(__name__)

# Batches of one stream being accepted at once: the next request is read only when an
# earlier one is answered, so a fast stream cannot crowd out the others.
STREAM_IN_FLIGHT = 4
Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True, slots=True)
class IngestPorts:
    """What the servicers talk to; exists once the service has started."""

    accept: AcceptPorts
    registry: RegistryPorts
    deny_list: Any  # services.ingest.entrypoints.deny_list.DenyListDoor


async def _accept(
    ports: AcceptPorts,
    signed: ingest_pb2.SignedTapBatch,
    *,
    after: asyncio.Event | None = None,
    turn_done: asyncio.Event | None = None,
) -> list[ingest_pb2.TapAck]:
    """Authenticate the batch and accept its taps. On a stream, the batch is handed to the
    writer only once the batch sent before it was (`after`), and `turn_done` says when this
    one has been, or never will be: it is set whatever happens (refused, failed, cancelled),
    so the batch sent next is never held back for good."""
    try:
        try:
            device, batch = await authenticate_batch(ports, signed)
        except ClearwayError as exc:
            count_refused(exc.code)
            raise
        acks = await accept_taps(ports, device, list(batch.taps), after=after, turn_done=turn_done)
    finally:
        if turn_done is not None:
            turn_done.set()
    count_answered(acks)
    return acks


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    """Signed batches in, acks out; the deny list for devices."""

    def __init__(self, ports: Slot[IngestPorts]) -> None:
        self.ports = ports

    async def StreamTaps(  # noqa: N802 (gRPC method name)
        self,
        request_iterator: AsyncIterator[ingest_pb2.StreamTapsRequest],
        context: Context,
    ) -> AsyncIterator[ingest_pb2.StreamTapsResponse]:
        """One response per request, in order; up to STREAM_IN_FLIGHT batches in flight.
        They are authenticated at once, but each is handed to the writer only after the one
        sent before it (chained events, see `_accept`), so a stream's taps reach Kafka in
        the order the device sent them; a batch refused or failed lets the next one go."""
        ports = self.ports.get().accept
        in_flight: asyncio.Queue[asyncio.Task[list[ingest_pb2.TapAck]] | None] = asyncio.Queue(
            STREAM_IN_FLIGHT
        )
        reader_error: list[BaseException] = []
        # A batch holds a slot from when it is taken on until it is answered: at most
        # STREAM_IN_FLIGHT of a stream are being worked on (the queue alone let two more in:
        # the one being answered, and the one the reader had started before the queue
        # refused it).
        slots = asyncio.Semaphore(STREAM_IN_FLIGHT)

        async def read() -> None:
            previous: asyncio.Event | None = None
            try:
                async for request in request_iterator:
                    await slots.acquire()
                    turn_done = asyncio.Event()
                    task = asyncio.create_task(
                        _accept(ports, request.signed, after=previous, turn_done=turn_done)
                    )
                    previous = turn_done
                    await in_flight.put(task)
            except Exception as exc:  # an undecodable request: answered after what came before
                reader_error.append(exc)
            finally:
                await in_flight.put(None)

        reader = asyncio.create_task(read())
        try:
            while (task := await in_flight.get()) is not None:
                try:
                    acks = await task
                finally:
                    slots.release()
                yield ingest_pb2.StreamTapsResponse(acks=acks)
            if reader_error:
                raise reader_error[0]
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            # Batches still in flight finish on their own (their writes are shielded).
            while not in_flight.empty():
                left = in_flight.get_nowait()
                if left is not None:
                    left.add_done_callback(_quiet)

    async def UploadBacklog(  # noqa: N802 (gRPC method name)
        self,
        request_iterator: AsyncIterator[ingest_pb2.UploadBacklogRequest],
        context: Context,
    ) -> ingest_pb2.UploadBacklogResponse:
        """Every signed batch of the upload, in order; one reply accounting for every tap."""
        ports = self.ports.get().accept
        reply = ingest_pb2.UploadBacklogResponse()
        async for request in request_iterator:
            acks = await _accept(ports, request.signed)
            reply.acks.extend(acks)
        for ack in reply.acks:
            if ack.status == ingest_pb2.ACK_STATUS_ACCEPTED:
                reply.accepted += 1
                reply.late += int(ack.late)
            elif ack.status == ingest_pb2.ACK_STATUS_DUPLICATE:
                reply.duplicates += 1
            else:
                reply.rejected += 1
        return reply

    async def GetDenyList(  # noqa: N802 (gRPC method name)
        self, request: ingest_pb2.GetDenyListRequest, context: Context
    ) -> ingest_pb2.GetDenyListResponse:
        """The whole list, for a device that proves itself."""
        ports = self.ports.get()
        result: ingest_pb2.GetDenyListResponse = await ports.deny_list.get(request)
        return result

    async def SubscribeDenyList(  # noqa: N802 (gRPC method name)
        self, request: ingest_pb2.SubscribeDenyListRequest, context: Context
    ) -> AsyncIterator[ingest_pb2.SubscribeDenyListResponse]:
        """Changes after the device's version, as they happen."""
        ports = self.ports.get()
        async for update in ports.deny_list.subscribe(request):
            yield update


def _quiet(task: asyncio.Task[list[ingest_pb2.TapAck]]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: the stream is gone, the client resends


class DeviceRegistryServicer(ingest_pb2_grpc.DeviceRegistryServiceServicer):
    """The registry, for the operations role (the admin port, mutual TLS)."""

    def __init__(self, ports: Slot[IngestPorts]) -> None:
        self.ports = ports

    def _ports(self) -> RegistryPorts:
        return self.ports.get().registry

    async def RegisterDevice(  # noqa: N802
        self, request: ingest_pb2.RegisterDeviceRequest, context: Context
    ) -> ingest_pb2.RegisterDeviceResponse:
        """Register a device with its first key."""
        return await registry_use_cases.register_device(self._ports(), request)

    async def GetDevice(  # noqa: N802
        self, request: ingest_pb2.GetDeviceRequest, context: Context
    ) -> ingest_pb2.GetDeviceResponse:
        """One device."""
        return await registry_use_cases.get_device(self._ports(), request)

    async def ListDevices(  # noqa: N802
        self, request: ingest_pb2.ListDevicesRequest, context: Context
    ) -> ingest_pb2.ListDevicesResponse:
        """Devices, paged."""
        return await registry_use_cases.list_devices(self._ports(), request)

    async def UpdateDeviceScope(  # noqa: N802
        self, request: ingest_pb2.UpdateDeviceScopeRequest, context: Context
    ) -> ingest_pb2.UpdateDeviceScopeResponse:
        """New stops and routes."""
        return await registry_use_cases.update_scope(self._ports(), request)

    async def AddDeviceKey(  # noqa: N802
        self, request: ingest_pb2.AddDeviceKeyRequest, context: Context
    ) -> ingest_pb2.AddDeviceKeyResponse:
        """Key rotation: the next key."""
        return await registry_use_cases.add_key(self._ports(), request)

    async def RetireDeviceKey(  # noqa: N802
        self, request: ingest_pb2.RetireDeviceKeyRequest, context: Context
    ) -> ingest_pb2.RetireDeviceKeyResponse:
        """Key rotation: the old key never signs again."""
        return await registry_use_cases.retire_key(self._ports(), request)

    async def RevokeDevice(  # noqa: N802
        self, request: ingest_pb2.RevokeDeviceRequest, context: Context
    ) -> ingest_pb2.RevokeDeviceResponse:
        """Refuse the device from its next batch on."""
        return await registry_use_cases.revoke_device(self._ports(), request)
