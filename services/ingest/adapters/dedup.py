"""Which taps ingest has taken: a claim per (device id, sequence number) in Redis.

A claim holds either the token of the Kafka transaction writing the tap (`P...`, pending)
or `A` once that transaction committed. A claim is only ever changed by whoever names its
current value (compare-and-set in Lua), so a slow writer can never undo the decision of
another. A claim left pending by a writer that died is settled by asking the Kafka commit
log whether its transaction committed (see tap_writer.py), never by a timer: a timer that
lets a pending claim lapse is how a tap gets into Kafka twice.

Claims are kept compactly: one Redis hash per device and 128 consecutive sequence numbers
(small hashes are stored as listpacks, a few bytes per tap), expiring `ttl_s` after their
last write; `ttl_s` must be longer than the oldest tap ingest accepts, so a resend is
recognised for as long as it could be accepted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

ACCEPTED = "A"
CHUNK_BITS = 7  # 128 sequence numbers per hash: under Redis's listpack limit of 128 entries

# KEYS: hash per pair; ARGV: field per pair, then the token, then the TTL in seconds.
# Returns, per pair, "" when the caller now holds the claim, else the claim's value.
_CLAIM = """
local n = #KEYS
local token = ARGV[n + 1]
local ttl = tonumber(ARGV[n + 2])
local out = {}
for i = 1, n do
  if redis.call('HSETNX', KEYS[i], ARGV[i], token) == 1 then
    out[i] = ''
    redis.call('EXPIRE', KEYS[i], ttl)
  else
    out[i] = redis.call('HGET', KEYS[i], ARGV[i])
  end
end
return out
"""

# KEYS/ARGV fields as above, then the expected value, then "A" (accept) or "" (release),
# then the TTL. Changes only claims whose value is the expected one; returns how many.
_SETTLE = """
local n = #KEYS
local expected = ARGV[n + 1]
local value = ARGV[n + 2]
local ttl = tonumber(ARGV[n + 3])
local changed = 0
for i = 1, n do
  if redis.call('HGET', KEYS[i], ARGV[i]) == expected then
    if value == '' then
      redis.call('HDEL', KEYS[i], ARGV[i])
    else
      redis.call('HSET', KEYS[i], ARGV[i], value)
      redis.call('EXPIRE', KEYS[i], ttl)
    end
    changed = changed + 1
  end
end
return changed
"""

Pair = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Claimed:
    """The outcome of claiming one pair: `holder` is "" when the caller now holds it, "A"
    when an earlier write committed it, else the pending token of another write."""

    holder: str

    @property
    def new(self) -> bool:
        """The caller holds the claim: it is to write the tap."""
        return self.holder == ""

    @property
    def accepted(self) -> bool:
        """Already in Kafka: a duplicate."""
        return self.holder == ACCEPTED


class TapClaims:
    """Claims on (device id, sequence number) pairs, in Redis."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, ttl_s: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._claim = client.register_script(_CLAIM)
        self._settle = client.register_script(_SETTLE)

    def _slot(self, device_id: str, sequence_number: int) -> tuple[str, str]:
        digest = hashlib.sha256(device_id.encode()).hexdigest()[:24]
        chunk = sequence_number >> CHUNK_BITS
        field = sequence_number & ((1 << CHUNK_BITS) - 1)
        return f"{self.prefix}{digest}:{chunk}", str(field)

    def _args(self, pairs: Sequence[Pair]) -> tuple[list[str], list[str]]:
        slots = [self._slot(d, s) for d, s in pairs]
        return [k for k, _ in slots], [f for _, f in slots]

    async def claim(self, pairs: Sequence[Pair], token: str) -> list[Claimed]:
        """Claim every pair for the write `token`, in one round trip."""
        if not pairs:
            return []
        keys, fields = self._args(pairs)
        replies = await self._claim(keys=keys, args=[*fields, token, self.ttl_s])
        return [Claimed(r.decode() if isinstance(r, bytes) else str(r)) for r in replies]

    async def settle(self, pairs: Sequence[Pair], token: str, *, accepted: bool) -> int:
        """Turn the claims `token` holds into accepted ones (its write committed) or drop
        them (it did not); claims held by anything else are left alone."""
        if not pairs:
            return 0
        keys, fields = self._args(pairs)
        value = ACCEPTED if accepted else ""
        changed = await self._settle(keys=keys, args=[*fields, token, value, self.ttl_s])
        return int(changed)
