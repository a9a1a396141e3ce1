"""Validators and what proves a batch came from one: the device registry's records and the
per-device Ed25519 keys that sign every batch.

Why a signature and not per-device client certificates: a validator's key lives in its
secure element, signing is one operation per batch, and a batch with a bad or unknown key is
answered with a precise status and reason code (UNAUTHENTICATED / `BAD_SIGNATURE`), which a
failed TLS handshake cannot give (grpcio's server cannot ask for a client certificate
without refusing the connection of a device whose certificate is wrong). The registry
holds only public keys, so nothing stored by the scheme lets anyone sign as a device.

What is signed is the exact bytes the device sends (a serialized `TapBatch`), prefixed by a
context string so that a signature made for one purpose can never be replayed as another:

    signature = Ed25519(device key, b"clearway.ingest.v1.TapBatch" + b"\\x00" + batch)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

# The key ids, key checks and signature verification are shared with accounts' provider
# devices (clearway.device_keys); re-exported here for ingest's modules.
from clearway.device_keys import (
    KEY_ID_HEX,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    DeviceAuthError,
    DeviceRevokedError,
    check_public_key,
    key_id_of,
    verify_signature,
)

__all__ = [
    "ASSERTION_CONTEXT",
    "BATCH_CONTEXT",
    "KEY_ID_HEX",
    "PUBLIC_KEY_BYTES",
    "SIGNATURE_BYTES",
    "Device",
    "DeviceAuthError",
    "DeviceKey",
    "DeviceRevokedError",
    "DeviceStatus",
    "KeyStatus",
    "active_key",
    "check_public_key",
    "key_id_of",
    "verify_signed",
]

BATCH_CONTEXT = b"clearway.ingest.v1.TapBatch\x00"
ASSERTION_CONTEXT = b"clearway.ingest.v1.DeviceAssertion\x00"


class DeviceStatus(StrEnum):
    """A registered device is active until revoked; revocation is final."""

    ACTIVE = "active"
    REVOKED = "revoked"


class KeyStatus(StrEnum):
    """A key signs while active; a retired key never signs again."""

    ACTIVE = "active"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class DeviceKey:
    """One of a device's signing keys."""

    key_id: str
    public_key: bytes
    status: KeyStatus
    added_at: datetime
    retired_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Device:
    """A validator as the registry knows it."""

    device_id: str
    operator_id: str
    allowed_stop_ids: frozenset[str]
    allowed_route_ids: frozenset[str]
    status: DeviceStatus
    registered_at: datetime
    keys: tuple[DeviceKey, ...] = field(default=())
    revoked_at: datetime | None = None
    revoked_reason: str = ""

    def key(self, key_id: str) -> DeviceKey | None:
        """The device's key `key_id`, if it has one."""
        return next((k for k in self.keys if k.key_id == key_id), None)


def active_key(device: Device | None, key_id: str) -> DeviceKey:
    """The device's key `key_id`, while the device is registered and not revoked and the key
    is not retired; DeviceAuthError (DeviceRevokedError) with the reason code otherwise."""
    if device is None:
        raise DeviceAuthError("the device is not registered", code="UNKNOWN_DEVICE")
    if device.status is DeviceStatus.REVOKED:
        raise DeviceRevokedError("the device is revoked")
    key = device.key(key_id)
    if key is None:
        raise DeviceAuthError("the device has no key with this key_id", code="UNKNOWN_KEY")
    if key.status is KeyStatus.RETIRED:
        raise DeviceAuthError("this key of the device is retired", code="KEY_RETIRED")
    return key


def verify_signed(
    device: Device | None,
    *,
    key_id: str,
    context: bytes,
    payload: bytes,
    signature: bytes,
) -> Device:
    """The device, when `sig` is its active key's signature of `context + payload`;
    DeviceAuthError with the reason code otherwise."""
    key = active_key(device, key_id)
    assert device is not None  # active_key refused None
    verify_signature(key.public_key, context, signature=signature, payload=payload)
    return device
