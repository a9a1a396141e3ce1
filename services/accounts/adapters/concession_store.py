"""PostgreSQL store of what each card carries on the `concessions` topic (docs/benefits.md
#travel-passes), so accounts publishes only what changes and its sweep finds the cards
whose concession has ended.

`card_concessions` holds a row per card whose latest record is a concession (a card whose
concession ended has no row). Every write runs inside the caller's transaction, beside the
outbox rows that publish the change; the caller holds the account's row lock, so the
changes of one card are queued in the order they commit. Nothing here logs a card token.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import asyncpg

from services.accounts.domain.concessions import Concession

# Appended to the service's MIGRATIONS (adapters.journey_repository). A tombstone is an
# outbox row without a value.
CONCESSIONS_MIGRATION = """
ALTER TABLE outbox ALTER COLUMN value DROP NOT NULL;
CREATE TABLE card_concessions (
    card_token         text COLLATE "C" PRIMARY KEY,
    traveller_id       text COLLATE "C" NOT NULL,
    rider_category_id  text NOT NULL,
    valid_from         date NOT NULL,
    valid_to           date NOT NULL CHECK (valid_to > valid_from),
    entitlement_id     text COLLATE "C" NOT NULL,
    scheme_id          text NOT NULL,
    funder_id          text NOT NULL,
    published_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX card_concessions_of ON card_concessions (traveller_id);
CREATE INDEX card_concessions_due ON card_concessions (valid_to);
"""


async def lock_accounts(conn: asyncpg.Connection, traveller_ids: Sequence[str]) -> None:
    """Serialise concession changes to these accounts (in id order: no lock cycles)."""
    await conn.execute(
        "SELECT 1 FROM (SELECT traveller_id FROM travellers WHERE traveller_id = ANY($1::text[])"
        ' ORDER BY traveller_id COLLATE "C" FOR NO KEY UPDATE) locked',
        list(traveller_ids),
    )


async def cards_of(conn: asyncpg.Connection, traveller_id: str) -> list[str]:
    """The account's cards (every form: each carries taps)."""
    rows = await conn.fetch(
        "SELECT card_token FROM traveller_cards WHERE traveller_id = $1", traveller_id
    )
    return [r["card_token"] for r in rows]


async def published_of(conn: asyncpg.Connection, traveller_id: str) -> dict[str, Concession]:
    """What the account's cards (also ones it has just removed) carry on the topic now."""
    rows = await conn.fetch(
        "SELECT card_token, rider_category_id, valid_from, valid_to, entitlement_id, scheme_id,"
        " funder_id FROM card_concessions WHERE traveller_id = $1",
        traveller_id,
    )
    return {
        r["card_token"]: Concession(
            r["rider_category_id"],
            r["valid_from"],
            r["valid_to"],
            r["entitlement_id"],
            r["scheme_id"],
            r["funder_id"],
        )
        for r in rows
    }


async def record_published(
    conn: asyncpg.Connection, traveller_id: str, changes: Sequence[tuple[str, Concession | None]]
) -> None:
    """Remember what the cards carry once `changes` are relayed (None: nothing)."""
    ended = [card for card, c in changes if c is None]
    if ended:
        await conn.execute("DELETE FROM card_concessions WHERE card_token = ANY($1::text[])", ended)
    carried = [(card, c) for card, c in changes if c is not None]
    if carried:
        await conn.executemany(
            "INSERT INTO card_concessions (card_token, traveller_id, rider_category_id,"
            " valid_from, valid_to, entitlement_id, scheme_id, funder_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (card_token) DO UPDATE SET traveller_id = excluded.traveller_id,"
            " rider_category_id = excluded.rider_category_id,"
            " valid_from = excluded.valid_from, valid_to = excluded.valid_to,"
            " entitlement_id = excluded.entitlement_id, scheme_id = excluded.scheme_id,"
            " funder_id = excluded.funder_id, published_at = now()",
            [
                (
                    card,
                    traveller_id,
                    c.rider_category_id,
                    c.valid_from,
                    c.valid_to,
                    c.entitlement_id,
                    c.scheme_id,
                    c.funder_id,
                )
                for card, c in carried
            ],
        )


_ACCOUNTS_DUE = """
SELECT traveller_id FROM card_concessions WHERE valid_to <= $1
UNION
SELECT e.traveller_id FROM entitlements e
JOIN traveller_cards c ON c.traveller_id = e.traveller_id
LEFT JOIN card_concessions p ON p.card_token = c.card_token
WHERE e.status = 'active' AND e.valid_to > $1 AND e.scheme_id = ANY($2::text[])
  AND p.card_token IS NULL
ORDER BY 1 LIMIT $3
"""


async def accounts_due(
    conn: asyncpg.Connection, day: date, travel_pass_schemes: Sequence[str], limit: int
) -> list[str]:
    """Accounts whose cards' records are out of date on service day `day`: a card carries
    a concession that has ended, or a card carries none while the account holds an active
    travel pass (a card of an account granted one before concessions were published)."""
    rows = await conn.fetch(_ACCOUNTS_DUE, day, list(travel_pass_schemes), limit)
    return [r["traveller_id"] for r in rows]
