"""Duplicate detection on (device id, sequence number) in Redis.

A key moves through two states: `pending` while the tap is being written to Kafka
(short TTL, so a crashed writer does not block a retry for long) and `accepted`
once Kafka has durably taken it (long TTL: the window in which a validator may
resend). A crash between the Kafka write and `mark_accepted` lets one resend
through again; downstream the tap id (device:sequence) makes that harmless.
"""

from __future__ import annotations

import asyncio
import hashlib
from enum import StrEnum

import redis.asyncio as aioredis

PENDING = b"pending"
ACCEPTED = b"accepted"


class Claim(StrEnum):
    """Outcome of trying to claim a (device, sequence) pair."""

    NEW = "new"
    DUPLICATE = "duplicate"


class TapDeduplicator:
    """Claims (device id, sequence number) pairs so each tap is accepted once."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "ingest:seen:",
        accepted_ttl_s: int = 14 * 24 * 3600,
        pending_ttl_s: int = 30,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.accepted_ttl_s = accepted_ttl_s
        self.pending_ttl_s = pending_ttl_s

    def _key(self, device_id: str, sequence_number: int) -> str:
        digest = hashlib.sha256(device_id.encode()).hexdigest()[:32]
        return f"{self.prefix}{digest}:{sequence_number}"

    async def claim(self, device_id: str, sequence_number: int, wait_s: float = 5.0) -> Claim:
        """NEW when this caller now owns the pair; DUPLICATE when it was accepted before.

        When another writer holds it pending, wait for its outcome up to `wait_s`.
        """
        key = self._key(device_id, sequence_number)
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            if await self.client.set(key, PENDING, nx=True, ex=self.pending_ttl_s):
                return Claim.NEW
            state = await self.client.get(key)
            if state == ACCEPTED:
                return Claim.DUPLICATE
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("another stream is still writing this tap")
            await asyncio.sleep(0.05)

    async def mark_accepted(self, device_id: str, sequence_number: int) -> None:
        """Kafka has the tap: remember it for the resend window."""
        await self.client.set(
            self._key(device_id, sequence_number), ACCEPTED, ex=self.accepted_ttl_s
        )

    async def release(self, device_id: str, sequence_number: int) -> None:
        """The write failed: let the validator's resend try again."""
        await self.client.delete(self._key(device_id, sequence_number))
