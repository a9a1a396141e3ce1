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
from services.fares.domain import CapSpent

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
    # v3 (batched pricing): outbox rows belong to a partition, relayed by its owner in id
    # order; a pending card remembers its earliest waiting tap (the week to re-price).
    """
    ALTER TABLE outbox ADD COLUMN partition integer NOT NULL DEFAULT -1;
    CREATE INDEX outbox_by_partition ON outbox (partition, id);
    ALTER TABLE pending_cards ADD COLUMN waiting_since timestamptz;
    ALTER TABLE published ADD COLUMN spent_before text;
    """,
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


@dataclass(frozen=True, slots=True)
class PublishedRow:
    """What was last published about a journey."""

    journey_id: str
    card_token: str
    service_day: date
    revision: int
    charge: Money
    fingerprint: str | None
    spent_before: CapSpent | None = None


def encode_spent(spent: CapSpent | None) -> str | None:
    """Cap spend as stored: JSON [[cap id, YYYY-MM-DD, amount], ...]."""
    if spent is None:
        return None
    return json.dumps([[cap, day.isoformat(), amount] for cap, day, amount in spent])


def decode_spent(raw: str | None) -> CapSpent | None:
    """The cap spend `encode_spent` stored."""
    if raw is None:
        return None
    return tuple((str(c), date.fromisoformat(d), int(a)) for c, d, a in json.loads(raw))


@dataclass(frozen=True, slots=True)
class PendingRow:
    """A card whose waiting entries must be priced as incomplete at `due_at`."""

    card_token: str
    partition: int
    due_at: datetime
    waiting_since: datetime | None


@dataclass(frozen=True, slots=True)
class TapRow:
    """A tap as stored: id, card, instant and the original record bytes."""

    tap_id: str
    card_token: str
    tapped_at: datetime
    body: bytes


@dataclass(frozen=True, slots=True)
class TapWindow:
    """The instants [since, until) of one card whose stored taps are wanted."""

    card_token: str
    since: datetime
    until: datetime


def _encode_headers(headers: list[tuple[str, bytes]]) -> str:
    return json.dumps([[k, v.decode()] for k, v in headers])


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

    async def add_taps(self, taps: Sequence[TapRow]) -> set[str]:
        """Store taps (one statement); the ids that were new (not stored before)."""
        if not taps:
            return set()
        rows = await self.conn.fetch(
            "INSERT INTO taps (tap_id, card_token, tapped_at, body)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::bytea[])"
            " ON CONFLICT DO NOTHING RETURNING tap_id",
            [t.tap_id for t in taps],
            [t.card_token for t in taps],
            [t.tapped_at for t in taps],
            [t.body for t in taps],
        )
        return {r["tap_id"] for r in rows}

    async def taps_in(self, windows: Sequence[TapWindow]) -> dict[str, dict[str, bytes]]:
        """Stored taps (tap id -> record bytes) of each window's card in its instants,
        per card (a tap in two windows of one card is returned once)."""
        if not windows:
            return {}
        rows = await self.conn.fetch(
            "SELECT t.card_token, t.tap_id, t.body"
            " FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS w(card, since,"
            " until) JOIN taps t ON t.card_token = w.card"
            " AND t.tapped_at >= w.since AND t.tapped_at < w.until",
            [w.card_token for w in windows],
            [w.since for w in windows],
            [w.until for w in windows],
        )
        found: dict[str, dict[str, bytes]] = {}
        for r in rows:
            found.setdefault(r["card_token"], {})[r["tap_id"]] = bytes(r["body"])
        return found

    async def published_of(
        self, cards: Sequence[str], first_day: date, last_day: date
    ) -> list[PublishedRow]:
        """What was last published about the cards' journeys of those service days."""
        if not cards:
            return []
        rows = await self.conn.fetch(
            "SELECT journey_id, card_token, service_day, revision, charge_minor, currency,"
            " fingerprint, spent_before FROM published"
            " WHERE card_token = ANY($1::text[]) AND service_day BETWEEN $2 AND $3",
            list(cards),
            first_day,
            last_day,
        )
        return [
            PublishedRow(
                r["journey_id"],
                r["card_token"],
                r["service_day"],
                r["revision"],
                Money(r["charge_minor"], r["currency"]),
                r["fingerprint"],
                decode_spent(r["spent_before"]),
            )
            for r in rows
        ]

    async def record_published_many(self, rows: Sequence[PublishedRow]) -> None:
        """Remember the newest revision of each journey (one statement)."""
        if not rows:
            return
        await self.conn.execute(
            "INSERT INTO published (journey_id, card_token, service_day, revision,"
            " charge_minor, currency, fingerprint, spent_before)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::integer[],"
            " $5::bigint[], $6::text[], $7::text[], $8::text[])"
            " ON CONFLICT (journey_id) DO UPDATE SET revision = excluded.revision,"
            " charge_minor = excluded.charge_minor, currency = excluded.currency,"
            " fingerprint = excluded.fingerprint, spent_before = excluded.spent_before",
            [r.journey_id for r in rows],
            [r.card_token for r in rows],
            [r.service_day for r in rows],
            [r.revision for r in rows],
            [r.charge.amount_minor for r in rows],
            [r.charge.currency for r in rows],
            [r.fingerprint for r in rows],
            [encode_spent(r.spent_before) for r in rows],
        )

    async def enqueue_many(
        self, partition: int, rows: Sequence[tuple[str, bytes, list[tuple[str, bytes]]]]
    ) -> list[int]:
        """Queue journey revisions (card, body, headers) of a partition; their outbox ids,
        in order."""
        if not rows:
            return []
        ids = await self.conn.fetch(
            "INSERT INTO outbox (partition, card_token, body, headers)"
            " SELECT $1, r.card_token, r.body, r.headers"
            " FROM unnest($2::text[], $3::bytea[], $4::text[])"
            " WITH ORDINALITY AS r(card_token, body, headers, n) ORDER BY n RETURNING id",
            partition,
            [card for card, _, _ in rows],
            [body for _, body, _ in rows],
            [_encode_headers(headers) for _, _, headers in rows],
        )
        return sorted(r["id"] for r in ids)

    async def pending_due(
        self, partition: int, as_of: datetime | None, cards: Sequence[str] = ()
    ) -> list[PendingRow]:
        """Cards of `partition` whose waiting entries are due at `as_of`, and the pending
        rows of `cards` whatever their deadline."""
        # Two index scans (by deadline, by card), not one OR that scans the whole table.
        rows = await self.conn.fetch(
            "SELECT card_token, partition, due_at, waiting_since FROM pending_cards"
            " WHERE partition = $1 AND due_at <= $2"
            " UNION SELECT card_token, partition, due_at, waiting_since FROM pending_cards"
            " WHERE card_token = ANY($3::text[])",
            partition,
            as_of,
            list(cards),
        )
        return [
            PendingRow(r["card_token"], r["partition"], r["due_at"], r["waiting_since"])
            for r in rows
        ]

    async def write_pending(self, rows: Sequence[PendingRow], cleared: Sequence[str]) -> None:
        """Set the cards' pending deadlines and forget those of `cleared` cards."""
        if cleared:
            await self.conn.execute(
                "DELETE FROM pending_cards WHERE card_token = ANY($1::text[])", list(cleared)
            )
        if rows:
            await self.conn.execute(
                "INSERT INTO pending_cards (card_token, partition, due_at, waiting_since)"
                " SELECT * FROM unnest($1::text[], $2::integer[], $3::timestamptz[],"
                " $4::timestamptz[])"
                " ON CONFLICT (card_token) DO UPDATE SET partition = excluded.partition,"
                " due_at = excluded.due_at, waiting_since = excluded.waiting_since",
                [r.card_token for r in rows],
                [r.partition for r in rows],
                [r.due_at for r in rows],
                [r.waiting_since for r in rows],
            )

    async def outbox(
        self, partitions: Sequence[int] | None = None, limit: int = 2000
    ) -> list[OutboxRow]:
        """The oldest unpublished revisions (of those partitions, or of all)."""
        rows = await self.conn.fetch(
            "SELECT id, card_token, body, headers FROM outbox"
            " WHERE $1::integer[] IS NULL OR partition = ANY($1::integer[])"
            " ORDER BY id LIMIT $2",
            None if partitions is None else list(partitions),
            limit,
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
