"""The fares service's PostgreSQL state: taps per card, what was published, partition positions,
and an outbox. Tap, revisions, outbox rows and the partition position of one Kafka record are
written in one transaction, so a crash at any point replays into exactly the same state."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from clearway.money import Money

MIGRATIONS = [
    """
    CREATE TABLE taps (
        tap_id text PRIMARY KEY,
        card_token text NOT NULL,
        tapped_at timestamptz NOT NULL,
        body bytea NOT NULL
    );
    CREATE INDEX taps_by_card ON taps (card_token, tapped_at);
    CREATE TABLE published (
        journey_id text PRIMARY KEY,
        card_token text NOT NULL,
        service_day date NOT NULL,
        revision integer NOT NULL,
        charge_minor bigint NOT NULL,
        currency text NOT NULL
    );
    CREATE INDEX published_by_card ON published (card_token, service_day);
    CREATE TABLE partition_state (
        topic text NOT NULL,
        partition integer NOT NULL,
        next_offset bigint NOT NULL,
        watermark timestamptz,
        PRIMARY KEY (topic, partition)
    );
    CREATE TABLE pending_cards (
        card_token text PRIMARY KEY,
        partition integer NOT NULL,
        due_at timestamptz NOT NULL
    );
    CREATE INDEX pending_due ON pending_cards (partition, due_at);
    CREATE TABLE closed_days (
        service_day date PRIMARY KEY,
        closed_through timestamptz NOT NULL
    );
    CREATE TABLE outbox (
        id bigserial PRIMARY KEY,
        card_token text NOT NULL,
        body bytea NOT NULL,
        headers text NOT NULL
    );
    """,
    # What the last revision published about a journey ('' = withdrawn, NULL = unknown).
    "ALTER TABLE published ADD COLUMN fingerprint text;",
]


@dataclass(frozen=True, slots=True)
class PartitionPosition:
    """Where a partition's processing stands."""

    next_offset: int
    watermark: datetime | None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A journey revision waiting to be published."""

    id: int
    card_token: str
    body: bytes
    headers: list[tuple[str, bytes]]


class StateStore:
    """Reads and writes on one connection; callers hold the transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def lock_position(self, topic: str, partition: int) -> PartitionPosition:
        """The partition's position, row-locked for this transaction (fences a zombie consumer)."""
        await self.conn.execute(
            "INSERT INTO partition_state (topic, partition, next_offset) VALUES ($1, $2, 0)"
            " ON CONFLICT DO NOTHING",
            topic,
            partition,
        )
        row = await self.conn.fetchrow(
            "SELECT next_offset, watermark FROM partition_state"
            " WHERE topic = $1 AND partition = $2 FOR UPDATE",
            topic,
            partition,
        )
        assert row is not None
        return PartitionPosition(row["next_offset"], row["watermark"])

    async def advance(
        self, topic: str, partition: int, next_offset: int, watermark: datetime | None
    ) -> None:
        """Record that everything before `next_offset` is processed."""
        await self.conn.execute(
            "UPDATE partition_state SET next_offset = $3, watermark = $4"
            " WHERE topic = $1 AND partition = $2",
            topic,
            partition,
            next_offset,
            watermark,
        )

    async def add_tap(self, tap_id: str, card_token: str, tapped_at: datetime, body: bytes) -> bool:
        """Store a tap; False when this tap id was already stored (a resend)."""
        status = await self.conn.execute(
            "INSERT INTO taps (tap_id, card_token, tapped_at, body) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT DO NOTHING",
            tap_id,
            card_token,
            tapped_at,
            body,
        )
        return bool(status.endswith(" 1"))

    async def card_taps(self, card_token: str, since: datetime, until: datetime) -> list[bytes]:
        """Stored taps of a card in [since, until), oldest first."""
        rows = await self.conn.fetch(
            "SELECT body FROM taps WHERE card_token = $1 AND tapped_at >= $2 AND tapped_at < $3"
            " ORDER BY tapped_at, tap_id",
            card_token,
            since,
            until,
        )
        return [bytes(r["body"]) for r in rows]

    async def published(
        self, card_token: str, first_day: date, last_day: date
    ) -> dict[str, tuple[int, Money, str | None]]:
        """journey_id -> (last revision, last charge, fingerprint) published in those days."""
        rows = await self.conn.fetch(
            "SELECT journey_id, revision, charge_minor, currency, fingerprint FROM published"
            " WHERE card_token = $1 AND service_day BETWEEN $2 AND $3",
            card_token,
            first_day,
            last_day,
        )
        return {
            r["journey_id"]: (
                r["revision"],
                Money(r["charge_minor"], r["currency"]),
                r["fingerprint"],
            )
            for r in rows
        }

    async def record_published(
        self,
        journey_id: str,
        card_token: str,
        *,
        service_day: date,
        revision: int,
        charge: Money,
        fingerprint: str,
    ) -> None:
        """Remember the newest revision of a journey."""
        await self.conn.execute(
            "INSERT INTO published VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (journey_id) DO UPDATE SET revision = excluded.revision,"
            " charge_minor = excluded.charge_minor, currency = excluded.currency,"
            " fingerprint = excluded.fingerprint",
            journey_id,
            card_token,
            service_day,
            revision,
            charge.amount_minor,
            charge.currency,
            fingerprint,
        )

    async def published_day(self, journey_id: str) -> date:
        """The service day a published journey belongs to."""
        day: date = await self.conn.fetchval(
            "SELECT service_day FROM published WHERE journey_id = $1", journey_id
        )
        return day

    async def enqueue(self, card_token: str, body: bytes, headers: list[tuple[str, bytes]]) -> None:
        """Queue a journey revision for publication."""
        encoded = json.dumps([[k, v.decode()] for k, v in headers])
        await self.conn.execute(
            "INSERT INTO outbox (card_token, body, headers) VALUES ($1, $2, $3)",
            card_token,
            body,
            encoded,
        )

    async def outbox(self, limit: int = 500) -> list[OutboxRow]:
        """The oldest unpublished revisions."""
        rows = await self.conn.fetch(
            "SELECT id, card_token, body, headers FROM outbox ORDER BY id LIMIT $1", limit
        )
        return [
            OutboxRow(
                r["id"],
                r["card_token"],
                bytes(r["body"]),
                [(k, v.encode()) for k, v in json.loads(r["headers"])],
            )
            for r in rows
        ]

    async def remove_from_outbox(self, ids: Sequence[int]) -> None:
        """Forget revisions Kafka has durably taken."""
        await self.conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", list(ids))

    async def set_pending(self, card_token: str, partition: int, due_at: datetime | None) -> None:
        """When the card's unfinished legs must be priced as incomplete (None = nothing pending)."""
        if due_at is None:
            await self.conn.execute("DELETE FROM pending_cards WHERE card_token = $1", card_token)
            return
        await self.conn.execute(
            "INSERT INTO pending_cards VALUES ($1, $2, $3)"
            " ON CONFLICT (card_token) DO UPDATE SET partition = $2, due_at = $3",
            card_token,
            partition,
            due_at,
        )

    async def due_cards(self, partition: int | None, as_of: datetime) -> list[tuple[str, int]]:
        """(card, partition) whose pending legs are due at `as_of` (any partition when None)."""
        rows = await self.conn.fetch(
            "SELECT card_token, partition FROM pending_cards WHERE due_at <= $2"
            " AND ($1::integer IS NULL OR partition = $1) ORDER BY card_token",
            partition,
            as_of,
        )
        return [(r["card_token"], r["partition"]) for r in rows]

    async def closed_through(self) -> datetime | None:
        """The latest instant up to which service days are closed."""
        value: datetime | None = await self.conn.fetchval(
            "SELECT max(closed_through) FROM closed_days"
        )
        return value

    async def close_day(self, service_day: date, closed_through: datetime) -> None:
        """Record a closed service day."""
        await self.conn.execute(
            "INSERT INTO closed_days VALUES ($1, $2) ON CONFLICT DO NOTHING",
            service_day,
            closed_through,
        )
