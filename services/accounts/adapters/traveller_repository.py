"""Travellers' accounts in PostgreSQL (tables in journey_repository.MIGRATIONS, version 3)
and failed sign-ins counted in Redis.

Tokens are stored as SHA-256 digests and passwords as Argon2id hashes; nothing here logs
an email, a token, a password or a card token.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg
import redis.asyncio as aioredis

from services.accounts.domain.travellers import Card

# Runs in the transaction that adds or removes a card of the account (its id given).
CardHook = Callable[[asyncpg.Connection, str], Awaitable[object]]


class TravellerRepository:
    """Accounts, sessions, reset tokens, cards and the mail outbox."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(self, email: str, password_hash: str) -> str | None:
        """A new account's id; None when the email is taken."""
        traveller_id = f"trv_{uuid.uuid4().hex}"
        row = await self.pool.fetchrow(
            "INSERT INTO travellers (traveller_id, email, password_hash) VALUES ($1, $2, $3)"
            " ON CONFLICT (email) DO NOTHING RETURNING traveller_id",
            traveller_id,
            email,
            password_hash,
        )
        return None if row is None else str(row["traveller_id"])

    async def by_email(self, email: str) -> tuple[str, str] | None:
        """(traveller id, password hash) of the account with this email."""
        row = await self.pool.fetchrow(
            "SELECT traveller_id, password_hash FROM travellers WHERE email = $1", email
        )
        return None if row is None else (str(row["traveller_id"]), str(row["password_hash"]))

    async def set_password_hash(self, traveller_id: str, password_hash: str) -> None:
        """Replace the hash (a rehash with newer parameters)."""
        await self.pool.execute(
            "UPDATE travellers SET password_hash = $2 WHERE traveller_id = $1",
            traveller_id,
            password_hash,
        )

    async def add_session(self, digest: bytes, traveller_id: str, expires_at: datetime) -> None:
        """Store a session by its token's digest."""
        await self.pool.execute(
            "INSERT INTO sessions (token_digest, traveller_id, expires_at) VALUES ($1, $2, $3)",
            digest,
            traveller_id,
            expires_at,
        )

    async def session(self, digest: bytes, now: datetime) -> str | None:
        """The traveller of a live session."""
        value = await self.pool.fetchval(
            "SELECT traveller_id FROM sessions WHERE token_digest = $1 AND expires_at > $2",
            digest,
            now,
        )
        return None if value is None else str(value)

    async def session_and_card(
        self, digest: bytes, card_token: str, now: datetime
    ) -> tuple[str | None, bool]:
        """(the traveller of a live session, whether the card is theirs): one round trip
        for the hot path of reading one's history."""
        row = await self.pool.fetchrow(
            "SELECT s.traveller_id, c.card_token IS NOT NULL AS owns FROM sessions s"
            " LEFT JOIN traveller_cards c"
            " ON c.traveller_id = s.traveller_id AND c.card_token = $2"
            " WHERE s.token_digest = $1 AND s.expires_at > $3",
            digest,
            card_token,
            now,
        )
        if row is None:
            return None, False
        return str(row["traveller_id"]), bool(row["owns"])

    async def end_session(self, digest: bytes) -> None:
        """Forget a session."""
        await self.pool.execute("DELETE FROM sessions WHERE token_digest = $1", digest)

    async def add_reset(
        self, digest: bytes, traveller_id: str, expires_at: datetime, to_email: str, body: str
    ) -> None:
        """A reset token and the mail that carries it, in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO password_resets (token_digest, traveller_id, expires_at)"
                " VALUES ($1, $2, $3)",
                digest,
                traveller_id,
                expires_at,
            )
            await conn.execute(
                "INSERT INTO mail_outbox (to_email, subject, body) VALUES ($1, $2, $3)",
                to_email,
                "Reset your Clearway password",
                body,
            )

    async def reset_is_live(self, digest: bytes, now: datetime) -> bool:
        """Whether a reset token is known, unused and unexpired at `now` (no change)."""
        async with self.pool.acquire() as conn:
            live = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM password_resets"
                " WHERE token_digest = $1 AND used_at IS NULL AND expires_at > $2)",
                digest,
                now,
            )
        return bool(live)

    async def use_reset(self, digest: bytes, now: datetime, password_hash: str) -> str | None:
        """Spend a live reset token: set the new password hash, end every session of the
        account; the traveller id, or None when the token is unknown, used or expired."""
        async with self.pool.acquire() as conn, conn.transaction():
            traveller_id = await conn.fetchval(
                "UPDATE password_resets SET used_at = $2"
                " WHERE token_digest = $1 AND used_at IS NULL AND expires_at > $2"
                " RETURNING traveller_id",
                digest,
                now,
            )
            if traveller_id is None:
                return None
            await conn.execute(
                "UPDATE travellers SET password_hash = $2 WHERE traveller_id = $1",
                traveller_id,
                password_hash,
            )
            await conn.execute("DELETE FROM sessions WHERE traveller_id = $1", traveller_id)
            return str(traveller_id)

    async def add_card(
        self,
        traveller_id: str,
        card_token: str,
        form: str,
        label: str,
        then: CardHook | None = None,
    ) -> tuple[Card, bool] | None:
        """(the card, added now) when it is (now) the traveller's; None when it is another
        account's. `then` runs in the transaction that adds it."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO traveller_cards (card_token, traveller_id, form, label)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (card_token) DO NOTHING"
                " RETURNING card_token, form, label, added_at",
                card_token,
                traveller_id,
                form,
                label,
            )
            if row is not None:
                if then is not None:
                    await then(conn, traveller_id)
                return _card(row), True
            row = await conn.fetchrow(
                "SELECT card_token, form, label, added_at, traveller_id FROM traveller_cards"
                " WHERE card_token = $1",
                card_token,
            )
        if row is None or row["traveller_id"] != traveller_id:
            return None
        return _card(row), False

    async def cards(self, traveller_id: str) -> list[Card]:
        """The traveller's cards, oldest first."""
        rows = await self.pool.fetch(
            "SELECT card_token, form, label, added_at FROM traveller_cards"
            ' WHERE traveller_id = $1 ORDER BY added_at, card_token COLLATE "C"',
            traveller_id,
        )
        return [_card(r) for r in rows]

    async def remove_card(
        self, traveller_id: str, card_token: str, then: CardHook | None = None
    ) -> bool:
        """Detach the card; False when it was not the traveller's. `then` runs in the
        transaction that detaches it."""
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "DELETE FROM traveller_cards WHERE card_token = $1 AND traveller_id = $2",
                card_token,
                traveller_id,
            )
            removed = status != "DELETE 0"
            if removed and then is not None:
                await then(conn, traveller_id)
        return bool(removed)

    async def outbox(self, to_email: str) -> list[str]:
        """The bodies of the mails queued for an address, oldest first (the local mailer:
        a real deployment's mail relay sends them)."""
        rows = await self.pool.fetch(
            "SELECT body FROM mail_outbox WHERE to_email = $1 ORDER BY mail_id", to_email
        )
        return [str(r["body"]) for r in rows]


def _card(row: asyncpg.Record) -> Card:
    return Card(row["card_token"], row["form"], row["label"], row["added_at"])


class SignInLimiter:
    """Failed sign-ins per email in Redis: at most `limit` in `window_s` seconds."""

    def __init__(
        self, client: aioredis.Redis, namespace: str, limit: int = 5, window_s: int = 900
    ) -> None:
        self._redis = client
        self.namespace = namespace
        self.limit = limit
        self.window_s = window_s

    def _key(self, email: str) -> str:
        return f"{self.namespace}:signin:{hashlib.sha256(email.encode()).hexdigest()}"

    async def blocked(self, email: str) -> bool:
        """True when the email has used up its failed attempts."""
        count = await self._redis.get(self._key(email))
        return count is not None and int(count) >= self.limit

    async def failed(self, email: str) -> None:
        """Count a failed attempt (the window starts at the first)."""
        key = self._key(email)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, self.window_s, nx=True)
            await pipe.execute()

    async def succeeded(self, email: str) -> None:
        """Forget the failures."""
        await self._redis.delete(self._key(email))
