"""What a provider's point-of-service device does to redeem an entitlement: hold an Ed25519
key, sign each Redemption, send it to accounts' RedemptionService (docs/benefits.md).
Used by tests, the portal's browser test and `clearway benefits devices keygen`; a device
in the field does the same.

    signature = Ed25519(device key, b"clearway.benefits.v1.Redemption" + b"\\x00" + redemption)
"""

from __future__ import annotations

from datetime import datetime

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clearway.benefits.v1 import benefits_pb2, benefits_pb2_grpc
from clearway.common.v1.money_pb2 import Money as MoneyMessage
from clearway.device_keys import key_id_of, raw_public_key
from clearway.money import Money
from services.accounts.domain.redemptions import REDEMPTION_CONTEXT


class RedemptionDevice:
    """A device id and its private signing key."""

    def __init__(self, device_id: str, private_key: Ed25519PrivateKey) -> None:
        self.device_id = device_id
        self.private_key = private_key

    @classmethod
    def generate(cls, device_id: str) -> RedemptionDevice:
        """A device with a new random key."""
        return cls(device_id, Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key (what `clearway benefits devices register` takes)."""
        return raw_public_key(self.private_key)

    @property
    def key_id(self) -> str:
        """The first 16 hex digits of the SHA-256 of the public key."""
        return key_id_of(self.public_key)

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        """The public key as PEM (SubjectPublicKeyInfo)."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(
        self,
        card_token: str,
        category: str,
        amount: Money,
        idempotency_key: str,
        *,
        entitlement_id: str = "",
        requested_at: datetime | None = None,
    ) -> benefits_pb2.RedeemRequest:
        """The signed request of one redemption."""
        redemption = benefits_pb2.Redemption(
            card_token=card_token,
            category=category,
            amount=MoneyMessage(amount_minor=amount.amount_minor, currency=amount.currency),
            idempotency_key=idempotency_key,
            entitlement_id=entitlement_id,
        )
        if requested_at is not None:  # unset: presented now, by the server's clock
            redemption.requested_at.FromDatetime(requested_at)
        payload = redemption.SerializeToString()
        return benefits_pb2.RedeemRequest(
            device_id=self.device_id,
            key_id=self.key_id,
            redemption=payload,
            signature=self.private_key.sign(REDEMPTION_CONTEXT + payload),
        )

    async def redeem(  # noqa: PLR0917 - the device API the portal's tests call
        self,
        channel: grpc.aio.Channel,
        card_token: str,
        category: str,
        amount: Money,
        idempotency_key: str,
        entitlement_id: str = "",
        *,
        requested_at: datetime | None = None,
    ) -> benefits_pb2.RedeemResponse:
        """Sign and send one redemption (presented at `requested_at`: a till sending what it
        queued offline; default: now, by the server's clock); the
        answer (gRPC errors raise AioRpcError)."""
        stub = benefits_pb2_grpc.RedemptionServiceStub(channel)
        request = self.sign(
            card_token,
            category,
            amount,
            idempotency_key,
            entitlement_id=entitlement_id,
            requested_at=requested_at,
        )
        response: benefits_pb2.RedeemResponse = await stub.Redeem(request, timeout=10)
        return response
