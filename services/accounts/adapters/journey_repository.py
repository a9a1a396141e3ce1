"""PostgreSQL store of journey revisions: every revision kept for audit, the latest served.

`journey_revisions` keeps each (journey_id, revision) once, forever. `journeys_latest`
holds the highest revision of each journey; an upsert guarded by `revision >` makes an
older revision that arrives late (or a replay) unable to overwrite a newer one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

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
]

_INSERT_REVISION = """
INSERT INTO journey_revisions
    (journey_id, revision, card_token, started_at, started_from_legs, service_day, body)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (journey_id, revision) DO NOTHING
RETURNING true
"""

# A revision without legs (the journey was withdrawn) keeps the leg-based start it had and
# is hidden from the history (has_legs false); a later revision with legs brings it back.
_UPSERT_LATEST = """
INSERT INTO journeys_latest AS l
    (journey_id, revision, card_token, started_at, started_from_legs, service_day, body,
     has_legs)
VALUES ($1, $2, $3, $4, $5, $6, $7, $5)
ON CONFLICT (journey_id) DO UPDATE SET
    has_legs = excluded.has_legs,
    revision = excluded.revision,
    card_token = excluded.card_token,
    started_at = CASE WHEN excluded.started_from_legs OR NOT l.started_from_legs
                      THEN excluded.started_at ELSE l.started_at END,
    started_from_legs = excluded.started_from_legs OR l.started_from_legs,
    service_day = excluded.service_day,
    body = excluded.body,
    updated_at = now()
WHERE excluded.revision > l.revision
RETURNING true
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
class StoreOutcome:
    """What storing one revision changed: a new audit row, and/or the history view."""

    new_revision: bool
    became_latest: bool


def _to_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _to_us(value: datetime) -> int:
    return (value - _EPOCH) // _ONE_US


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


class JourneyRepository:
    """Journey revisions in the service's own schema (the pool pins the search path)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def store(self, rev: JourneyRevision) -> StoreOutcome:
        """Keep `rev` for audit and make it the latest if it is newer; idempotent."""
        args = (
            rev.journey_id,
            rev.revision,
            rev.card_token,
            _to_datetime(rev.started_at_us),
            rev.started_from_legs,
            rev.service_day,
            rev.body,
        )
        async with self._pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(_INSERT_REVISION, *args)
            if not inserted:
                await self._warn_if_conflicting(conn, rev)
            latest = await conn.fetchval(_UPSERT_LATEST, *args)
        return StoreOutcome(new_revision=bool(inserted), became_latest=bool(latest))

    @staticmethod
    async def _warn_if_conflicting(conn: asyncpg.Connection, rev: JourneyRevision) -> None:
        """A replay is identical; a different body under the same revision is a producer bug."""
        kept = await conn.fetchval(
            "SELECT body FROM journey_revisions WHERE journey_id = $1 AND revision = $2",
            rev.journey_id,
            rev.revision,
        )
        if kept is not None and bytes(kept) != rev.body:
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
