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
from collections.abc import Sequence
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

    async def claim_many(
        self, pairs: Sequence[tuple[str, int]], wait_s: float = 5.0
    ) -> list[Claim]:
        """For each (device, sequence): NEW when this caller now owns it, DUPLICATE when it
        was accepted before. Pairs another writer holds pending are awaited up to `wait_s`.
        One pipelined round trip per attempt, whatever the batch size."""
        keys = [self._key(device, seq) for device, seq in pairs]
        result: list[Claim | None] = [None] * len(keys)
        todo = list(range(len(keys)))
        deadline = asyncio.get_running_loop().time() + wait_s
        while todo:
            async with self.client.pipeline(transaction=False) as pipe:
                for i in todo:
                    pipe.set(keys[i], PENDING, nx=True, ex=self.pending_ttl_s)
                    pipe.get(keys[i])
                replies = await pipe.execute()
            waiting = []
            for n, i in enumerate(todo):
                took, state = replies[2 * n], replies[2 * n + 1]
                if took:
                    result[i] = Claim.NEW
                elif state == ACCEPTED:
                    result[i] = Claim.DUPLICATE
                else:
                    waiting.append(i)
            todo = waiting
            if todo:
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError("another stream is still writing these taps")
                await asyncio.sleep(0.05)
        return [claim for claim in result if claim is not None]

    async def mark_accepted(self, pairs: Sequence[tuple[str, int]]) -> None:
        """Kafka has these taps: remember them for the resend window."""
        if not pairs:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for device, seq in pairs:
                pipe.set(self._key(device, seq), ACCEPTED, ex=self.accepted_ttl_s)
            await pipe.execute()

    async def release(self, pairs: Sequence[tuple[str, int]]) -> None:
        """The writes failed: let the validator's resend try again."""
        if pairs:
            await self.client.delete(*(self._key(device, seq) for device, seq in pairs))
