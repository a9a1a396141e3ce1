"""PostgreSQL store of missing-exit claims: the audit trail of every claim and its outcome.

A claim, the sequence number of its correction tap and the tap itself (in the outbox)
commit in one transaction; the unique journey id makes a second claim of one journey
impossible, also when two arrive at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.accounts.domain.claims import ClaimStatus

# Appended to the service's MIGRATIONS (adapters.journey_repository).
CLAIMS_MIGRATION = """
CREATE SEQUENCE claim_tap_seq;
CREATE TABLE claims (
    claim_id               text COLLATE "C" PRIMARY KEY,
    traveller_id           text COLLATE "C" NOT NULL,
    card_token             text COLLATE "C" NOT NULL,
    journey_id             text COLLATE "C" NOT NULL UNIQUE,
    claimed_revision       bigint NOT NULL,
    claimed_charge_minor   bigint NOT NULL,
    currency               text NOT NULL,
    entry_stop_id          text NOT NULL,
    entry_at               timestamptz NOT NULL,
    exit_stop_id           text NOT NULL,
    exited_at              timestamptz NOT NULL,
    exited_at_estimated    boolean NOT NULL,
    tap_id                 text COLLATE "C" NOT NULL UNIQUE,
    status                 text NOT NULL CHECK (status IN ('pending', 'refunded', 'rejected')),
    reason                 text NOT NULL DEFAULT '',
    resulting_revision     bigint,
    refund_minor           bigint,
    created_at             timestamptz NOT NULL,
    resolved_at            timestamptz
);
CREATE INDEX claims_of_card ON claims (card_token, created_at DESC);
CREATE INDEX claims_pending ON claims (journey_id) WHERE status = 'pending';
"""

_CLAIM_OF_JOURNEY = """
SELECT claim_id, traveller_id, card_token, journey_id, claimed_revision,
       claimed_charge_minor, currency, entry_stop_id, entry_at, exit_stop_id, exited_at,
       exited_at_estimated, tap_id, status, reason, resulting_revision, refund_minor,
       created_at, resolved_at
FROM claims WHERE journey_id = $1
"""

_CLAIMS_OF_CARD = """
SELECT claim_id, traveller_id, card_token, journey_id, claimed_revision,
       claimed_charge_minor, currency, entry_stop_id, entry_at, exit_stop_id, exited_at,
       exited_at_estimated, tap_id, status, reason, resulting_revision, refund_minor,
       created_at, resolved_at
FROM claims WHERE card_token = $1
ORDER BY created_at DESC, claim_id DESC LIMIT $2
"""

_PENDING_CLAIMS = """
SELECT claim_id, traveller_id, card_token, journey_id, claimed_revision,
       claimed_charge_minor, currency, entry_stop_id, entry_at, exit_stop_id, exited_at,
       exited_at_estimated, tap_id, status, reason, resulting_revision, refund_minor,
       created_at, resolved_at
FROM claims WHERE status = 'pending' AND journey_id = ANY($1::text[])
ORDER BY claim_id FOR UPDATE
"""

_INSERT_CLAIM = """
INSERT INTO claims (claim_id, traveller_id, card_token, journey_id, claimed_revision,
       claimed_charge_minor, currency, entry_stop_id, entry_at, exit_stop_id, exited_at,
       exited_at_estimated, tap_id, status, reason, resulting_revision, refund_minor,
       created_at, resolved_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
ON CONFLICT (journey_id) DO NOTHING
RETURNING claim_id
"""

_LATEST = """
SELECT revision, body, has_legs FROM journeys_latest
WHERE journey_id = $1 AND card_token = $2
"""

_LATEST_LOCKED = """
SELECT revision, body, has_legs FROM journeys_latest
WHERE journey_id = $1 AND card_token = $2
FOR UPDATE
"""


@dataclass(frozen=True, slots=True)
class StoredClaim:
    """One claim as recorded."""

    claim_id: str
    traveller_id: str
    card_token: str
    journey_id: str
    claimed_revision: int
    claimed_charge_minor: int
    currency: str
    entry_stop_id: str
    entry_at: datetime
    exit_stop_id: str
    exited_at: datetime
    exited_at_estimated: bool
    tap_id: str
    status: ClaimStatus
    reason: str
    resulting_revision: int | None
    refund_minor: int | None
    created_at: datetime
    resolved_at: datetime | None


def _claim(row: asyncpg.Record) -> StoredClaim:
    values = dict(row)
    values["status"] = ClaimStatus(values["status"])
    return StoredClaim(**values)


@dataclass(frozen=True, slots=True)
class LatestJourney:
    """A journey's latest revision as the history holds it."""

    revision: int
    body: bytes
    has_legs: bool


async def latest_journey(
    conn: asyncpg.Connection, card_token: str, journey_id: str, *, lock: bool = False
) -> LatestJourney | None:
    """The journey's latest revision, if it is this card's (row-locked when asked)."""
    row = await conn.fetchrow(
        _LATEST_LOCKED if lock else _LATEST,
        journey_id,
        card_token,
    )
    if row is None:
        return None
    return LatestJourney(row["revision"], bytes(row["body"]), row["has_legs"])


async def journeys_between(
    conn: asyncpg.Connection, card_token: str, since: datetime, until: datetime
) -> list[bytes]:
    """Bodies of the card's journeys (latest, with legs) starting in [since, until]."""
    rows = await conn.fetch(
        "SELECT body FROM journeys_latest WHERE card_token = $1 AND has_legs"
        " AND started_at BETWEEN $2 AND $3",
        card_token,
        since,
        until,
    )
    return [bytes(r["body"]) for r in rows]


async def claim_of_journey(conn: asyncpg.Connection, journey_id: str) -> StoredClaim | None:
    """The journey's claim, if it has one."""
    row = await conn.fetchrow(_CLAIM_OF_JOURNEY, journey_id)
    return None if row is None else _claim(row)


async def next_tap_sequence(conn: asyncpg.Connection) -> int:
    """A sequence number no correction tap of this schema had before."""
    value: int = await conn.fetchval("SELECT nextval('claim_tap_seq')")
    return value


async def insert_claim(conn: asyncpg.Connection, claim: StoredClaim) -> bool:
    """Record a new claim; False when the journey has one already."""
    row = await conn.fetchval(
        _INSERT_CLAIM,
        claim.claim_id,
        claim.traveller_id,
        claim.card_token,
        claim.journey_id,
        claim.claimed_revision,
        claim.claimed_charge_minor,
        claim.currency,
        claim.entry_stop_id,
        claim.entry_at,
        claim.exit_stop_id,
        claim.exited_at,
        claim.exited_at_estimated,
        claim.tap_id,
        claim.status.value,
        claim.reason,
        claim.resulting_revision,
        claim.refund_minor,
        claim.created_at,
        claim.resolved_at,
    )
    return row is not None


async def claims_of_card(
    conn: asyncpg.Connection, card_token: str, limit: int
) -> list[StoredClaim]:
    """The card's claims, newest first."""
    rows = await conn.fetch(
        _CLAIMS_OF_CARD,
        card_token,
        limit,
    )
    return [_claim(r) for r in rows]


async def pending_claims(conn: asyncpg.Connection, journey_ids: Sequence[str]) -> list[StoredClaim]:
    """The pending claims of these journeys, row-locked."""
    rows = await conn.fetch(
        _PENDING_CLAIMS,
        list(journey_ids),
    )
    return [_claim(r) for r in rows]


async def resolve_claim(
    conn: asyncpg.Connection,
    claim_id: str,
    *,
    status: ClaimStatus,
    reason: str,
    resulting_revision: int,
    refund_minor: int,
    at: datetime,
) -> None:
    """Record a pending claim's outcome (a resolved one is never changed again)."""
    await conn.execute(
        "UPDATE claims SET status = $2, reason = $3, resulting_revision = $4,"
        " refund_minor = $5, resolved_at = $6 WHERE claim_id = $1 AND status = 'pending'",
        claim_id,
        status.value,
        reason,
        resulting_revision,
        refund_minor,
        at,
    )
