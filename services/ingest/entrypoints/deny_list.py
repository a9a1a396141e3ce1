"""The deny list's doors: validators fetch it and subscribe to its changes, proving who they
are with a signed assertion; the operations role adds and removes cards (admin port).

A validator's credential is a `SignedDeviceAssertion`: a serialized `DeviceAssertion`
(device id, purpose "deny-list", issued_at) signed with one of the device's registered
Ed25519 keys over ASSERTION_CONTEXT + the assertion bytes; it is refused when the purpose
is another, or it was issued more than 5 minutes from the server's clock either way.

Card tokens are never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import grpc
from google.protobuf.message import DecodeError

from clearway.auth import OPERATIONS, Principal, current_principal, require
from clearway.errors import ClearwayError, ErrorKind, is_infrastructure_error
from clearway.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from clearway.rpc import Slot
from services.ingest.adapters.deny_list_topic import DenyListFollower
from services.ingest.domain.deny_list import Change, Entry
from services.ingest.domain.devices import (
    ASSERTION_CONTEXT,
    Device,
    DeviceAuthError,
    active_key,
    verify_signed,
)
from services.ingest.domain.validation import classify_card_token, id_problem

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
DENY_LIST_PURPOSE = "deny-list"
ASSERTION_MAX_SKEW = timedelta(minutes=5)
# A subscription re-checks its device this often (and on every change it is sent), so a
# revoked device's subscription ends within seconds.
RECHECK_S = 5.0


class UndecodableAssertionError(ClearwayError):
    """The signed bytes are not a DeviceAssertion."""

    code = "UNDECODABLE_ASSERTION"
    kind = ErrorKind.INVALID_ARGUMENT


class InvalidDenyListRequestError(ClearwayError):
    """An admin request with a field that cannot be used (`code`: MISSING_CARD_TOKEN,
    RAW_CARD_NUMBER, BAD_CARD_TOKEN, MISSING_DENY_REASON, BAD_DENY_REASON)."""

    code = "BAD_CARD_TOKEN"
    kind = ErrorKind.INVALID_ARGUMENT


class DeviceLookup(Protocol):
    """The device registry, as the deny list's door reads it."""

    async def device(self, device_id: str) -> Device | None:
        """The device as registered now."""
        ...


def _entry_message(entry: Entry) -> ingest_pb2.DenyListEntry:
    message = ingest_pb2.DenyListEntry(
        card_token=entry.card_token,
        reason=ingest_pb2.DenyReason.ValueType(entry.reason),
        version=entry.version,
    )
    message.added_at.FromDatetime(entry.added_at)
    return message


def _change_message(change: Change) -> ingest_pb2.SubscribeDenyListResponse:
    if change.added:
        added = _entry_message(
            Entry(change.card_token, change.reason, change.version, change.changed_at)
        )
        return ingest_pb2.SubscribeDenyListResponse(version=change.version, added=added)
    return ingest_pb2.SubscribeDenyListResponse(
        version=change.version, removed_card_token=change.card_token
    )


def _check_still_allowed(device: Device | None, key_id: str) -> Device:
    """The device, while it is registered, not revoked, and the key it signed with is not
    retired; the error to end its subscription with otherwise."""
    active_key(device, key_id)
    assert device is not None  # active_key refused None
    return device


class DenyListDoor:
    """The deny list for validators: the whole list, or its changes as they happen."""

    def __init__(
        self,
        follower: DenyListFollower,
        devices: DeviceLookup,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        recheck_s: float = RECHECK_S,
    ) -> None:
        self._follower = follower
        self._devices = devices
        self._clock = clock
        self._recheck_s = recheck_s
        # The whole list as sent, built once per version: every validator gets the same.
        self._whole: ingest_pb2.GetDenyListResponse | None = None
        self._snapshot: ingest_pb2.SubscribeDenyListResponse | None = None

    async def get(self, request: ingest_pb2.GetDenyListRequest) -> ingest_pb2.GetDenyListResponse:
        """The whole list and its version, sorted by card token, for a device that proves
        itself."""
        await self._authenticate(request.credential if request.HasField("credential") else None)
        deny_list = self._follower.deny_list
        if self._whole is None or self._whole.version != deny_list.version:
            self._whole = ingest_pb2.GetDenyListResponse(
                version=deny_list.version,
                entries=[_entry_message(e) for e in deny_list.entries()],
            )
        return self._whole

    async def subscribe(
        self, request: ingest_pb2.SubscribeDenyListRequest
    ) -> AsyncIterator[ingest_pb2.SubscribeDenyListResponse]:
        """The changes after `since_version` (a snapshot first when they are not all kept),
        then every later change as it is applied, until the client or the server stops; ends
        with the device's error when it is revoked meanwhile."""
        credential = request.credential if request.HasField("credential") else None
        device = await self._authenticate(credential)
        assert credential is not None
        key_id = credential.key_id
        follower = self._follower
        deny_list = follower.deny_list
        loop = asyncio.get_running_loop()
        next_check = loop.time() + self._recheck_s
        held = request.since_version  # the version the device holds once it has what we sent
        while not follower.stopped:
            if deny_list.version != held:
                # Read the updates and their version together (no await between them).
                version = deny_list.version
                changes = deny_list.changes_since(held)
                updates = (
                    [self._snapshot_message()]
                    if changes is None
                    else [_change_message(c) for c in changes]
                )
                if updates:
                    await self._recheck(device.device_id, key_id)
                    next_check = loop.time() + self._recheck_s
                for update in updates:
                    yield update
                held = version
                continue
            await follower.wait_beyond(held, max(0.0, next_check - loop.time()))
            if loop.time() >= next_check:
                await self._recheck(device.device_id, key_id)
                next_check = loop.time() + self._recheck_s

    def _snapshot_message(self) -> ingest_pb2.SubscribeDenyListResponse:
        """The whole list at its current version, as a subscription's first update."""
        deny_list = self._follower.deny_list
        if self._snapshot is None or self._snapshot.version != deny_list.version:
            entries = [_entry_message(e) for e in deny_list.entries()]
            self._snapshot = ingest_pb2.SubscribeDenyListResponse(
                version=deny_list.version,
                snapshot=ingest_pb2.DenyListSnapshot(entries=entries),
            )
        return self._snapshot

    async def _authenticate(self, credential: ingest_pb2.SignedDeviceAssertion | None) -> Device:
        """The device that signed `credential`; raises the status to answer with."""
        if credential is None or credential == ingest_pb2.SignedDeviceAssertion():
            raise DeviceAuthError(
                "send a SignedDeviceAssertion signed by the device's registered key",
                code="MISSING_CREDENTIAL",
            )
        assertion = ingest_pb2.DeviceAssertion()
        try:
            assertion.ParseFromString(credential.assertion)
        except DecodeError:
            raise UndecodableAssertionError("the signed bytes are not a DeviceAssertion") from None
        device_id = assertion.device_id
        found = (
            await self._devices.device(device_id)
            if id_problem(device_id) is None  # no registered device has another kind of id
            else None
        )
        device = verify_signed(
            found,
            key_id=credential.key_id,
            context=ASSERTION_CONTEXT,
            payload=credential.assertion,
            signature=credential.signature,
        )
        if assertion.purpose != DENY_LIST_PURPOSE:
            raise DeviceAuthError(
                f'the assertion\'s purpose must be "{DENY_LIST_PURPOSE}"', code="WRONG_PURPOSE"
            )
        self._check_fresh(assertion)
        return device

    def _check_fresh(self, assertion: ingest_pb2.DeviceAssertion) -> None:
        if assertion.HasField("issued_at"):
            try:
                issued_at = assertion.issued_at.ToDatetime(tzinfo=UTC)
            except (ValueError, OverflowError):
                issued_at = None
            if issued_at is not None and abs(self._clock() - issued_at) <= ASSERTION_MAX_SKEW:
                return
        raise DeviceAuthError(
            "the assertion must be issued within 5 minutes of the server's clock",
            code="STALE_ASSERTION",
        )

    async def _recheck(self, device_id: str, key_id: str) -> None:
        """Raise the device's error when it may no longer subscribe; a registry that does
        not answer leaves the subscription as it is (checked again later)."""
        try:
            device = await self._devices.device(device_id)
        except Exception as exc:
            if not is_infrastructure_error(exc):
                raise
            log.warning(
                "deny-list subscription could not re-check its device",
                extra={"device_id": device_id, "error": type(exc).__name__},
            )
            return
        try:
            _check_still_allowed(device, key_id)
        except ClearwayError as exc:
            log.info(
                "deny-list subscription ended",
                extra={"device_id": device_id, "reason": exc.code},
            )
            raise


class DenyListPublishing(Protocol):
    """Where deny-list changes are published (adapters.deny_list_topic.DenyListPublisher)."""

    async def publish(
        self, card_token: str, add: bool, reason: int, changed_by: str, at: datetime
    ) -> int:
        """Write one change; the list's version that holds it."""
        ...


@dataclass(frozen=True, slots=True)
class DenyListAdminPorts:
    """What the deny list's admin calls talk to."""

    publisher: DenyListPublishing
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)


def _card_token(value: str) -> str:
    """`value` when it is a card token; the reason otherwise (never repeating the value)."""
    reason, detail = classify_card_token(value)
    if reason is not None:
        raise InvalidDenyListRequestError(detail, code=reason.value)
    return value


def _deny_reason(value: int) -> int:
    if value == ingest_pb2.DENY_REASON_UNSPECIFIED:
        raise InvalidDenyListRequestError(
            "a reason is required to add a card", code="MISSING_DENY_REASON"
        )
    if value not in ingest_pb2.DenyReason.values():
        raise InvalidDenyListRequestError(f"unknown deny reason {value}", code="BAD_DENY_REASON")
    return value


def _operations() -> Principal:
    return require(current_principal(), kind="role", id=OPERATIONS)


class DenyListAdminServicer(ingest_pb2_grpc.DenyListAdminServiceServicer):
    """Adds and removes cards, for the operations role only (the admin port, mutual TLS)."""

    def __init__(self, ports: Slot[DenyListAdminPorts]) -> None:
        self.ports = ports

    async def AddDenyListEntry(  # noqa: N802 (gRPC method name)
        self, request: ingest_pb2.AddDenyListEntryRequest, context: Context
    ) -> ingest_pb2.AddDenyListEntryResponse:
        """Put a card on the list (again: its reason and version are replaced)."""
        principal = _operations()
        token = _card_token(request.card_token)
        reason = _deny_reason(request.reason)
        ports = self.ports.get()
        version = await ports.publisher.publish(token, True, reason, principal.uri, ports.clock())
        log.info(
            "deny-list card added",
            extra={"version": version, "deny_reason": reason, "changed_by": principal.uri},
        )
        return ingest_pb2.AddDenyListEntryResponse(version=version)

    async def RemoveDenyListEntry(  # noqa: N802 (gRPC method name)
        self, request: ingest_pb2.RemoveDenyListEntryRequest, context: Context
    ) -> ingest_pb2.RemoveDenyListEntryResponse:
        """Take a card off the list; removing a card that is not on it is allowed (and
        still publishes a change: the reply's version holds the removal)."""
        principal = _operations()
        token = _card_token(request.card_token)
        ports = self.ports.get()
        version = await ports.publisher.publish(token, False, 0, principal.uri, ports.clock())
        log.info("deny-list card removed", extra={"version": version, "changed_by": principal.uri})
        return ingest_pb2.RemoveDenyListEntryResponse(version=version)
