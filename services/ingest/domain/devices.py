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

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from clearway.errors import ClearwayError, ErrorKind

BATCH_CONTEXT = b"clearway.ingest.v1.TapBatch\x00"
ASSERTION_CONTEXT = b"clearway.ingest.v1.DeviceAssertion\x00"
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
KEY_ID_HEX = 16


class DeviceStatus(StrEnum):
    """A registered device is active until revoked; revocation is final."""

    ACTIVE = "active"
    REVOKED = "revoked"


class KeyStatus(StrEnum):
    """A key signs while active; a retired key never signs again."""

    ACTIVE = "active"
    RETIRED = "retired"


class DeviceAuthError(ClearwayError):
    """A batch or request whose device cannot be proven (`code`: UNKNOWN_DEVICE,
    UNKNOWN_KEY, KEY_RETIRED, BAD_SIGNATURE, STALE_ASSERTION, ...)."""

    code = "BAD_SIGNATURE"
    kind = ErrorKind.UNAUTHENTICATED


class DeviceRevokedError(ClearwayError):
    """The device is known, and revoked: refused at once and for good."""

    code = "DEVICE_REVOKED"
    kind = ErrorKind.PERMISSION_DENIED


def key_id_of(public_key: bytes) -> str:
    """The id of a raw 32-byte Ed25519 public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:KEY_ID_HEX]


def check_public_key(public_key: bytes) -> None:
    """ValueError unless `public_key` is a raw 32-byte Ed25519 public key."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} raw bytes")
    Ed25519PublicKey.from_public_bytes(public_key)


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
    if len(signature) != SIGNATURE_BYTES:
        raise DeviceAuthError(f"a signature is {SIGNATURE_BYTES} bytes", code="BAD_SIGNATURE")
    try:
        Ed25519PublicKey.from_public_bytes(key.public_key).verify(signature, context + payload)
    except InvalidSignature:
        raise DeviceAuthError(
            "the signature does not verify with the device's key", code="BAD_SIGNATURE"
        ) from None
    return device
