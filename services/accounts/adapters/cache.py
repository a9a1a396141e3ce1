"""Redis cache of journey-history pages, invalidated by a per-card generation counter.

Every page key includes the card's current generation; storing a journey for the card
bumps it (INCR), so pages cached before the write are never read again and simply
expire. Keys hold a sha256 of the card token, never the token. Redis failures are
logged and treated as a miss: readers fall back to PostgreSQL.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

import redis.asyncio as redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

PAGE_TTL_S = 300
# Much longer than a page's life: a generation that expired (no writes for a week) can
# only restart at 0 when every page of the earlier generations has long expired.
GENERATION_TTL_S = 7 * 86_400


def _card_key(namespace: str, card_token: str) -> str:
    return f"{namespace}:card:{hashlib.sha256(card_token.encode()).hexdigest()}"


class HistoryCache:
    """Pages of ListJourneys (serialized bytes) keyed by card, generation, size and token."""

    def __init__(self, client: redis.Redis, namespace: str, page_ttl_s: int = PAGE_TTL_S) -> None:
        self._redis = client
        self.namespace = namespace
        self.page_ttl_s = page_ttl_s
        self.hits = 0
        self.misses = 0
        self.errors = 0

    @property
    def client(self) -> redis.Redis:
        """The Redis connection (shared with the sign-in limiter)."""
        return self._redis

    @classmethod
    def from_url(cls, url: str, namespace: str, timeout_s: float = 0.5) -> HistoryCache:
        """A cache on the Redis at `url`, with short timeouts so a dead Redis degrades fast."""
        client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        return cls(client, namespace)

    async def ping(self) -> None:
        """Raise unless Redis answers (used at start-up, where Redis must be up)."""
        await self._redis.ping()

    async def close(self) -> None:
        """Release the connections."""
        await self._redis.aclose()

    def generation_key(self, card_token: str) -> str:
        """The key of the card's generation counter."""
        return f"{_card_key(self.namespace, card_token)}:gen"

    def page_key(self, card_token: str, generation: int, page_size: int, page_token: str) -> str:
        """The key of one cached page."""
        token_hash = hashlib.sha256(page_token.encode()).hexdigest()[:32]
        return f"{_card_key(self.namespace, card_token)}:page:{generation}:{page_size}:{token_hash}"

    def _degraded(self, action: str, exc: Exception) -> None:
        self.errors += 1
        log.warning(
            "redis unavailable; serving without cache",
            extra={"action": action, "error": type(exc).__name__},
        )

    async def generation(self, card_token: str) -> int | None:
        """The card's current generation (0 when never bumped); None when Redis fails."""
        try:
            raw = await self._redis.get(self.generation_key(card_token))
        except (RedisError, OSError) as exc:
            self._degraded("generation", exc)
            return None
        return int(raw) if raw is not None else 0

    async def page(
        self, card_token: str, generation: int, page_size: int, page_token: str
    ) -> bytes | None:
        """A cached page, or None on a miss or a Redis failure."""
        try:
            raw = await self._redis.get(
                self.page_key(card_token, generation, page_size, page_token)
            )
        except (RedisError, OSError) as exc:
            self._degraded("get", exc)
            return None
        if raw is None:
            self.misses += 1
            return None
        self.hits += 1
        return raw if isinstance(raw, bytes) else raw.encode()

    async def put_page(
        self, card_token: str, generation: int, page_size: int, page_token: str, page: bytes
    ) -> None:
        """Cache a page under the generation it was read for (best effort)."""
        key = self.page_key(card_token, generation, page_size, page_token)
        try:
            await self._redis.set(key, page, ex=self.page_ttl_s)
        except (RedisError, OSError) as exc:
            self._degraded("set", exc)

    async def bump_many(self, card_tokens: Iterable[str]) -> None:
        """Invalidate every cached page of these cards in one round trip.

        Raises when Redis fails: a consumer must not move on with pages it could not
        invalidate (it retries, and the store is idempotent)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for card_token in sorted(set(card_tokens)):
                key = self.generation_key(card_token)
                pipe.incr(key)
                pipe.expire(key, GENERATION_TTL_S)
            await pipe.execute()

    async def bump(self, card_token: str) -> bool:
        """Invalidate every cached page of the card; False when Redis failed."""
        key = self.generation_key(card_token)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, GENERATION_TTL_S)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._degraded("bump", exc)
            return False
        return True
