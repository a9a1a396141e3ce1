"""The device registry's use cases, for the scheme's operations role only: register a
device with its first key, change its scope, rotate its keys, revoke it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from clearway.auth import OPERATIONS, current_principal, require
from clearway.errors import ClearwayError, ErrorKind
from clearway.ingest.v1 import ingest_pb2
from services.ingest.domain.devices import (
    Device,
    DeviceKey,
    DeviceStatus,
    KeyStatus,
    check_public_key,
    key_id_of,
)
from services.ingest.domain.validation import id_problem

MAX_SCOPE = 10_000
MAX_PAGE = 1_000


class InvalidDeviceRequestError(ClearwayError):
    """A registry request with a field that cannot be used."""

    code = "INVALID_DEVICE_REQUEST"
    kind = ErrorKind.INVALID_ARGUMENT


class DeviceNotFoundError(ClearwayError):
    """No device with that id."""

    code = "DEVICE_NOT_FOUND"
    kind = ErrorKind.NOT_FOUND


class DeviceConflictError(ClearwayError):
    """The device exists with something else than what was asked."""

    code = "DEVICE_EXISTS"
    kind = ErrorKind.ALREADY_EXISTS


class Registry(Protocol):
    """Where devices are kept (adapters.device_registry.DeviceRegistry)."""

    async def load(self, device_id: str) -> Device | None:
        """The device from the store."""
        ...

    async def list(self, operator_id: str, after: str, limit: int) -> list[Device]:
        """Devices by id."""
        ...

    async def register(self, device: Device, key: DeviceKey) -> tuple[Device, bool]:
        """Insert a device with its first key."""
        ...

    async def add_key(self, device_id: str, key: DeviceKey) -> Device | None:
        """Add a key."""
        ...

    async def retire_key(self, device_id: str, key_id: str, at: datetime) -> Device | None:
        """Retire a key."""
        ...

    async def revoke(self, device_id: str, reason: str, at: datetime) -> Device | None:
        """Revoke the device."""
        ...

    async def set_scope(
        self, device_id: str, stop_ids: Sequence[str], route_ids: Sequence[str]
    ) -> Device | None:
        """Replace the device's stops and routes."""
        ...


@dataclass(frozen=True, slots=True)
class RegistryPorts:
    """What the registry's use cases talk to."""

    registry: Registry
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)


def _operations() -> None:
    require(current_principal(), kind="role", id=OPERATIONS)


def _id(name: str, value: str) -> str:
    problem = id_problem(value)
    if problem:
        raise InvalidDeviceRequestError(f"{name}: {problem}")
    return value


def _ids(name: str, values: Sequence[str]) -> list[str]:
    if len(values) > MAX_SCOPE:
        raise InvalidDeviceRequestError(f"{name}: at most {MAX_SCOPE}")
    return [_id(name, v) for v in values]


def _key(public_key: bytes, at: datetime) -> DeviceKey:
    try:
        check_public_key(public_key)
    except ValueError as exc:
        raise InvalidDeviceRequestError(f"public_key: {exc}") from None
    return DeviceKey(key_id_of(public_key), bytes(public_key), KeyStatus.ACTIVE, at)


def _ts(at: datetime | None) -> Timestamp | None:
    if at is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def device_message(device: Device) -> ingest_pb2.Device:
    """The registry record as the API shows it."""
    return ingest_pb2.Device(
        device_id=device.device_id,
        operator_id=device.operator_id,
        allowed_stop_ids=sorted(device.allowed_stop_ids),
        allowed_route_ids=sorted(device.allowed_route_ids),
        status=(
            ingest_pb2.DEVICE_STATUS_ACTIVE
            if device.status is DeviceStatus.ACTIVE
            else ingest_pb2.DEVICE_STATUS_REVOKED
        ),
        keys=[
            ingest_pb2.DeviceKey(
                key_id=k.key_id,
                public_key=k.public_key,
                status=(
                    ingest_pb2.KEY_STATUS_ACTIVE
                    if k.status is KeyStatus.ACTIVE
                    else ingest_pb2.KEY_STATUS_RETIRED
                ),
                added_at=_ts(k.added_at),
                retired_at=_ts(k.retired_at),
            )
            for k in device.keys
        ],
        registered_at=_ts(device.registered_at),
        revoked_at=_ts(device.revoked_at),
        revoked_reason=device.revoked_reason,
    )


def _found(device: Device | None) -> Device:
    if device is None:
        raise DeviceNotFoundError("no device with that device_id")
    return device


async def register_device(
    ports: RegistryPorts, request: ingest_pb2.RegisterDeviceRequest
) -> ingest_pb2.RegisterDeviceResponse:
    """Register a device with its first key. Repeating the same registration changes
    nothing; the same id with another key or operator is ALREADY_EXISTS."""
    _operations()
    at = ports.clock()
    device = Device(
        device_id=_id("device_id", request.device_id),
        operator_id=_id("operator_id", request.operator_id),
        allowed_stop_ids=frozenset(_ids("allowed_stop_ids", request.allowed_stop_ids)),
        allowed_route_ids=frozenset(_ids("allowed_route_ids", request.allowed_route_ids)),
        status=DeviceStatus.ACTIVE,
        registered_at=at,
    )
    if not device.allowed_stop_ids:
        raise InvalidDeviceRequestError("allowed_stop_ids: a device taps at one stop at least")
    key = _key(request.public_key, at)
    stored, created = await ports.registry.register(device, key)
    if not created and (stored.operator_id != device.operator_id or stored.key(key.key_id) is None):
        raise DeviceConflictError("a device with that id is registered with another key")
    return ingest_pb2.RegisterDeviceResponse(device=device_message(stored), created=created)


async def get_device(
    ports: RegistryPorts, request: ingest_pb2.GetDeviceRequest
) -> ingest_pb2.GetDeviceResponse:
    """One device."""
    _operations()
    device = _found(await ports.registry.load(_id("device_id", request.device_id)))
    return ingest_pb2.GetDeviceResponse(device=device_message(device))


async def list_devices(
    ports: RegistryPorts, request: ingest_pb2.ListDevicesRequest
) -> ingest_pb2.ListDevicesResponse:
    """Devices ordered by id, a page at a time."""
    _operations()
    size = request.page_size or 100
    if size > MAX_PAGE:
        raise InvalidDeviceRequestError(f"page_size: at most {MAX_PAGE}")
    if request.operator_id:
        _id("operator_id", request.operator_id)
    if request.page_token:  # the last device_id of the previous page
        _id("page_token", request.page_token)
    devices = await ports.registry.list(request.operator_id, request.page_token, size + 1)
    page = devices[:size]
    more = len(devices) > size
    return ingest_pb2.ListDevicesResponse(
        devices=[device_message(d) for d in page],
        next_page_token=page[-1].device_id if more and page else "",
    )


async def update_scope(
    ports: RegistryPorts, request: ingest_pb2.UpdateDeviceScopeRequest
) -> ingest_pb2.UpdateDeviceScopeResponse:
    """Replace the stops and routes the device may tap at (from its next batch)."""
    _operations()
    stops = _ids("allowed_stop_ids", request.allowed_stop_ids)
    if not stops:
        raise InvalidDeviceRequestError("allowed_stop_ids: a device taps at one stop at least")
    routes = _ids("allowed_route_ids", request.allowed_route_ids)
    device = await ports.registry.set_scope(_id("device_id", request.device_id), stops, routes)
    return ingest_pb2.UpdateDeviceScopeResponse(device=device_message(_found(device)))


async def add_key(
    ports: RegistryPorts, request: ingest_pb2.AddDeviceKeyRequest
) -> ingest_pb2.AddDeviceKeyResponse:
    """Add the device's next key (rotation: both sign until the old one is retired)."""
    _operations()
    key = _key(request.public_key, ports.clock())
    device = await ports.registry.add_key(_id("device_id", request.device_id), key)
    return ingest_pb2.AddDeviceKeyResponse(device=device_message(_found(device)), key_id=key.key_id)


async def retire_key(
    ports: RegistryPorts, request: ingest_pb2.RetireDeviceKeyRequest
) -> ingest_pb2.RetireDeviceKeyResponse:
    """Retire a key: batches it signs are refused from now on (KEY_RETIRED)."""
    _operations()
    device_id = _id("device_id", request.device_id)
    device = _found(await ports.registry.load(device_id))
    if device.key(request.key_id) is None:
        raise DeviceNotFoundError("the device has no key with that key_id")
    retired = await ports.registry.retire_key(device_id, request.key_id, ports.clock())
    return ingest_pb2.RetireDeviceKeyResponse(device=device_message(_found(retired)))


async def revoke_device(
    ports: RegistryPorts, request: ingest_pb2.RevokeDeviceRequest
) -> ingest_pb2.RevokeDeviceResponse:
    """Revoke the device: its next batch, on any ingest process, is refused."""
    _operations()
    reason = request.reason.strip()[:500] or "revoked by operations"
    if "\x00" in reason:  # PostgreSQL text cannot hold it
        raise InvalidDeviceRequestError("reason: no NUL characters")
    device = await ports.registry.revoke(_id("device_id", request.device_id), reason, ports.clock())
    return ingest_pb2.RevokeDeviceResponse(device=device_message(_found(device)))
