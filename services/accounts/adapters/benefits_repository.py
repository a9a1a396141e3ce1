"""PostgreSQL store of benefits (docs/benefits.md): officers, provider devices,
entitlements and their month ledger, the councils' monthly budgets, redemptions, rewards
and the audit trail.

Every write runs on a connection inside the caller's transaction, so a redemption, its
entitlement movement, its budget use and its `BenefitPosting` in the outbox commit
together or not at all. Nothing here logs a card token or a date of birth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from clearway.money import Money
from services.accounts.domain.entitlements import (
    AuditAction,
    Entitlement,
    EntitlementMovementKind,
    EntitlementStatus,
)
from services.accounts.domain.redemptions import ProviderDevice, StoredRedemption

SYSTEM_ACTOR = "service/accounts"

# Appended to the service's MIGRATIONS (adapters.journey_repository).
BENEFITS_MIGRATION = """
ALTER TABLE balance_movements DROP CONSTRAINT balance_movements_kind_check;
ALTER TABLE balance_movements ADD CONSTRAINT balance_movements_kind_check
    CHECK (kind IN ('top_up', 'journey', 'reward'));
CREATE TABLE officers (
    traveller_id  text COLLATE "C" PRIMARY KEY REFERENCES travellers,
    funder_id     text NOT NULL,
    added_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE provider_devices (
    device_id      text COLLATE "C" PRIMARY KEY,
    provider_id    text NOT NULL,
    key_id         text NOT NULL,
    public_key     bytea NOT NULL,
    revoked        boolean NOT NULL DEFAULT false,
    registered_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz
);
CREATE TABLE entitlements (
    seq              bigserial UNIQUE,
    entitlement_id   text COLLATE "C" PRIMARY KEY,
    traveller_id     text COLLATE "C" NOT NULL REFERENCES travellers,
    scheme_id        text NOT NULL,
    funder_id        text NOT NULL,
    status           text NOT NULL CHECK (status IN ('active', 'expired', 'revoked')),
    valid_from       date NOT NULL,
    valid_to         date NOT NULL CHECK (valid_to > valid_from),
    date_of_birth    date NOT NULL,
    residence_area   text NOT NULL,
    evidence         text NOT NULL DEFAULT '',
    granted_by       text COLLATE "C" NOT NULL,
    idempotency_key  text COLLATE "C" NOT NULL,
    granted_on       date NOT NULL,
    granted_at       timestamptz NOT NULL,
    revoked_on       date,
    UNIQUE (granted_by, idempotency_key)
);
CREATE INDEX entitlements_of ON entitlements (traveller_id);
CREATE INDEX entitlements_of_funder ON entitlements (funder_id, seq DESC);
CREATE INDEX entitlements_due ON entitlements (valid_to) WHERE status = 'active';
CREATE TABLE entitlement_movements (
    movement_id     bigserial PRIMARY KEY,
    entitlement_id  text COLLATE "C" NOT NULL REFERENCES entitlements,
    kind            text NOT NULL CHECK (kind IN ('allowance', 'redemption', 'reward')),
    source_id       text COLLATE "C" NOT NULL,
    month           text NOT NULL,
    amount_minor    bigint NOT NULL,
    currency        text NOT NULL,
    provider_id     text NOT NULL DEFAULT '',
    category        text NOT NULL DEFAULT '',
    at              timestamptz NOT NULL,
    UNIQUE (entitlement_id, kind, source_id)
);
CREATE INDEX entitlement_movements_of ON entitlement_movements (entitlement_id, movement_id DESC);
CREATE TABLE benefit_budgets (
    scheme_id   text NOT NULL,
    month       text NOT NULL,
    used_minor  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (scheme_id, month)
);
CREATE TABLE redemptions (
    redemption_id        text COLLATE "C" PRIMARY KEY,
    provider_id          text NOT NULL,
    idempotency_key      text COLLATE "C" NOT NULL,
    device_id            text NOT NULL,
    card_token           text COLLATE "C" NOT NULL,
    traveller_id         text COLLATE "C" NOT NULL,
    entitlement_id       text COLLATE "C" NOT NULL REFERENCES entitlements,
    scheme_id            text NOT NULL,
    funder_id            text NOT NULL,
    category             text NOT NULL,
    amount_minor         bigint NOT NULL CHECK (amount_minor > 0),
    currency             text NOT NULL,
    service_day          date NOT NULL,
    month                text NOT NULL,
    balance_after_minor  bigint NOT NULL,
    at                   timestamptz NOT NULL,
    UNIQUE (provider_id, idempotency_key)
);
CREATE INDEX redemptions_of_funder ON redemptions (funder_id, month);
CREATE TABLE rewards (
    reward_id        text COLLATE "C" PRIMARY KEY,
    rule_id          text NOT NULL,
    funder_id        text NOT NULL,
    subject          text COLLATE "C" NOT NULL,
    period           text NOT NULL,
    traveller_id     text COLLATE "C",
    card_token       text COLLATE "C",
    entitlement_id   text COLLATE "C",
    amount_minor     bigint NOT NULL CHECK (amount_minor > 0),
    currency         text NOT NULL,
    service_day      date NOT NULL,
    granted_by       text COLLATE "C" NOT NULL,
    idempotency_key  text COLLATE "C" NOT NULL,
    at               timestamptz NOT NULL,
    UNIQUE (rule_id, subject, period),
    UNIQUE (granted_by, idempotency_key)
);
CREATE TABLE benefit_audit (
    event_id        bigserial PRIMARY KEY,
    funder_id       text NOT NULL,
    action          text NOT NULL,
    entitlement_id  text COLLATE "C" NOT NULL DEFAULT '',
    actor           text NOT NULL,
    detail          text NOT NULL DEFAULT '',
    at              timestamptz NOT NULL
);
CREATE UNIQUE INDEX benefit_audit_expired_once ON benefit_audit (entitlement_id)
    WHERE action = 'expired';
CREATE INDEX benefit_audit_of ON benefit_audit (funder_id, event_id DESC);
"""

_ENTITLEMENT_COLUMNS = """
e.entitlement_id, e.traveller_id, e.scheme_id, e.funder_id, e.status, e.valid_from,
e.valid_to, e.granted_at, e.granted_by
"""


def _entitlement(row: asyncpg.Record) -> Entitlement:
    return Entitlement(
        row["entitlement_id"],
        row["traveller_id"],
        row["scheme_id"],
        row["funder_id"],
        EntitlementStatus(row["status"]),
        row["valid_from"],
        row["valid_to"],
        row["granted_at"],
        row["granted_by"],
    )


# -- accounts, officers, devices ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Officer:
    """A signed-in council officer."""

    traveller_id: str
    funder_id: str
    email: str


async def traveller_by_email(conn: asyncpg.Connection, email: str) -> str | None:
    """The account id of `email` (already normalised)."""
    value = await conn.fetchval("SELECT traveller_id FROM travellers WHERE email = $1", email)
    return None if value is None else str(value)


async def officer_of(conn: asyncpg.Connection, traveller_id: str) -> Officer | None:
    """The officer role the account holds, if any."""
    row = await conn.fetchrow(
        "SELECT o.traveller_id, o.funder_id, t.email FROM officers o"
        " JOIN travellers t USING (traveller_id) WHERE o.traveller_id = $1",
        traveller_id,
    )
    return None if row is None else Officer(row[0], row[1], row[2])


async def set_officer(conn: asyncpg.Connection, traveller_id: str, funder_id: str) -> None:
    """Give the account the officer role of `funder_id` (moving it from another council)."""
    await conn.execute(
        "INSERT INTO officers (traveller_id, funder_id) VALUES ($1, $2)"
        " ON CONFLICT (traveller_id) DO UPDATE SET funder_id = excluded.funder_id",
        traveller_id,
        funder_id,
    )


async def delete_officer(conn: asyncpg.Connection, traveller_id: str) -> bool:
    """Take the officer role away; False when the account held none."""
    status = await conn.execute("DELETE FROM officers WHERE traveller_id = $1", traveller_id)
    return bool(status != "DELETE 0")


_DEVICE_COLUMNS = "device_id, provider_id, key_id, public_key, revoked, registered_at"


def _device(row: asyncpg.Record) -> ProviderDevice:
    return ProviderDevice(
        row["device_id"],
        row["provider_id"],
        row["key_id"],
        bytes(row["public_key"]),
        row["revoked"],
        row["registered_at"],
    )


async def device(conn: asyncpg.Connection, device_id: str) -> ProviderDevice | None:
    """The registered device `device_id`."""
    row = await conn.fetchrow(
        f"SELECT {_DEVICE_COLUMNS} FROM provider_devices WHERE device_id = $1",  # noqa: S608
        device_id,
    )
    return None if row is None else _device(row)


async def devices(conn: asyncpg.Connection) -> list[ProviderDevice]:
    """Every registered device, by id."""
    rows = await conn.fetch(
        f"SELECT {_DEVICE_COLUMNS} FROM provider_devices ORDER BY device_id"  # noqa: S608
    )
    return [_device(r) for r in rows]


async def insert_device(
    conn: asyncpg.Connection, device_id: str, provider_id: str, key_id: str, public_key: bytes
) -> bool:
    """Register a device; False when the id is taken."""
    row = await conn.fetchrow(
        "INSERT INTO provider_devices (device_id, provider_id, key_id, public_key)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (device_id) DO NOTHING RETURNING device_id",
        device_id,
        provider_id,
        key_id,
        public_key,
    )
    return row is not None


async def revoke_device(conn: asyncpg.Connection, device_id: str, at: datetime) -> None:
    """Revoke the device (for good)."""
    await conn.execute(
        "UPDATE provider_devices SET revoked = true, revoked_at = coalesce(revoked_at, $2)"
        " WHERE device_id = $1",
        device_id,
        at,
    )


# -- entitlements and the audit trail --------------------------------------------------


async def lock_traveller(conn: asyncpg.Connection, traveller_id: str) -> None:
    """Serialise grants to one account (two officers granting at once)."""
    await conn.execute(
        "SELECT 1 FROM travellers WHERE traveller_id = $1 FOR NO KEY UPDATE", traveller_id
    )


async def entitlements_of(
    conn: asyncpg.Connection, traveller_id: str, *, lock: bool = False
) -> list[Entitlement]:
    """The account's entitlements, oldest first (row-locked when `lock`)."""
    rows = await conn.fetch(
        f"SELECT {_ENTITLEMENT_COLUMNS} FROM entitlements e"  # noqa: S608 - constant columns
        " WHERE e.traveller_id = $1 ORDER BY e.seq" + (" FOR UPDATE" if lock else ""),
        traveller_id,
    )
    return [_entitlement(r) for r in rows]


async def entitlement(
    conn: asyncpg.Connection, entitlement_id: str, *, lock: bool = False
) -> Entitlement | None:
    """One entitlement (row-locked when `lock`)."""
    row = await conn.fetchrow(
        f"SELECT {_ENTITLEMENT_COLUMNS} FROM entitlements e"  # noqa: S608
        " WHERE e.entitlement_id = $1" + (" FOR UPDATE" if lock else ""),
        entitlement_id,
    )
    return None if row is None else _entitlement(row)


@dataclass(frozen=True, slots=True)
class NewGrant:
    """What a grant stores (the date of birth only here, never in the audit trail)."""

    entitlement_id: str
    traveller_id: str
    scheme_id: str
    funder_id: str
    valid_from: date
    valid_to: date
    date_of_birth: date
    residence_area: str
    evidence: str
    granted_by: str
    idempotency_key: str
    granted_on: date
    granted_at: datetime


async def insert_grant(conn: asyncpg.Connection, grant: NewGrant) -> bool:
    """Store a grant; False when the officer's idempotency key is taken."""
    row = await conn.fetchrow(
        "INSERT INTO entitlements (entitlement_id, traveller_id, scheme_id, funder_id, status,"
        " valid_from, valid_to, date_of_birth, residence_area, evidence, granted_by,"
        " idempotency_key, granted_on, granted_at)"
        " VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        " ON CONFLICT (granted_by, idempotency_key) DO NOTHING RETURNING entitlement_id",
        grant.entitlement_id,
        grant.traveller_id,
        grant.scheme_id,
        grant.funder_id,
        grant.valid_from,
        grant.valid_to,
        grant.date_of_birth,
        grant.residence_area,
        grant.evidence,
        grant.granted_by,
        grant.idempotency_key,
        grant.granted_on,
        grant.granted_at,
    )
    return row is not None


async def grant_by_key(
    conn: asyncpg.Connection, granted_by: str, idempotency_key: str
) -> Entitlement | None:
    """The grant an officer made under `idempotency_key`."""
    row = await conn.fetchrow(
        f"SELECT {_ENTITLEMENT_COLUMNS} FROM entitlements e"  # noqa: S608
        " WHERE e.granted_by = $1 AND e.idempotency_key = $2",
        granted_by,
        idempotency_key,
    )
    return None if row is None else _entitlement(row)


async def revoke_entitlement(conn: asyncpg.Connection, entitlement_id: str, day: date) -> None:
    """Mark the entitlement revoked from service day `day`."""
    await conn.execute(
        "UPDATE entitlements SET status = 'revoked', revoked_on = $2 WHERE entitlement_id = $1",
        entitlement_id,
        day,
    )


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit trail, to write."""

    funder_id: str
    action: AuditAction
    entitlement_id: str
    actor: str
    detail: str
    at: datetime


async def add_audit(conn: asyncpg.Connection, entry: AuditEntry) -> None:
    """Write one line of the audit trail."""
    await conn.execute(
        "INSERT INTO benefit_audit (funder_id, action, entitlement_id, actor, detail, at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        entry.funder_id,
        entry.action.value,
        entry.entitlement_id,
        entry.actor,
        entry.detail,
        entry.at,
    )


_EXPIRE = """
WITH due AS (
    UPDATE entitlements SET status = 'expired'
    WHERE status = 'active' AND valid_to <= $1
      AND ($3::text IS NULL OR traveller_id = $3)
      AND ($4::text IS NULL OR funder_id = $4)
    RETURNING entitlement_id, funder_id, scheme_id, valid_to
)
INSERT INTO benefit_audit (funder_id, action, entitlement_id, actor, detail, at)
SELECT funder_id, 'expired', entitlement_id, $5,
       'scheme ' || scheme_id || ', valid until ' || valid_to::text, $2
FROM due
ON CONFLICT DO NOTHING
"""


async def expire_due(
    conn: asyncpg.Connection,
    day: date,
    at: datetime,
    *,
    traveller_id: str | None = None,
    funder_id: str | None = None,
) -> int:
    """Mark EXPIRED the active grants whose `valid_to` has come by service day `day` (of
    one account or council, or all), each with its EXPIRED audit line, once; how many."""
    status = await conn.execute(_EXPIRE, day, at, traveller_id, funder_id, SYSTEM_ACTOR)
    return int(status.split()[-1])


@dataclass(frozen=True, slots=True)
class GrantRow:
    """A grant as officers list it."""

    seq: int
    entitlement: Entitlement
    traveller_email: str
    granted_by_email: str


async def grants_page(
    conn: asyncpg.Connection, funder_id: str, before_seq: int | None, limit: int
) -> list[GrantRow]:
    """Up to `limit` of the council's grants, newest first, before `before_seq`."""
    rows = await conn.fetch(
        f"SELECT e.seq, {_ENTITLEMENT_COLUMNS}, t.email AS traveller_email,"  # noqa: S608
        " coalesce(o.email, e.granted_by) AS officer_email FROM entitlements e"
        " JOIN travellers t ON t.traveller_id = e.traveller_id"
        " LEFT JOIN travellers o ON o.traveller_id = e.granted_by"
        " WHERE e.funder_id = $1 AND ($2::bigint IS NULL OR e.seq < $2)"
        " ORDER BY e.seq DESC LIMIT $3",
        funder_id,
        before_seq,
        limit,
    )
    return [
        GrantRow(r["seq"], _entitlement(r), r["traveller_email"], r["officer_email"]) for r in rows
    ]


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One line of the audit trail."""

    event_id: int
    at: datetime
    action: AuditAction
    entitlement_id: str
    actor: str
    detail: str


async def audit_page(
    conn: asyncpg.Connection, funder_id: str, before_id: int | None, limit: int
) -> list[AuditRow]:
    """Up to `limit` of the council's audit lines, newest first, before `before_id`."""
    rows = await conn.fetch(
        "SELECT event_id, at, action, entitlement_id, actor, detail FROM benefit_audit"
        " WHERE funder_id = $1 AND ($2::bigint IS NULL OR event_id < $2)"
        " ORDER BY event_id DESC LIMIT $3",
        funder_id,
        before_id,
        limit,
    )
    return [AuditRow(r[0], r[1], AuditAction(r[2]), r[3], r[4], r[5]) for r in rows]


# -- the month ledger and the budgets --------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewMovement:
    """An entitlement movement, to write (signed: redemptions negative)."""

    entitlement_id: str
    kind: EntitlementMovementKind
    source_id: str  # the month for an allowance; the redemption or reward id
    month: str
    amount: Money
    at: datetime
    provider_id: str = ""
    category: str = ""


async def add_movement(conn: asyncpg.Connection, move: NewMovement) -> bool:
    """Write a movement once per (entitlement, kind, source); False when it was there
    already (an allowance already credited for the month)."""
    row = await conn.fetchrow(
        "INSERT INTO entitlement_movements (entitlement_id, kind, source_id, month,"
        " amount_minor, currency, provider_id, category, at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (entitlement_id, kind, source_id) DO NOTHING RETURNING movement_id",
        move.entitlement_id,
        move.kind.value,
        move.source_id,
        move.month,
        move.amount.amount_minor,
        move.amount.currency,
        move.provider_id,
        move.category,
        move.at,
    )
    return row is not None


async def month_balances(
    conn: asyncpg.Connection, entitlement_ids: Sequence[str], month: str
) -> dict[str, tuple[int, bool]]:
    """Per entitlement: (the sum of its movements of `month`, whether its allowance for
    the month is credited yet)."""
    rows = await conn.fetch(
        "SELECT entitlement_id, coalesce(sum(amount_minor), 0) AS total,"
        " bool_or(kind = 'allowance') AS credited FROM entitlement_movements"
        " WHERE entitlement_id = ANY($1::text[]) AND month = $2 GROUP BY entitlement_id",
        list(entitlement_ids),
        month,
    )
    return {r["entitlement_id"]: (int(r["total"]), bool(r["credited"])) for r in rows}


@dataclass(frozen=True, slots=True)
class MovementRow:
    """One line of an entitlement's ledger."""

    movement_id: int
    kind: EntitlementMovementKind
    month: str
    amount: Money
    provider_id: str
    category: str
    at: datetime


async def movements_page(
    conn: asyncpg.Connection, entitlement_id: str, before_id: int | None, limit: int
) -> list[MovementRow]:
    """Up to `limit` of the entitlement's movements, newest first, before `before_id`."""
    rows = await conn.fetch(
        "SELECT movement_id, kind, month, amount_minor, currency, provider_id, category, at"
        " FROM entitlement_movements"
        " WHERE entitlement_id = $1 AND ($2::bigint IS NULL OR movement_id < $2)"
        " ORDER BY movement_id DESC LIMIT $3",
        entitlement_id,
        before_id,
        limit,
    )
    return [
        MovementRow(
            r["movement_id"],
            EntitlementMovementKind(r["kind"]),
            r["month"],
            Money(r["amount_minor"], r["currency"]),
            r["provider_id"],
            r["category"],
            r["at"],
        )
        for r in rows
    ]


async def lock_budget(conn: asyncpg.Connection, scheme_id: str, month: str) -> int:
    """What the scheme's budget of `month` has paid so far, its row locked until commit
    (so two redemptions can never both take the last of it)."""
    await conn.execute(
        "INSERT INTO benefit_budgets (scheme_id, month) VALUES ($1, $2)"
        " ON CONFLICT (scheme_id, month) DO NOTHING",
        scheme_id,
        month,
    )
    used = await conn.fetchval(
        "SELECT used_minor FROM benefit_budgets WHERE scheme_id = $1 AND month = $2 FOR UPDATE",
        scheme_id,
        month,
    )
    return int(used)


async def use_budget(
    conn: asyncpg.Connection, scheme_id: str, month: str, amount_minor: int
) -> None:
    """Add a redemption to the scheme's budget use of `month` (its row locked before)."""
    await conn.execute(
        "UPDATE benefit_budgets SET used_minor = used_minor + $3"
        " WHERE scheme_id = $1 AND month = $2",
        scheme_id,
        month,
        amount_minor,
    )


async def budgets_used(
    conn: asyncpg.Connection, scheme_ids: Sequence[str], month: str
) -> dict[str, int]:
    """What each scheme's budget of `month` has paid."""
    rows = await conn.fetch(
        "SELECT scheme_id, used_minor FROM benefit_budgets"
        " WHERE scheme_id = ANY($1::text[]) AND month = $2",
        list(scheme_ids),
        month,
    )
    return {r[0]: int(r[1]) for r in rows}


# -- redemptions -------------------------------------------------------------------------


async def card_owner(conn: asyncpg.Connection, card_token: str) -> str | None:
    """The account that owns the card."""
    value = await conn.fetchval(
        "SELECT traveller_id FROM traveller_cards WHERE card_token = $1", card_token
    )
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class NewRedemption:
    """What an authorised redemption stores."""

    redemption: StoredRedemption
    idempotency_key: str
    device_id: str
    traveller_id: str
    month: str
    at: datetime


async def insert_redemption(conn: asyncpg.Connection, new: NewRedemption) -> bool:
    """Store a redemption; False when the provider's idempotency key is taken."""
    r = new.redemption
    row = await conn.fetchrow(
        "INSERT INTO redemptions (redemption_id, provider_id, idempotency_key, device_id,"
        " card_token, traveller_id, entitlement_id, scheme_id, funder_id, category,"
        " amount_minor, currency, service_day, month, balance_after_minor, at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        " ON CONFLICT DO NOTHING RETURNING redemption_id",
        r.redemption_id,
        r.provider_id,
        new.idempotency_key,
        new.device_id,
        r.card_token,
        new.traveller_id,
        r.entitlement_id,
        r.scheme_id,
        r.funder_id,
        r.category,
        r.amount.amount_minor,
        r.amount.currency,
        r.service_day,
        new.month,
        r.balance_after_minor,
        new.at,
    )
    return row is not None


async def redemption_by_key(
    conn: asyncpg.Connection, provider_id: str, idempotency_key: str
) -> StoredRedemption | None:
    """The provider's redemption recorded under `idempotency_key`."""
    row = await conn.fetchrow(
        "SELECT redemption_id, provider_id, card_token, category, amount_minor, currency,"
        " entitlement_id, scheme_id, funder_id, service_day, balance_after_minor"
        " FROM redemptions WHERE provider_id = $1 AND idempotency_key = $2",
        provider_id,
        idempotency_key,
    )
    if row is None:
        return None
    return StoredRedemption(
        row["redemption_id"],
        row["provider_id"],
        row["card_token"],
        row["category"],
        Money(row["amount_minor"], row["currency"]),
        row["entitlement_id"],
        row["scheme_id"],
        row["funder_id"],
        row["service_day"],
        row["balance_after_minor"],
    )


# -- rewards -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredReward:
    """A reward as recorded."""

    reward_id: str
    rule_id: str
    funder_id: str
    subject: str
    period: str
    amount: Money
    granted_by: str
    idempotency_key: str


async def insert_reward(
    conn: asyncpg.Connection,
    reward: StoredReward,
    *,
    traveller_id: str | None,
    card_token: str | None,
    entitlement_id: str | None,
    service_day: date,
    at: datetime,
) -> bool:
    """Store a reward; False when the rule rewarded the subject in the period already, or
    the key is taken (`reward_conflict` says which)."""
    row = await conn.fetchrow(
        "INSERT INTO rewards (reward_id, rule_id, funder_id, subject, period, traveller_id,"
        " card_token, entitlement_id, amount_minor, currency, service_day, granted_by,"
        " idempotency_key, at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        " ON CONFLICT DO NOTHING RETURNING reward_id",
        reward.reward_id,
        reward.rule_id,
        reward.funder_id,
        reward.subject,
        reward.period,
        traveller_id,
        card_token,
        entitlement_id,
        reward.amount.amount_minor,
        reward.amount.currency,
        service_day,
        reward.granted_by,
        reward.idempotency_key,
        at,
    )
    return row is not None


_REWARD_COLUMNS = (
    "reward_id, rule_id, funder_id, subject, period, amount_minor, currency, granted_by,"
    " idempotency_key"
)


def _reward(row: asyncpg.Record) -> StoredReward:
    return StoredReward(
        row["reward_id"],
        row["rule_id"],
        row["funder_id"],
        row["subject"],
        row["period"],
        Money(row["amount_minor"], row["currency"]),
        row["granted_by"],
        row["idempotency_key"],
    )


async def reward_by_key(
    conn: asyncpg.Connection, granted_by: str, idempotency_key: str
) -> StoredReward | None:
    """The reward an officer granted under `idempotency_key`."""
    row = await conn.fetchrow(
        f"SELECT {_REWARD_COLUMNS} FROM rewards"  # noqa: S608 - constant columns
        " WHERE granted_by = $1 AND idempotency_key = $2",
        granted_by,
        idempotency_key,
    )
    return None if row is None else _reward(row)


async def claim_rewards(
    conn: asyncpg.Connection, rewards: Sequence[tuple[StoredReward, str, date, datetime]]
) -> set[str]:
    """Store off-peak rewards (reward, card token, service day, time) not earned before in
    their period; the ids stored now."""
    if not rewards:
        return set()
    rows = await conn.fetch(
        "INSERT INTO rewards (reward_id, rule_id, funder_id, subject, period, card_token,"
        " amount_minor, currency, service_day, granted_by, idempotency_key, at)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
        " $6::text[], $7::bigint[], $8::text[], $9::date[], $10::text[], $11::text[],"
        " $12::timestamptz[])"
        " ON CONFLICT DO NOTHING RETURNING reward_id",
        [r.reward_id for r, _, _, _ in rewards],
        [r.rule_id for r, _, _, _ in rewards],
        [r.funder_id for r, _, _, _ in rewards],
        [r.subject for r, _, _, _ in rewards],
        [r.period for r, _, _, _ in rewards],
        [card for _, card, _, _ in rewards],
        [r.amount.amount_minor for r, _, _, _ in rewards],
        [r.amount.currency for r, _, _, _ in rewards],
        [day for _, _, day, _ in rewards],
        [r.granted_by for r, _, _, _ in rewards],
        [r.idempotency_key for r, _, _, _ in rewards],
        [at for _, _, _, at in rewards],
    )
    return {r["reward_id"] for r in rows}


async def first_scheme_card(conn: asyncpg.Connection, traveller_id: str) -> str | None:
    """The account's first-added card that holds stored value (not a bank card)."""
    value = await conn.fetchval(
        "SELECT card_token FROM traveller_cards WHERE traveller_id = $1 AND form <> 'bk_'"
        ' ORDER BY added_at, card_token COLLATE "C" LIMIT 1',
        traveller_id,
    )
    return None if value is None else str(value)


# -- the council report ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpendRow:
    """Redemptions of a council's schemes in a month, grouped by one column."""

    key: str
    people: int
    redemptions: int
    amount_minor: int


async def spend_by(
    conn: asyncpg.Connection, funder_id: str, month: str, column: str
) -> list[SpendRow]:
    """The month's redemptions of the council grouped by `column` (category, provider_id
    or scheme_id): distinct people, redemptions, amount."""
    if column not in ("category", "provider_id", "scheme_id"):  # pragma: no cover
        raise ValueError(column)
    rows = await conn.fetch(
        f"SELECT {column}, count(DISTINCT traveller_id), count(*), sum(amount_minor)"  # noqa: S608
        " FROM redemptions WHERE funder_id = $1 AND month = $2"
        f" GROUP BY {column}",
        funder_id,
        month,
    )
    return [SpendRow(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]


@dataclass(frozen=True, slots=True)
class TakeUpRow:
    """A grant in force during the report's month: whose, and their date of birth."""

    scheme_id: str
    traveller_id: str
    date_of_birth: date
    valid_from: date


async def grants_in_force(
    conn: asyncpg.Connection, funder_id: str, first: date, after_last: date
) -> list[TakeUpRow]:
    """The council's grants valid on some day of [first, after_last) and not revoked
    before it."""
    rows = await conn.fetch(
        "SELECT scheme_id, traveller_id, date_of_birth, valid_from FROM entitlements"
        " WHERE funder_id = $1 AND valid_from < $3 AND valid_to > $2"
        " AND (revoked_on IS NULL OR revoked_on > $2)",
        funder_id,
        first,
        after_last,
    )
    return [TakeUpRow(r[0], r[1], r[2], r[3]) for r in rows]
