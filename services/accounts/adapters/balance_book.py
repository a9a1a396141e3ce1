"""PostgreSQL store of stored value: card balances, the movements that made them (the
audit trail), top-ups, and the outbox of events that leave with them.

Everything here runs on a connection inside the caller's transaction, so a balance
movement, its audit row and the events it causes (a `TopUp`, a `DenyListChange`) commit
together or not at all. Each card's balance row is locked (cards in sorted order, so two
transactions never wait on each other in a cycle) before it is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from clearway.events.v1 import events_pb2
from clearway.ingest.v1 import ingest_pb2
from services.accounts.adapters.outbox import OutboxMessage, enqueue
from services.accounts.domain.balance import (
    CardBalance,
    Movement,
    MovementKind,
    Posting,
    post_movements,
)

CHANGED_BY = "service/accounts"

# Appended to the service's MIGRATIONS (adapters.journey_repository).
BALANCE_MIGRATION = """
ALTER TABLE journeys_latest ADD COLUMN charged_minor bigint NOT NULL DEFAULT 0;
CREATE TABLE card_balances (
    card_token     text COLLATE "C" PRIMARY KEY,
    balance_minor  bigint NOT NULL DEFAULT 0,
    currency       text NOT NULL,
    deny_listed    boolean NOT NULL DEFAULT false,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE balance_movements (
    movement_id          bigserial PRIMARY KEY,
    card_token           text COLLATE "C" NOT NULL,
    kind                 text NOT NULL CHECK (kind IN ('top_up', 'journey')),
    source_id            text COLLATE "C" NOT NULL,
    revision             bigint NOT NULL DEFAULT 0,
    amount_minor         bigint NOT NULL,
    balance_after_minor  bigint NOT NULL,
    currency             text NOT NULL,
    at                   timestamptz NOT NULL,
    UNIQUE (kind, source_id, revision)
);
CREATE INDEX balance_movements_of ON balance_movements (card_token, movement_id DESC);
CREATE TABLE top_ups (
    top_up_id        text COLLATE "C" PRIMARY KEY,
    card_token       text COLLATE "C" NOT NULL,
    retailer_id      text NOT NULL,
    amount_minor     bigint NOT NULL CHECK (amount_minor > 0),
    currency         text NOT NULL,
    sold_at          timestamptz NOT NULL,
    service_day      date,
    traveller_id     text COLLATE "C",
    idempotency_key  text COLLATE "C",
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (traveller_id, idempotency_key)
);
CREATE TABLE outbox (
    outbox_id   bigserial PRIMARY KEY,
    topic       text NOT NULL,
    key         bytea NOT NULL,
    value       bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
"""

_CREATE_BALANCES = """
INSERT INTO card_balances (card_token, currency)
SELECT unnest($1::text[]), $2
ON CONFLICT (card_token) DO NOTHING
"""

_LOCK_BALANCES = """
SELECT card_token, balance_minor, deny_listed FROM card_balances
WHERE card_token = ANY($1::text[]) ORDER BY card_token FOR UPDATE
"""

_INSERT_MOVEMENTS = """
INSERT INTO balance_movements
    (card_token, kind, source_id, revision, amount_minor, balance_after_minor, currency, at)
SELECT c, k, s, r, a, b, $7, $8
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
    AS m(c, k, s, r, a, b)
"""

_UPDATE_BALANCES = """
UPDATE card_balances AS b SET balance_minor = n.balance, deny_listed = n.listed, updated_at = $4
FROM unnest($1::text[], $2::bigint[], $3::boolean[]) AS n(card, balance, listed)
WHERE b.card_token = n.card
"""


@dataclass(frozen=True, slots=True)
class MovementRow:
    """One line of a card's balance audit trail."""

    movement_id: int
    kind: MovementKind
    source_id: str
    revision: int
    amount_minor: int
    balance_after_minor: int
    currency: str
    at: datetime


@dataclass(frozen=True, slots=True)
class StoredTopUp:
    """A top-up as recorded, with the balance it left."""

    top_up_id: str
    card_token: str
    retailer_id: str
    amount_minor: int
    currency: str
    sold_at: datetime
    balance_after_minor: int


def deny_list_message(card_token: str, add: bool, at: datetime, topic: str) -> OutboxMessage:
    """The DenyListChange ingest's follower reads: key the card token, value serialized
    deterministically (as ingest's DenyListPublisher writes it)."""
    change = events_pb2.DenyListChange(
        card_token=card_token,
        action=(
            events_pb2.DenyListChange.ACTION_ADD if add else events_pb2.DenyListChange.ACTION_REMOVE
        ),
        reason=ingest_pb2.DENY_REASON_UNPAID_DEBT if add else 0,
        changed_by=CHANGED_BY,
    )
    change.changed_at.FromDatetime(at)
    return OutboxMessage(topic, card_token.encode(), change.SerializeToString(deterministic=True))


@dataclass(frozen=True, slots=True)
class BalanceBook:
    """Posts movements to card balances inside the caller's transaction."""

    currency: str
    denylist_topic: str

    async def post(
        self, conn: asyncpg.Connection, moves: Sequence[Movement], at: datetime
    ) -> Posting:
        """Lock the cards' balances, apply `moves` in order, write the audit rows and the
        new balances, and queue a DenyListChange for every transition."""
        if not moves:
            return post_movements({}, [])
        cards = sorted({m.card_token for m in moves})
        await conn.execute(_CREATE_BALANCES, cards, self.currency)
        current = {
            r["card_token"]: CardBalance(r["balance_minor"], r["deny_listed"])
            for r in await conn.fetch(_LOCK_BALANCES, cards)
        }
        posting = post_movements(current, moves)
        posted = posting.posted
        await conn.execute(
            _INSERT_MOVEMENTS,
            [p.movement.card_token for p in posted],
            [p.movement.kind.value for p in posted],
            [p.movement.source_id for p in posted],
            [p.movement.revision for p in posted],
            [p.movement.amount_minor for p in posted],
            [p.balance_after_minor for p in posted],
            self.currency,
            at,
        )
        await conn.execute(
            _UPDATE_BALANCES,
            cards,
            [posting.balances[c].balance_minor for c in cards],
            [posting.balances[c].deny_listed for c in cards],
            at,
        )
        await enqueue(
            conn,
            [
                deny_list_message(t.card_token, t.add, at, self.denylist_topic)
                for t in posting.transitions
            ],
        )
        return posting


class BalanceRepository:
    """Reads of balances and movements, and the top-ups table (the service's schema)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def balance(self, card_token: str) -> CardBalance:
        """The card's balance (zero, not listed, when it never moved)."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT balance_minor, deny_listed FROM card_balances WHERE card_token = $1",
                card_token,
            )
        return CardBalance() if row is None else CardBalance(row[0], row[1])

    async def movements(
        self, card_token: str, before_id: int | None, limit: int
    ) -> list[MovementRow]:
        """Up to `limit` of the card's movements, newest first, older than `before_id`."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT movement_id, kind, source_id, revision, amount_minor,"
                " balance_after_minor, currency, at FROM balance_movements"
                " WHERE card_token = $1 AND ($2::bigint IS NULL OR movement_id < $2)"
                " ORDER BY movement_id DESC LIMIT $3",
                card_token,
                before_id,
                limit,
            )
        return [
            MovementRow(
                r["movement_id"],
                MovementKind(r["kind"]),
                r["source_id"],
                r["revision"],
                r["amount_minor"],
                r["balance_after_minor"],
                r["currency"],
                r["at"],
            )
            for r in rows
        ]


_TOP_UP_COLUMNS = """
t.top_up_id, t.card_token, t.retailer_id, t.amount_minor, t.currency, t.sold_at,
m.balance_after_minor
"""


async def claim_online_top_up(
    conn: asyncpg.Connection,
    *,
    top_up_id: str,
    card_token: str,
    retailer_id: str,
    amount_minor: int,
    currency: str,
    sold_at: datetime,
    service_day: object,
    traveller_id: str,
    idempotency_key: str,
) -> bool:
    """Record a traveller's top-up under their idempotency key; False when the key was
    used before (a concurrent first use is waited for by the unique index)."""
    row = await conn.fetchrow(
        "INSERT INTO top_ups (top_up_id, card_token, retailer_id, amount_minor, currency,"
        " sold_at, service_day, traveller_id, idempotency_key)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (traveller_id, idempotency_key) DO NOTHING RETURNING top_up_id",
        top_up_id,
        card_token,
        retailer_id,
        amount_minor,
        currency,
        sold_at,
        service_day,
        traveller_id,
        idempotency_key,
    )
    return row is not None


async def top_up_by_key(
    conn: asyncpg.Connection, traveller_id: str, idempotency_key: str
) -> StoredTopUp | None:
    """The traveller's top-up recorded under `idempotency_key`, with its balance after."""
    row = await conn.fetchrow(
        f"SELECT {_TOP_UP_COLUMNS} FROM top_ups t"  # noqa: S608 - constant columns
        " JOIN balance_movements m ON m.kind = 'top_up' AND m.source_id = t.top_up_id"
        " WHERE t.traveller_id = $1 AND t.idempotency_key = $2",
        traveller_id,
        idempotency_key,
    )
    if row is None:
        return None
    return StoredTopUp(*row.values())


async def claim_sold_top_ups(
    conn: asyncpg.Connection,
    sales: Sequence[tuple[str, str, str, int, str, datetime, object]],
) -> set[str]:
    """Record retailer sales (top_up_id, card, retailer, amount, currency, sold_at,
    service_day) not seen before; the ids recorded now (the others were credited already)."""
    if not sales:
        return set()
    columns = list(zip(*sales, strict=True))
    rows = await conn.fetch(
        "INSERT INTO top_ups (top_up_id, card_token, retailer_id, amount_minor, currency,"
        " sold_at, service_day)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[],"
        " $6::timestamptz[], $7::date[])"
        " ON CONFLICT (top_up_id) DO NOTHING RETURNING top_up_id",
        *[list(c) for c in columns],
    )
    return {r["top_up_id"] for r in rows}
