"""What a validator does to talk to ingest: hold an Ed25519 key, sign each batch of taps
(and the assertion that asks for the deny list). Used by the simulator, the tests, the
benchmarks and `clearway devices`; a validator in the field does the same in its secure
element (docs/ingest.md gives the bytes)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clearway.events.v1 import events_pb2
from clearway.ingest.v1 import ingest_pb2
from services.ingest.domain.devices import ASSERTION_CONTEXT, BATCH_CONTEXT, key_id_of

DENY_LIST_PURPOSE = "deny-list"


@dataclass(frozen=True)
class DeviceIdentity:
    """A device id and its private signing key."""

    device_id: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, device_id: str) -> DeviceIdentity:
        """A new random key."""
        return cls(device_id, Ed25519PrivateKey.generate())

    @classmethod
    def derived(cls, device_id: str, secret: str) -> DeviceIdentity:
        """A key derived from `secret` and the device id (simulated fleets, tests): the same
        inputs give the same key, so a simulated device keeps its identity across runs."""
        seed = hashlib.sha256(f"clearway-device-key:{secret}:{device_id}".encode()).digest()
        return cls(device_id, Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key (what the registry holds)."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def key_id(self) -> str:
        """The key's id: the first 16 hex digits of the SHA-256 of the public key."""
        return key_id_of(self.public_key)

    def sign_batch(self, taps: Iterable[events_pb2.Tap]) -> ingest_pb2.SignedTapBatch:
        """The taps as one signed batch."""
        batch = ingest_pb2.TapBatch(taps=list(taps)).SerializeToString()
        return ingest_pb2.SignedTapBatch(
            device_id=self.device_id,
            key_id=self.key_id,
            batch=batch,
            signature=self.private_key.sign(BATCH_CONTEXT + batch),
        )

    def assertion(
        self, purpose: str = DENY_LIST_PURPOSE, at: datetime | None = None
    ) -> ingest_pb2.SignedDeviceAssertion:
        """A signed statement of who is asking, for what, and when."""
        assertion = ingest_pb2.DeviceAssertion(device_id=self.device_id, purpose=purpose)
        assertion.issued_at.FromDatetime(at or datetime.now(UTC))
        payload = assertion.SerializeToString()
        return ingest_pb2.SignedDeviceAssertion(
            key_id=self.key_id,
            assertion=payload,
            signature=self.private_key.sign(ASSERTION_CONTEXT + payload),
        )

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (for `clearway devices keygen`)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, device_id: str, pem: bytes) -> DeviceIdentity:
        """A device identity from its PKCS#8 PEM private key."""
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the key is not an Ed25519 private key")
        return cls(device_id, key)
