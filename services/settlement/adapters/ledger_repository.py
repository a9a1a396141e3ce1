"""The ledger, periods and statements in PostgreSQL (the service's own schema)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg

from clearway.db import migrate
from clearway.money import Money
from services.settlement.domain.errors import InvalidJourneyError
from services.settlement.domain.ledger import JourneyRevision, LedgerEntry, postings_for
from services.settlement.domain.periods import posting_period
from services.settlement.domain.statement import IssuedStatement, Statement, parse_statement

MIGRATIONS = [
    """
    CREATE TABLE periods (
        period_id text PRIMARY KEY,
        state text NOT NULL CHECK (state IN ('open', 'closed')),
        closed_at timestamptz
    );
    CREATE TABLE ledger_entries (
        entry_id bigserial PRIMARY KEY,
        period_id text NOT NULL REFERENCES periods (period_id),
        journey_id text NOT NULL,
        revision bigint NOT NULL CHECK (revision >= 1),
        party_id text NOT NULL,
        account text NOT NULL,
        amount_minor bigint NOT NULL,
        currency char(3) NOT NULL,
        description text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        -- A replayed journey revision adds nothing.
        UNIQUE (journey_id, revision, party_id, account)
    );
    CREATE INDEX ledger_entries_by_period ON ledger_entries (period_id, party_id);
    CREATE TABLE statements (
        period_id text NOT NULL REFERENCES periods (period_id),
        party_id text NOT NULL,
        statement_id text NOT NULL UNIQUE,
        body bytea NOT NULL,
        sha256 text NOT NULL,
        path text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (period_id, party_id)
    );
    """,
    # v2: the latest revision processed per journey, so a replayed or out-of-date
    # revision is skipped (postings are now differences against the journey's standing).
    """
    CREATE TABLE journey_positions (
        journey_id text PRIMARY KEY,
        revision bigint NOT NULL
    );
    INSERT INTO journey_positions (journey_id, revision)
        SELECT journey_id, max(revision) FROM ledger_entries GROUP BY journey_id;
    """,
]

_SELECT_ENTRIES = (
    "SELECT period_id, journey_id, revision, party_id, account, amount_minor, currency,"
    " description FROM ledger_entries"
)


@dataclass(frozen=True, slots=True)
class PostResult:
    """Where a journey revision was posted and how many entries were new.

    `skipped` is True when the revision was not newer than the latest one processed for
    its journey (a replay, or an out-of-date revision): nothing was posted. A newer
    revision that changes nothing has `inserted` 0 and `skipped` False.
    """

    period_id: str | None
    inserted: int
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class StoredStatement:
    """A statement as stored: the domain view plus its bytes, hash and file path."""

    statement: Statement
    body: bytes
    sha256: str
    path: str


@dataclass(frozen=True, slots=True)
class ClosedPeriod:
    """The outcome of closing a period: its statements, and whether this call closed it."""

    period_id: str
    statements: list[StoredStatement]
    newly_closed: bool


Issue = Callable[[str, list[LedgerEntry]], list[IssuedStatement]]
PathFor = Callable[[str, str], str]


def _entry(row: asyncpg.Record) -> LedgerEntry:
    return LedgerEntry(
        period_id=row["period_id"],
        journey_id=row["journey_id"],
        revision=row["revision"],
        party_id=row["party_id"],
        account=row["account"],
        amount=Money(row["amount_minor"], row["currency"].strip()),
        description=row["description"],
    )


def _stored(row: asyncpg.Record) -> StoredStatement:
    body = bytes(row["body"])
    return StoredStatement(parse_statement(body), body, row["sha256"], row["path"])


class LedgerRepository:
    """Idempotent postings, period closing and statement storage."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def migrate(self) -> int:
        """Bring the schema up to date."""
        return await migrate(self._pool, MIGRATIONS)

    async def post(self, journey: JourneyRevision) -> PostResult:
        """Post one journey revision (see `post_many`)."""
        return (await self.post_many([journey]))[0]

    async def post_many(self, journeys: Sequence[JourneyRevision]) -> list[PostResult]:
        """Post journey revisions, in order, in one transaction: for each, the difference
        between the revision's target position and what already stands for its journey.

        A revision not newer than the latest one processed for its journey (a replay, or
        an out-of-date revision) adds nothing; a newer one is recorded as processed even
        when it posts nothing. Reads and writes are a handful of multi-row statements
        whatever the number of revisions.
        """
        if not journeys:
            return []
        ids = sorted({j.journey_id for j in journeys})
        async with self._pool.acquire() as conn, conn.transaction():
            # Row-lock the journeys' positions (created at 0 when new), in one order, so
            # concurrent postings of one journey serialise and each sees the other's entries.
            await conn.execute(
                "INSERT INTO journey_positions (journey_id, revision)"
                " SELECT unnest($1::text[]), 0 ON CONFLICT DO NOTHING",
                ids,
            )
            rows = await conn.fetch(
                "SELECT journey_id, revision FROM journey_positions"
                " WHERE journey_id = ANY($1::text[]) ORDER BY journey_id FOR UPDATE",
                ids,
            )
            latest: dict[str, int] = {r["journey_id"]: r["revision"] for r in rows}
            standing = await self._standings(conn, ids)
            periods: dict[str, str] = {}
            results: list[PostResult] = []
            entries: list[LedgerEntry] = []
            for journey in journeys:
                if journey.revision <= latest[journey.journey_id]:
                    results.append(PostResult(None, 0, skipped=True))
                    continue
                latest[journey.journey_id] = journey.revision
                held = standing.setdefault(journey.journey_id, {})
                posted = postings_for(journey, journey.service_day, standing=held)
                if not posted:
                    results.append(PostResult(None, 0))
                    continue
                if journey.service_day not in periods:
                    periods[journey.service_day] = await self._lock_open_period(
                        conn, journey.service_day
                    )
                period_id = periods[journey.service_day]
                posted = [dataclasses.replace(e, period_id=period_id) for e in posted]
                for entry in posted:
                    key = (entry.party_id, entry.account)
                    held[key] = held[key] + entry.amount if key in held else entry.amount
                entries += posted
                results.append(PostResult(period_id, len(posted)))
            await self._insert(conn, entries)
            await conn.execute(
                "UPDATE journey_positions AS p SET revision = n.revision"
                " FROM unnest($1::text[], $2::bigint[]) AS n(journey_id, revision)"
                " WHERE p.journey_id = n.journey_id AND p.revision < n.revision",
                list(latest),
                list(latest.values()),
            )
            return results

    @staticmethod
    async def _insert(conn: asyncpg.Connection, entries: Sequence[LedgerEntry]) -> None:
        if not entries:
            return
        await conn.execute(
            "INSERT INTO ledger_entries (period_id, journey_id, revision, party_id, account,"
            " amount_minor, currency, description)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[],"
            " $5::text[], $6::bigint[], $7::text[], $8::text[])",
            [e.period_id for e in entries],
            [e.journey_id for e in entries],
            [e.revision for e in entries],
            [e.party_id for e in entries],
            [e.account for e in entries],
            [e.amount.amount_minor for e in entries],
            [e.amount.currency for e in entries],
            [e.description for e in entries],
        )

    @staticmethod
    async def _standings(
        conn: asyncpg.Connection, journey_ids: Sequence[str]
    ) -> dict[str, dict[tuple[str, str], Money]]:
        """What is already posted for each journey, per (party, account), in all periods."""
        rows = await conn.fetch(
            "SELECT journey_id, party_id, account, currency, sum(amount_minor)::bigint AS amount"
            " FROM ledger_entries WHERE journey_id = ANY($1::text[])"
            " GROUP BY journey_id, party_id, account, currency"
            " ORDER BY journey_id, party_id, account, currency",
            list(journey_ids),
        )
        standings: dict[str, dict[tuple[str, str], Money]] = {}
        for row in rows:
            standing = standings.setdefault(row["journey_id"], {})
            key = (row["party_id"], row["account"])
            if key in standing:
                raise InvalidJourneyError(
                    "CURRENCY_MISMATCH",
                    f"journey {row['journey_id']} stands in several currencies at {key[0]}",
                )
            standing[key] = Money(row["amount"], row["currency"].strip())
        return standings

    async def _lock_open_period(self, conn: asyncpg.Connection, service_day: str) -> str:
        """The period to post into, share-locked open until the posting commits.

        The share lock makes a concurrent close wait for this posting (and this posting
        see the close), so a period's statements contain exactly what was posted in it.
        """
        while True:
            closed = await conn.fetch(
                "SELECT period_id FROM periods WHERE state = 'closed' AND period_id >= $1",
                service_day,
            )
            period_id = posting_period(service_day, {r["period_id"] for r in closed})
            await conn.execute(
                "INSERT INTO periods (period_id, state) VALUES ($1, 'open') ON CONFLICT DO NOTHING",
                period_id,
            )
            state = await conn.fetchval(
                "SELECT state FROM periods WHERE period_id = $1 FOR SHARE", period_id
            )
            if state == "open":
                return period_id

    async def close_period(self, period_id: str, issue: Issue, path_for: PathFor) -> ClosedPeriod:
        """Close `period_id` (idempotent) and return its statements, ordered by party.

        The first close issues and stores the statements in the same transaction that
        marks the period closed; a later close returns the stored ones unchanged.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO periods (period_id, state) VALUES ($1, 'open') ON CONFLICT DO NOTHING",
                period_id,
            )
            state = await conn.fetchval(
                "SELECT state FROM periods WHERE period_id = $1 FOR UPDATE", period_id
            )
            newly_closed = state == "open"
            if newly_closed:
                rows = await conn.fetch(_SELECT_ENTRIES + " WHERE period_id = $1", period_id)
                for issued in issue(period_id, [_entry(r) for r in rows]):
                    party = issued.statement.party_id
                    await conn.execute(
                        "INSERT INTO statements"
                        " (period_id, party_id, statement_id, body, sha256, path)"
                        " VALUES ($1, $2, $3, $4, $5, $6)",
                        period_id,
                        party,
                        issued.statement.statement_id,
                        issued.body,
                        issued.sha256,
                        path_for(period_id, party),
                    )
                await conn.execute(
                    "UPDATE periods SET state = 'closed', closed_at = $2 WHERE period_id = $1",
                    period_id,
                    dt.datetime.now(dt.UTC),
                )
            rows = await conn.fetch(
                "SELECT body, sha256, path FROM statements WHERE period_id = $1 ORDER BY party_id",
                period_id,
            )
            return ClosedPeriod(period_id, [_stored(r) for r in rows], newly_closed)

    async def is_closed(self, period_id: str) -> bool:
        """Whether `period_id` has been closed."""
        state = await self._pool.fetchval(
            "SELECT state FROM periods WHERE period_id = $1", period_id
        )
        return bool(state == "closed")

    async def statement(self, period_id: str, party_id: str) -> StoredStatement | None:
        """One party's stored statement for a closed period, or None."""
        row = await self._pool.fetchrow(
            "SELECT body, sha256, path FROM statements WHERE period_id = $1 AND party_id = $2",
            period_id,
            party_id,
        )
        return None if row is None else _stored(row)

    async def entries(self, journey_id: str | None = None) -> Sequence[LedgerEntry]:
        """Ledger entries (of one journey, or all), in a stable order; for tests and audits."""
        query = _SELECT_ENTRIES
        args: list[object] = []
        if journey_id is not None:
            query += " WHERE journey_id = $1"
            args.append(journey_id)
        rows = await self._pool.fetch(
            query + " ORDER BY journey_id, revision, party_id, account", *args
        )
        return [_entry(r) for r in rows]
