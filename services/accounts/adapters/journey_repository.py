"""PostgreSQL store of journey revisions: every revision kept for audit, the latest served.

`journey_revisions` keeps each (journey_id, revision) once, forever. `journeys_latest`
holds the highest revision of each journey; an upsert guarded by `revision >` makes an
older revision that arrives late (or a replay) unable to overwrite a newer one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

import asyncpg

from services.accounts.adapters.balance_book import BALANCE_MIGRATION, BalanceBook
from services.accounts.adapters.bank_charge_store import BANK_MIGRATION, BankDayClock, add_to_days
from services.accounts.adapters.benefits_repository import BENEFITS_MIGRATION
from services.accounts.adapters.claim_repository import CLAIMS_MIGRATION
from services.accounts.adapters.concession_store import CONCESSIONS_MIGRATION
from services.accounts.domain.balance import (
    ChargedRevision,
    JourneyStanding,
    Movement,
    journey_movements,
)
from services.accounts.domain.bank_charges import DayDelta, day_deltas, is_bank_card
from services.accounts.domain.history import JourneyRevision
from services.accounts.domain.paging import HistoryPosition, card_tag

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

# Version n is MIGRATIONS[n-1]; only ever append.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE journey_revisions (
        journey_id        text COLLATE "C" NOT NULL,
        revision          bigint NOT NULL CHECK (revision >= 1),
        card_token        text NOT NULL,
        started_at        timestamptz NOT NULL,
        started_from_legs boolean NOT NULL,
        service_day       date,
        body              bytea NOT NULL,
        stored_at         timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (journey_id, revision)
    );
    CREATE TABLE journeys_latest (
        journey_id        text COLLATE "C" PRIMARY KEY,
        card_token        text NOT NULL,
        revision          bigint NOT NULL,
        started_at        timestamptz NOT NULL,
        started_from_legs boolean NOT NULL,
        service_day       date,
        body              bytea NOT NULL,
        updated_at        timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX journeys_latest_history
        ON journeys_latest (card_token, started_at DESC, journey_id DESC);
    """,
    # A journey whose latest revision has no legs was withdrawn: its taps now belong to
    # another journey. It stays in the audit trail but leaves the traveller's history.
    """
    ALTER TABLE journeys_latest ADD COLUMN has_legs boolean NOT NULL DEFAULT true;
    """,
    # Travellers' accounts (adapters.traveller_repository): passwords as Argon2id hashes,
    # session and reset tokens as SHA-256 digests, a card owned by at most one account,
    # and the mail outbox a mailer sends from.
    """
    CREATE TABLE travellers (
        traveller_id   text COLLATE "C" PRIMARY KEY,
        email          text COLLATE "C" NOT NULL UNIQUE,
        password_hash  text NOT NULL,
        created_at     timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE sessions (
        token_digest   bytea PRIMARY KEY,
        traveller_id   text COLLATE "C" NOT NULL REFERENCES travellers,
        expires_at     timestamptz NOT NULL
    );
    CREATE INDEX sessions_of ON sessions (traveller_id);
    CREATE TABLE password_resets (
        token_digest   bytea PRIMARY KEY,
        traveller_id   text COLLATE "C" NOT NULL REFERENCES travellers,
        expires_at     timestamptz NOT NULL,
        used_at        timestamptz
    );
    CREATE TABLE traveller_cards (
        card_token     text COLLATE "C" PRIMARY KEY,
        traveller_id   text COLLATE "C" NOT NULL REFERENCES travellers,
        form           text NOT NULL,
        label          text NOT NULL DEFAULT '',
        added_at       timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX traveller_cards_of ON traveller_cards (traveller_id, added_at);
    CREATE TABLE mail_outbox (
        mail_id        bigserial PRIMARY KEY,
        to_email       text NOT NULL,
        subject        text NOT NULL,
        body           text NOT NULL,
        created_at     timestamptz NOT NULL DEFAULT now(),
        sent_at        timestamptz
    );
    """,
    # Stored value (adapters.balance_book): balances, their movements, top-ups, outbox;
    # journeys_latest.charged_minor is what the journey's latest revision debited.
    BALANCE_MIGRATION,
    # Missing-exit claims (adapters.claim_repository): every claim and its outcome.
    CLAIMS_MIGRATION,
    # Bank-card mode (adapters.bank_charge_store): day totals, charges, attempts.
    BANK_MIGRATION,
    # Benefits (adapters.benefits_repository): officers, provider devices, entitlements,
    # their month ledger, budgets, redemptions, rewards, the audit trail; and the balance
    # movement kind `reward`.
    BENEFITS_MIGRATION,
    # Travel passes on the taps (adapters.concession_store): what each card carries on the
    # `concessions` topic; outbox rows without a value (tombstones).
    CONCESSIONS_MIGRATION,
]

_INSERT_REVISIONS = """
INSERT INTO journey_revisions
    (journey_id, revision, card_token, started_at, started_from_legs, service_day, body)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[],
                     $5::boolean[], $6::date[], $7::bytea[])
ON CONFLICT (journey_id, revision) DO NOTHING
RETURNING journey_id, revision
"""

_LOCK_LATEST = """
SELECT journey_id, revision, started_at, started_from_legs, charged_minor
FROM journeys_latest WHERE journey_id = ANY($1::text[])
ORDER BY journey_id FOR UPDATE
"""

# The history row of each journey, as computed by `_apply_in_order`. A journey whose
# latest revision has no legs (it was withdrawn) is hidden (has_legs false); a later
# revision with legs brings it back.
_UPSERT_LATEST = """
INSERT INTO journeys_latest AS l
    (journey_id, revision, card_token, started_at, started_from_legs, service_day, body,
     has_legs, charged_minor)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[],
                     $5::boolean[], $6::date[], $7::bytea[], $8::boolean[], $9::bigint[])
ON CONFLICT (journey_id) DO UPDATE SET
    has_legs = excluded.has_legs,
    charged_minor = excluded.charged_minor,
    revision = excluded.revision,
    card_token = excluded.card_token,
    started_at = excluded.started_at,
    started_from_legs = excluded.started_from_legs,
    service_day = excluded.service_day,
    body = excluded.body,
    updated_at = now()
WHERE excluded.revision > l.revision
"""

_FIRST_PAGE = """
SELECT journey_id, revision, card_token, started_at, started_from_legs, service_day, body
FROM journeys_latest
WHERE card_token = $1 AND has_legs
ORDER BY started_at DESC, journey_id DESC
LIMIT $2
"""

_NEXT_PAGE = """
SELECT journey_id, revision, card_token, started_at, started_from_legs, service_day, body
FROM journeys_latest
WHERE card_token = $1 AND has_legs AND (started_at, journey_id) < ($3, $4)
ORDER BY started_at DESC, journey_id DESC
LIMIT $2
"""

_REVISIONS_OF = """
SELECT journey_id, revision, card_token, started_at, started_from_legs, service_day, body
FROM journey_revisions
WHERE journey_id = $1
ORDER BY revision
"""


@dataclass(frozen=True, slots=True)
class _Latest:
    """What the history row of a journey holds: its revision and where it sorts."""

    revision: int
    started_at: datetime
    started_from_legs: bool


def _apply_in_order(
    current: dict[str, _Latest], revs: Sequence[JourneyRevision]
) -> dict[str, JourneyRevision]:
    """Apply revisions one by one to the journeys' rows in `current` (updated in place);
    return, per journey that changed, the revision that is now its latest.

    A revision applies only when newer than the row. The row sorts by the start of the
    latest revision with legs: a withdrawn revision (no legs) keeps the leg-based start
    the journey had.
    """
    became: dict[str, JourneyRevision] = {}
    for rev in revs:
        row = current.get(rev.journey_id)
        if row is not None and rev.revision <= row.revision:
            continue
        started_at = _to_datetime(rev.started_at_us)
        if row is not None and row.started_from_legs and not rev.started_from_legs:
            started_at = row.started_at
        from_legs = rev.started_from_legs or (row is not None and row.started_from_legs)
        current[rev.journey_id] = _Latest(rev.revision, started_at, from_legs)
        became[rev.journey_id] = rev
    return became


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """What storing one revision changed: a new audit row, and/or the history view."""

    new_revision: bool
    became_latest: bool


def _to_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _to_us(value: datetime) -> int:
    return (value - _EPOCH) // _ONE_US


def _day_of(rev: JourneyRevision) -> date:
    """The revision's service day (fares always sets one; else its start's UTC date)."""
    if rev.service_day is not None:
        return rev.service_day
    return _to_datetime(rev.started_at_us).date()


def _revision(row: asyncpg.Record) -> JourneyRevision:
    return JourneyRevision(
        card_token=row["card_token"],
        journey_id=row["journey_id"],
        revision=row["revision"],
        started_at_us=_to_us(row["started_at"]),
        started_from_legs=row["started_from_legs"],
        service_day=row["service_day"],
        body=bytes(row["body"]),
    )


class JourneyRewards(Protocol):
    """What a new journey earns (off-peak rewards, services.accounts.service_layer.rewards):
    called inside the store's transaction with each journey's first stored revision."""

    async def movements(
        self, conn: asyncpg.Connection, firsts: Sequence[JourneyRevision]
    ) -> list[Movement]:
        """The balance movements of the rewards earned (their records written)."""
        ...


def first_revisions(known: set[str], revs: Sequence[JourneyRevision]) -> list[JourneyRevision]:
    """Of `revs` (delivery order), the first revision of each journey not in `known` (the
    journeys already stored): what creates a journey's row."""
    firsts: dict[str, JourneyRevision] = {}
    for rev in revs:
        if rev.journey_id not in known:
            firsts.setdefault(rev.journey_id, rev)
    return list(firsts.values())


class JourneyRepository:
    """Journey revisions in the service's own schema (the pool pins the search path)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        book: BalanceBook | None = None,
        bank_days: BankDayClock | None = None,
        rewards: JourneyRewards | None = None,
    ) -> None:
        self._pool = pool
        # Off-peak rewards earned by new journeys, credited in the same transaction.
        self._rewards = rewards
        # Without a book the history is kept and no balance moves (benchmarks of reads).
        self._book = book
        # Bank cards (bk_) have no balance: their deltas move their service day's total,
        # which the charging loop bills (services.accounts.service_layer.bank_charging).
        self._bank_days = bank_days

    async def store(self, rev: JourneyRevision) -> StoreOutcome:
        """Keep `rev` for audit and make it the latest if it is newer; idempotent."""
        return (await self.store_many([rev]))[0]

    async def store_many(self, revs: Sequence[JourneyRevision]) -> list[StoreOutcome]:
        """Store revisions (in delivery order) in one transaction; idempotent.

        Every revision is kept once for audit. The history view of each journey ends as if
        the revisions had been applied one by one (an older one never overwrites a newer
        one), computed here from the stored row and written in one multi-row statement.
        """
        if not revs:
            return []
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                _INSERT_REVISIONS,
                [r.journey_id for r in revs],
                [r.revision for r in revs],
                [r.card_token for r in revs],
                [_to_datetime(r.started_at_us) for r in revs],
                [r.started_from_legs for r in revs],
                [r.service_day for r in revs],
                [r.body for r in revs],
            )
            inserted = {(r["journey_id"], r["revision"]) for r in rows}
            replays = [r for r in revs if (r.journey_id, r.revision) not in inserted]
            if replays:
                await self._warn_if_conflicting(conn, replays)
            ids = sorted({r.journey_id for r in revs})
            locked = await conn.fetch(_LOCK_LATEST, ids)
            current = {
                row["journey_id"]: _Latest(
                    row["revision"], row["started_at"], row["started_from_legs"]
                )
                for row in locked
            }
            standing = {
                row["journey_id"]: JourneyStanding(row["revision"], row["charged_minor"])
                for row in locked
            }
            known = set(current)
            became = _apply_in_order(current, revs)
            moves = journey_movements(
                standing,
                [
                    ChargedRevision(r.card_token, r.journey_id, r.revision, r.charge_minor)
                    for r in revs
                ],
            )
            moves = await self._add_bank_days(conn, moves, revs)
            if self._rewards is not None and self._book is not None:
                moves += await self._rewards.movements(conn, first_revisions(known, revs))
            if self._book is not None and moves:
                await self._book.post(conn, moves, datetime.now(UTC))
            if became:
                final = [(jid, current[jid], rev) for jid, rev in sorted(became.items())]
                await conn.execute(
                    _UPSERT_LATEST,
                    [jid for jid, _, _ in final],
                    [latest.revision for _, latest, _ in final],
                    [rev.card_token for _, _, rev in final],
                    [latest.started_at for _, latest, _ in final],
                    [latest.started_from_legs for _, latest, _ in final],
                    [rev.service_day for _, _, rev in final],
                    [rev.body for _, _, rev in final],
                    [rev.started_from_legs for _, _, rev in final],
                    [standing[jid].charged_minor for jid, _, _ in final],
                )
        seen_new: set[tuple[str, int]] = set()
        outcomes = []
        for rev in revs:
            key = (rev.journey_id, rev.revision)
            new = key in inserted and key not in seen_new
            seen_new.add(key)
            latest_rev = became.get(rev.journey_id)
            outcomes.append(StoreOutcome(new, latest_rev is not None and latest_rev is rev))
        return outcomes

    async def _add_bank_days(
        self, conn: asyncpg.Connection, moves: list[Movement], revs: Sequence[JourneyRevision]
    ) -> list[Movement]:
        """Move bank cards' day totals by their journeys' deltas; the other moves (stored
        value) are returned for the balance book."""
        bank = [m for m in moves if is_bank_card(m.card_token)]
        if not bank:
            return moves
        if self._book is not None and self._bank_days is not None:
            by_key = {(r.journey_id, r.revision): r for r in revs}
            deltas = day_deltas(
                DayDelta(m.card_token, _day_of(by_key[(m.source_id, m.revision)]), -m.amount_minor)
                for m in bank
            )
            await add_to_days(conn, deltas, self._book.currency, self._bank_days)
        return [m for m in moves if not is_bank_card(m.card_token)]

    @staticmethod
    async def _warn_if_conflicting(
        conn: asyncpg.Connection, revs: Sequence[JourneyRevision]
    ) -> None:
        """A replay is identical; a different body under the same revision is a producer bug."""
        rows = await conn.fetch(
            "SELECT j.journey_id, j.revision, j.body FROM journey_revisions j"
            " JOIN unnest($1::text[], $2::bigint[]) AS k(journey_id, revision)"
            " ON j.journey_id = k.journey_id AND j.revision = k.revision",
            [r.journey_id for r in revs],
            [r.revision for r in revs],
        )
        kept = {(r["journey_id"], r["revision"]): bytes(r["body"]) for r in rows}
        for rev in revs:
            body = kept.get((rev.journey_id, rev.revision))
            if body is not None and body != rev.body:
                log.warning(
                    "conflicting duplicate revision; keeping the first",
                    extra={
                        "journey_id": rev.journey_id,
                        "revision": rev.revision,
                        "card": card_tag(rev.card_token),
                    },
                )

    async def history(
        self, card_token: str, after: HistoryPosition | None, limit: int
    ) -> list[JourneyRevision]:
        """Up to `limit` latest revisions of the card's journeys, newest first, after `after`."""
        async with self._pool.acquire() as conn:
            if after is None:
                rows = await conn.fetch(_FIRST_PAGE, card_token, limit)
            else:
                rows = await conn.fetch(
                    _NEXT_PAGE,
                    card_token,
                    limit,
                    _to_datetime(after.started_at_us),
                    after.journey_id,
                )
        return [_revision(r) for r in rows]

    async def revisions_of(self, journey_id: str) -> list[JourneyRevision]:
        """Every stored revision of one journey, oldest first (the audit trail)."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                _REVISIONS_OF,
                journey_id,
            )
        return [_revision(r) for r in rows]
