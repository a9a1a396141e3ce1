"""PostgreSQL store of bank-card mode: each (bank card, service day)'s running total, the
charges billed from it, every attempt at the payment gateway, and each card's deny-list
state.

- `bank_days`: the sum of the day's journeys' latest charges (`total_minor`, moved by
  revision deltas in the transaction that stores the revisions) and what was billed so far
  (`billed_minor`); a due day whose total differs from what was billed gets a charge.
- `bank_charges`: one row per charge (the day's first, then adjustments or refunds), with
  its recovery state; `next_attempt_at` is when the charging loop next attempts it (also
  the lease of an attempt in flight).
- `bank_charge_attempts`: one row per attempt, written with outcome `unknown` before the
  gateway is called and completed after; a crash between leaves `unknown`, and the next
  attempt at that charge reuses its idempotency key.
- `bank_cards`: whether the card is on the deny list for unpaid bank charges.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import asyncpg

from services.accounts.adapters.balance_book import deny_list_message
from services.accounts.adapters.outbox import enqueue
from services.accounts.domain.bank_charges import (
    BankChargeKind,
    BankChargeStatus,
    ChargeState,
    amount_to_bill,
    charge_kind,
    day_due_at,
    deny_list_change,
)

# Appended to the service's MIGRATIONS (adapters.journey_repository).
BANK_MIGRATION = """
CREATE TABLE bank_days (
    card_token    text COLLATE "C" NOT NULL,
    service_day   date NOT NULL,
    total_minor   bigint NOT NULL DEFAULT 0,
    billed_minor  bigint NOT NULL DEFAULT 0,
    charges       integer NOT NULL DEFAULT 0,
    currency      text NOT NULL,
    due_at        timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (card_token, service_day)
);
CREATE INDEX bank_days_to_bill ON bank_days (due_at) WHERE total_minor <> billed_minor;
CREATE TABLE bank_charges (
    charge_id          text COLLATE "C" PRIMARY KEY,
    card_token         text COLLATE "C" NOT NULL,
    service_day        date NOT NULL,
    sequence           integer NOT NULL,
    kind               text NOT NULL CHECK (kind IN ('charge', 'adjustment', 'refund')),
    amount_minor       bigint NOT NULL,
    currency           text NOT NULL,
    status             text NOT NULL,
    attempts           integer NOT NULL DEFAULT 0,
    retries            integer NOT NULL DEFAULT 0,
    first_declined_at  timestamptz,
    next_attempt_at    timestamptz,
    last_reason        text NOT NULL DEFAULT '',
    reference          text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    UNIQUE (card_token, service_day, sequence)
);
CREATE INDEX bank_charges_due ON bank_charges (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
CREATE INDEX bank_charges_of ON bank_charges (card_token, service_day DESC, sequence DESC);
CREATE TABLE bank_charge_attempts (
    charge_id        text COLLATE "C" NOT NULL REFERENCES bank_charges,
    attempt          integer NOT NULL,
    idempotency_key  text COLLATE "C" NOT NULL UNIQUE,
    automatic        boolean NOT NULL,
    outcome          text NOT NULL DEFAULT 'unknown'
                     CHECK (outcome IN ('unknown', 'approved', 'declined')),
    reason           text NOT NULL DEFAULT '',
    reference        text NOT NULL DEFAULT '',
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    PRIMARY KEY (charge_id, attempt)
);
CREATE TABLE bank_cards (
    card_token   text COLLATE "C" PRIMARY KEY,
    deny_listed  boolean NOT NULL DEFAULT false,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
"""

_ADD_TO_DAYS = """
INSERT INTO bank_days AS d (card_token, service_day, total_minor, currency, due_at)
SELECT * FROM unnest($1::text[], $2::date[], $3::bigint[], $4::text[], $5::timestamptz[])
ON CONFLICT (card_token, service_day) DO UPDATE
SET total_minor = d.total_minor + excluded.total_minor, updated_at = now()
"""

_DUE_DAYS = """
SELECT card_token, service_day, total_minor, billed_minor, charges, currency FROM bank_days
WHERE due_at <= $1 AND total_minor <> billed_minor
ORDER BY due_at, card_token, service_day LIMIT $2
FOR UPDATE SKIP LOCKED
"""

_CHARGE_COLUMNS = """
charge_id, card_token, service_day, sequence, kind, amount_minor, currency, status, attempts,
retries, first_declined_at, next_attempt_at, last_reason, reference, created_at, updated_at
"""


@dataclass(frozen=True, slots=True)
class BankDayClock:
    """When a bank card's service day is charged (see `day_due_at`)."""

    timezone: str = "Europe/London"
    day_start: time = time(4, 30)
    delay: timedelta = timedelta(0)

    def due_at(self, service_day: date) -> datetime:
        """When `service_day` is charged."""
        return day_due_at(service_day, self.timezone, self.day_start, self.delay)


async def add_to_days(
    conn: asyncpg.Connection,
    deltas: Mapping[tuple[str, date], int],
    currency: str,
    clock: BankDayClock,
) -> None:
    """Move the days' totals by `deltas` inside the caller's transaction (days in sorted
    order, so two transactions never wait on each other in a cycle)."""
    if not deltas:
        return
    keys = sorted(deltas)
    await conn.execute(
        _ADD_TO_DAYS,
        [card for card, _ in keys],
        [day for _, day in keys],
        [deltas[k] for k in keys],
        [currency] * len(keys),
        [clock.due_at(day) for _, day in keys],
    )


@dataclass(frozen=True, slots=True)
class StoredBankCharge:
    """A bank charge as recorded."""

    charge_id: str
    card_token: str
    service_day: date
    sequence: int
    kind: BankChargeKind
    amount_minor: int
    currency: str
    status: BankChargeStatus
    attempts: int
    retries: int
    first_declined_at: datetime | None
    next_attempt_at: datetime | None
    last_reason: str
    reference: str
    created_at: datetime
    updated_at: datetime

    @property
    def state(self) -> ChargeState:
        """Its recovery state."""
        return ChargeState(self.status, self.retries, self.first_declined_at, self.next_attempt_at)


def _charge(row: asyncpg.Record) -> StoredBankCharge:
    values = dict(row)
    values["kind"] = BankChargeKind(values["kind"])
    values["status"] = BankChargeStatus(values["status"])
    return StoredBankCharge(**values)


def charge_id_of(card_token: str, service_day: date, sequence: int) -> str:
    """A charge's id: stable, and without the card token in clear."""
    tag = hashlib.sha256(card_token.encode()).hexdigest()[:16]
    return f"bc-{tag}-{service_day:%Y%m%d}-{sequence}"


async def bill_due_days(conn: asyncpg.Connection, now: datetime, limit: int) -> int:
    """Bill every due day whose total differs from what it was billed (rows locked, skipped
    when another instance holds them): one charge each; how many were created."""
    rows = await conn.fetch(_DUE_DAYS, now, limit)
    for row in rows:
        amount = amount_to_bill(row["total_minor"], row["billed_minor"])
        sequence = row["charges"] + 1
        await conn.execute(
            f"INSERT INTO bank_charges ({_CHARGE_COLUMNS})"  # noqa: S608 - constant columns
            " VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, 0, NULL, $8, '', '', $8, $8)",
            charge_id_of(row["card_token"], row["service_day"], sequence),
            row["card_token"],
            row["service_day"],
            sequence,
            charge_kind(sequence, amount).value,
            amount,
            row["currency"],
            now,
        )
        await conn.execute(
            "UPDATE bank_days SET billed_minor = total_minor, charges = $3, updated_at = $4"
            " WHERE card_token = $1 AND service_day = $2",
            row["card_token"],
            row["service_day"],
            sequence,
            now,
        )
    return len(rows)


async def due_charge_ids(conn: asyncpg.Connection, now: datetime, limit: int) -> list[str]:
    """Charges whose next attempt is due (not leased by an attempt in flight)."""
    rows = await conn.fetch(
        "SELECT charge_id FROM bank_charges WHERE next_attempt_at <= $1"
        " ORDER BY next_attempt_at, charge_id LIMIT $2",
        now,
        limit,
    )
    return [r["charge_id"] for r in rows]


async def lock_charge(
    conn: asyncpg.Connection, charge_id: str, *, skip_locked: bool
) -> StoredBankCharge | None:
    """The charge, locked for the caller's transaction (None when absent, or locked by
    another transaction and `skip_locked`)."""
    skip = " SKIP LOCKED" if skip_locked else ""
    row = await conn.fetchrow(
        f"SELECT {_CHARGE_COLUMNS} FROM bank_charges"  # noqa: S608 - constant SQL
        f" WHERE charge_id = $1 FOR UPDATE{skip}",
        charge_id,
    )
    return None if row is None else _charge(row)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt at the gateway: its number and idempotency key."""

    charge_id: str
    attempt: int
    idempotency_key: str
    automatic: bool


async def unknown_attempt(conn: asyncpg.Connection, charge_id: str) -> Attempt | None:
    """The charge's latest attempt when its outcome is unknown (a crash or a timeout)."""
    row = await conn.fetchrow(
        "SELECT charge_id, attempt, idempotency_key, automatic FROM bank_charge_attempts"
        " WHERE charge_id = $1 ORDER BY attempt DESC LIMIT 1",
        charge_id,
    )
    if row is None:
        return None
    last = Attempt(*row.values())
    outcome = await conn.fetchval(
        "SELECT outcome FROM bank_charge_attempts WHERE charge_id = $1 AND attempt = $2",
        charge_id,
        last.attempt,
    )
    return last if outcome == "unknown" else None


async def record_attempt(
    conn: asyncpg.Connection, attempt: Attempt, at: datetime, lease_until: datetime
) -> None:
    """Record an attempt before calling the gateway, and lease the charge meanwhile."""
    await conn.execute(
        "INSERT INTO bank_charge_attempts (charge_id, attempt, idempotency_key, automatic,"
        " started_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        attempt.charge_id,
        attempt.attempt,
        attempt.idempotency_key,
        attempt.automatic,
        at,
    )
    await conn.execute(
        "UPDATE bank_charges SET attempts = GREATEST(attempts, $2), next_attempt_at = $3,"
        " updated_at = $4 WHERE charge_id = $1",
        attempt.charge_id,
        attempt.attempt,
        lease_until,
        at,
    )


async def record_outcome(
    conn: asyncpg.Connection,
    attempt: Attempt,
    *,
    approved: bool,
    reason: str,
    reference: str,
    state: ChargeState,
    at: datetime,
) -> None:
    """Complete the attempt and write the charge's new state."""
    await conn.execute(
        "UPDATE bank_charge_attempts SET outcome = $3, reason = $4, reference = $5,"
        " finished_at = $6 WHERE charge_id = $1 AND attempt = $2",
        attempt.charge_id,
        attempt.attempt,
        "approved" if approved else "declined",
        reason,
        reference,
        at,
    )
    await conn.execute(
        "UPDATE bank_charges SET status = $2, retries = $3, first_declined_at = $4,"
        " next_attempt_at = $5, last_reason = $6,"
        " reference = CASE WHEN $7 = '' THEN reference ELSE $7 END, updated_at = $8"
        " WHERE charge_id = $1",
        attempt.charge_id,
        state.status.value,
        state.retries,
        state.first_declined_at,
        state.next_attempt_at,
        reason,
        reference,
        at,
    )


async def update_deny_list(
    conn: asyncpg.Connection, card_token: str, at: datetime, topic: str
) -> bool | None:
    """Queue an ADD or REMOVE when the card's debt state changed (its `bank_cards` row
    locked, so concurrent outcomes of one card decide in turn); the change, or None."""
    await conn.execute(
        "INSERT INTO bank_cards (card_token) VALUES ($1) ON CONFLICT DO NOTHING", card_token
    )
    listed = await conn.fetchval(
        "SELECT deny_listed FROM bank_cards WHERE card_token = $1 FOR UPDATE", card_token
    )
    statuses = [
        BankChargeStatus(r["status"])
        for r in await conn.fetch(
            "SELECT DISTINCT status FROM bank_charges WHERE card_token = $1", card_token
        )
    ]
    change = deny_list_change(bool(listed), statuses)
    if change is None:
        return None
    await conn.execute(
        "UPDATE bank_cards SET deny_listed = $2, updated_at = $3 WHERE card_token = $1",
        card_token,
        change,
        at,
    )
    await enqueue(conn, [deny_list_message(card_token, change, at, topic)])
    return change


class BankChargeRepository:
    """Reads of bank charges."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def charges_of(self, card_token: str, limit: int) -> list[StoredBankCharge]:
        """The card's charges, newest service day first, then newest charge first."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_CHARGE_COLUMNS} FROM bank_charges"  # noqa: S608 - constant
                " WHERE card_token = $1 ORDER BY service_day DESC, sequence DESC LIMIT $2",
                card_token,
                limit,
            )
        return [_charge(r) for r in rows]

    async def attempts_of(self, charge_id: str) -> list[tuple[int, str, str]]:
        """(attempt, idempotency key, outcome) of every attempt at the charge, in order."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT attempt, idempotency_key, outcome FROM bank_charge_attempts"
                " WHERE charge_id = $1 ORDER BY attempt",
                charge_id,
            )
        return [(r[0], r[1], r[2]) for r in rows]

    async def deny_listed(self, card_token: str) -> bool:
        """Whether the card is on the deny list for unpaid bank charges."""
        async with self.pool.acquire() as conn:
            value = await conn.fetchval(
                "SELECT deny_listed FROM bank_cards WHERE card_token = $1", card_token
            )
        return bool(value)
