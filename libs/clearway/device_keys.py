"""Ed25519 device keys, shared by every door where a device proves itself by signing:
ingest's validators (signed tap batches) and accounts' provider devices (signed
redemptions). Pure apart from the cryptography.

A key is known by its id, the first 16 hex digits of the SHA-256 of its raw 32-byte public
key. What is signed is always a context string (naming the purpose and ending in a NUL)
followed by the exact bytes sent, so a signature made for one purpose can never be
replayed as another.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from clearway.errors import ClearwayError, ErrorKind

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
KEY_ID_HEX = 16


class DeviceAuthError(ClearwayError):
    """A request whose device cannot be proven (`code`: UNKNOWN_DEVICE, UNKNOWN_KEY,
    KEY_RETIRED, BAD_SIGNATURE, STALE_ASSERTION, ...)."""

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


def raw_public_key(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    """The raw 32 bytes of a public key (of a private key's public half)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_from_file(data: bytes) -> bytes:
    """The raw public key in a key file's bytes: 32 raw bytes, or a PEM public key
    (SubjectPublicKeyInfo); ValueError for anything else (a private key included)."""
    if len(data) == PUBLIC_KEY_BYTES:
        check_public_key(data)
        return data
    try:
        loaded = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not a raw 32-byte or PEM Ed25519 public key") from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise ValueError("the PEM public key is not an Ed25519 key")
    return raw_public_key(loaded)


def verify_signature(public_key: bytes, context: bytes, payload: bytes, signature: bytes) -> None:
    """Nothing when `signature` is `public_key`'s Ed25519 signature of `context + payload`;
    DeviceAuthError BAD_SIGNATURE otherwise."""
    if len(signature) != SIGNATURE_BYTES:
        raise DeviceAuthError(f"a signature is {SIGNATURE_BYTES} bytes", code="BAD_SIGNATURE")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, context + payload)
    except InvalidSignature:
        raise DeviceAuthError(
            "the signature does not verify with the device's key", code="BAD_SIGNATURE"
        ) from None
