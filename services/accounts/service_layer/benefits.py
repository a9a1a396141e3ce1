"""Benefits use cases for council officers and travellers (docs/benefits.md): the council's
schemes, granting, renewing, revoking and expiring entitlements with their audit trail,
the officers' report, and a traveller's own entitlements and their month ledger.

The officer is whoever the session token belongs to (`Travellers.authenticate`, the one
session check), holding the officer role of a council; the council is the role's, never a
request field. Service days come from the scheme's service-day clock; the clock is
injectable (tests move time forward to see grants expire).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Generic, TypeVar

import asyncpg

from clearway.consumer import RetryPolicy, back_off_after
from clearway.money import Money
from clearway.scheme.model import EntitlementScheme, Party, RewardRule, Scheme
from services.accounts.adapters import benefits_repository as repo
from services.accounts.adapters.benefits_repository import (
    AuditEntry,
    AuditRow,
    GrantRow,
    MovementRow,
    NewGrant,
    Officer,
)
from services.accounts.adapters.outbox import OutboxRelay
from services.accounts.domain.balance import IdempotencyKeyReusedError, check_idempotency_key
from services.accounts.domain.council_report import (
    SPEND_BY_CATEGORY,
    SPEND_BY_PROVIDER,
    TAKE_UP,
    Cell,
    ReportTable,
    budget_table,
    people_table,
)
from services.accounts.domain.entitlements import (
    AuditAction,
    Entitlement,
    EntitlementStatus,
    NotAnOfficerError,
    UnknownEntitlementError,
    UnknownEntitlementSchemeError,
    UnknownTravellerError,
    age_bands,
    age_on,
    allowance_due,
    band_of,
    check_eligible,
    check_note,
    grant_period,
    may_be_entitlement_id,
    month_of,
    month_start,
    next_month_start,
    parse_date_of_birth,
    parse_valid_from,
)
from services.accounts.domain.paging import (
    decode_movements_token,
    effective_page_size,
    encode_movements_token,
)
from services.accounts.domain.travellers import normal_email
from services.accounts.service_layer.concessions import RECONCILE_BATCH, CardConcessions
from services.accounts.service_layer.stored_value import ServiceDayClock
from services.accounts.service_layer.travellers import Travellers

log = logging.getLogger(__name__)

EXPIRY_SWEEP_S = 60.0
T = TypeVar("T")


@dataclass
class BenefitsContext:
    """What every benefits use case shares: the database, the scheme file, the session
    check, the service-day clock, the outbox relay and the cards' travel-pass concessions
    (published with every grant, renewal, revocation and expiry of a travel pass)."""

    pool: asyncpg.Pool
    scheme: Scheme
    travellers: Travellers
    day_clock: ServiceDayClock = field(default_factory=ServiceDayClock)
    relay: OutboxRelay | None = None
    benefits_topic: str = "benefits"
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    concessions: CardConcessions | None = None

    @property
    def currency(self) -> str:
        """The scheme's currency: every benefit is in it."""
        return self.scheme.currency

    def now(self) -> datetime:
        """The current instant (the injectable clock)."""
        return self.clock()

    def service_day(self, at: datetime) -> date:
        """The service day an instant belongs to."""
        return self.day_clock.service_day(at)

    def entitlement_scheme(self, scheme_id: str, day: date) -> EntitlementScheme | None:
        """Scheme `scheme_id` as in force on `day`, else as last declared (a grant of a
        scheme that has since ended is still shown)."""
        found = self.scheme.entitlement_scheme(scheme_id, day)
        if found is not None:
            return found
        declared = [e for e in self.scheme.entitlement_schemes if e.scheme_id == scheme_id]
        return declared[-1] if declared else None

    def party(self, party_id: str, day: date) -> Party | None:
        """Party `party_id` in force on `day`, else as last declared."""
        found = self.scheme.party(party_id, day)
        if found is not None:
            return found
        declared = [p for p in self.scheme.parties if p.party_id == party_id]
        return declared[-1] if declared else None

    async def officer(self, token: str | None) -> Officer:
        """The signed-in officer: NOT_SIGNED_IN without a live session, NOT_AN_OFFICER for
        an account with no officer role."""
        traveller_id = await self.travellers.authenticate(token)
        async with self.pool.acquire() as conn:
            found = await repo.officer_of(conn, traveller_id)
        if found is None:
            raise NotAnOfficerError("this account holds no council officer role")
        return found

    def relay_soon(self) -> None:
        """Something was queued in the outbox and committed."""
        if self.relay is not None:
            self.relay.notify()

    async def sync_concessions(self, conn: asyncpg.Connection, traveller_id: str, day: date) -> int:
        """In the caller's transaction, holding the account's row lock: the records that
        bring the account's cards' concessions to what its travel passes give; how many."""
        if self.concessions is None:
            return 0
        return await self.concessions.sync(conn, traveller_id, day)


@dataclass(frozen=True, slots=True)
class EntitlementView:
    """An entitlement as shown: with its scheme and what is left to spend this month."""

    entitlement: Entitlement
    scheme: EntitlementScheme | None
    status: EntitlementStatus
    balance_minor: int


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """What an officer asks to grant, with the evidence they verified."""

    traveller_email: str
    scheme_id: str
    date_of_birth: str
    residence_area: str
    evidence: str
    idempotency_key: str
    valid_from: str = ""  # YYYY-MM-DD, the application's day (at most 31 days back)


@dataclass(frozen=True, slots=True)
class GrantResult:
    """What GrantEntitlement answers (also on a retry with its key)."""

    view: EntitlementView
    replayed: bool


@dataclass(frozen=True, slots=True)
class SchemesOverview:
    """The council's schemes (with this month's budget use) and reward rules."""

    funder_id: str
    schemes: tuple[tuple[EntitlementScheme, int], ...]
    reward_rules: tuple[RewardRule, ...]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list, newest first."""

    items: tuple[T, ...]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class CouncilReport:
    """The officers' report of a month."""

    funder_id: str
    month: str
    tables: tuple[ReportTable, ...]


def _page(rows: Sequence[T], size: int, last_id: Callable[[T], int], binding: str) -> Page[T]:
    served = tuple(rows[:size])
    more = len(rows) > size and served
    token = encode_movements_token(last_id(served[-1]), binding) if more else ""
    return Page(served, token)


async def views(
    context: BenefitsContext,
    conn: asyncpg.Connection,
    entitlements: Sequence[Entitlement],
    day: date,
) -> list[EntitlementView]:
    """The entitlements with their status and month balance on `day` (an allowance not yet
    credited for the month counts as it will be when first spent)."""
    month = month_of(day)
    balances = await repo.month_balances(conn, [e.entitlement_id for e in entitlements], month)
    out = []
    for e in entitlements:
        scheme = context.entitlement_scheme(e.scheme_id, day)
        total, credited = balances.get(e.entitlement_id, (0, False))
        if not credited and scheme is not None:
            total += allowance_due(scheme, e, day)
        out.append(EntitlementView(e, scheme, e.status_on(day), total))
    return out


@dataclass
class Entitlements:
    """Officers' and travellers' use cases of entitlements."""

    context: BenefitsContext

    async def schemes(self, token: str | None) -> SchemesOverview:
        """The officer's council's schemes and reward rules in force today."""
        officer = await self.context.officer(token)
        day = self.context.service_day(self.context.now())
        schemes = self.context.scheme.entitlement_schemes_of(officer.funder_id, day)
        async with self.context.pool.acquire() as conn:
            used = await repo.budgets_used(conn, [s.scheme_id for s in schemes], month_of(day))
        rules = tuple(
            r for r in self.context.scheme.reward_rules_on(day) if r.funder_id == officer.funder_id
        )
        return SchemesOverview(
            officer.funder_id,
            tuple((s, used.get(s.scheme_id, 0)) for s in schemes),
            rules,
        )

    async def grant(self, token: str | None, request: GrantRequest) -> GrantResult:
        """Grant (or renew) an entitlement of the officer's council's scheme, once per
        officer and idempotency key."""
        context = self.context
        officer = await context.officer(token)
        key = check_idempotency_key(request.idempotency_key)
        at = context.now()
        day = context.service_day(at)
        earlier = await self._grant_by_key(officer, key, day)
        if earlier is not None:
            return self._replay(earlier, request)
        # A backdated grant (the application's day) is judged and runs from that day.
        start = parse_valid_from(request.valid_from, day)
        scheme = context.scheme.entitlement_scheme(request.scheme_id, start)
        if scheme is None or scheme.funder_id != officer.funder_id:
            raise UnknownEntitlementSchemeError("your council has no scheme with this id")
        email = normal_email(request.traveller_email)
        note = check_note(request.evidence, "evidence")
        born = parse_date_of_birth(request.date_of_birth, day)
        residence_area = request.residence_area
        check_eligible(scheme, born, residence_area, start)
        async with context.pool.acquire() as conn, conn.transaction():
            traveller_id = await repo.traveller_by_email(conn, email)
            if traveller_id is None:
                raise UnknownTravellerError("no traveller account has this email")
            await repo.lock_traveller(conn, traveller_id)
            await repo.expire_due(conn, day, at, traveller_id=traveller_id)
            held = [
                e
                for e in await repo.entitlements_of(conn, traveller_id)
                if e.scheme_id == scheme.scheme_id
            ]
            period = grant_period(scheme, held, start)
            grant = NewGrant(
                f"ent_{uuid.uuid4().hex}",
                traveller_id,
                scheme.scheme_id,
                scheme.funder_id,
                period.valid_from,
                period.valid_to,
                born,
                residence_area,
                note,
                officer.traveller_id,
                key,
                day,
                at,
            )
            stored = await repo.insert_grant(conn, grant)
            queued = 0
            if stored:
                queued = await context.sync_concessions(conn, traveller_id, day)
                action = AuditAction.RENEWED if period.renewal else AuditAction.GRANTED
                detail = (
                    f"{scheme.scheme_id} to {email}, valid {period.valid_from} to"
                    f" {period.valid_to}; residence {residence_area}; evidence: {note or '-'}"
                )
                await repo.add_audit(
                    conn,
                    AuditEntry(
                        scheme.funder_id, action, grant.entitlement_id, officer.email, detail, at
                    ),
                )
        if queued:
            context.relay_soon()
        if not stored:  # the same key, committed by a concurrent call in between
            again = await self._grant_by_key(officer, key, day)
            assert again is not None
            return self._replay(again, request)
        async with context.pool.acquire() as conn:
            made = await repo.entitlement(conn, grant.entitlement_id)
            assert made is not None
            (view,) = await views(context, conn, [made], day)
        return GrantResult(view, replayed=False)

    async def _grant_by_key(
        self, officer: Officer, key: str, day: date
    ) -> tuple[EntitlementView, str] | None:
        async with self.context.pool.acquire() as conn:
            earlier = await repo.grant_by_key(conn, officer.traveller_id, key)
            if earlier is None:
                return None
            email = await conn.fetchval(
                "SELECT email FROM travellers WHERE traveller_id = $1", earlier.traveller_id
            )
            (view,) = await views(self.context, conn, [earlier], day)
        return view, str(email)

    @staticmethod
    def _replay(earlier: tuple[EntitlementView, str], request: GrantRequest) -> GrantResult:
        view, email = earlier
        same = (email, view.entitlement.scheme_id) == (
            request.traveller_email.lower(),
            request.scheme_id,
        )
        if not same:
            raise IdempotencyKeyReusedError(
                "this idempotency_key was used for another grant; use a new key"
            )
        return GrantResult(view, replayed=True)

    async def revoke(self, token: str | None, entitlement_id: str, reason: str) -> EntitlementView:
        """Revoke one of the council's entitlements at once (again: unchanged)."""
        context = self.context
        officer = await context.officer(token)
        note = check_note(reason, "reason")
        at = context.now()
        day = context.service_day(at)
        queued = 0
        async with context.pool.acquire() as conn, conn.transaction():
            found = None
            if may_be_entitlement_id(entitlement_id):
                found = await repo.entitlement(conn, entitlement_id)
            if found is None or found.funder_id != officer.funder_id:
                raise UnknownEntitlementError("your council has no entitlement with this id")
            # The account first, as a grant locks it: its concessions change with this.
            await repo.lock_traveller(conn, found.traveller_id)
            found = await repo.entitlement(conn, found.entitlement_id, lock=True)
            assert found is not None
            await repo.expire_due(conn, day, at, traveller_id=found.traveller_id)
            if found.status_on(day) is EntitlementStatus.ACTIVE:
                await repo.revoke_entitlement(conn, found.entitlement_id, day)
                queued = await context.sync_concessions(conn, found.traveller_id, day)
                await repo.add_audit(
                    conn,
                    AuditEntry(
                        found.funder_id,
                        AuditAction.REVOKED,
                        found.entitlement_id,
                        officer.email,
                        f"{found.scheme_id}; reason: {note or '-'}",
                        at,
                    ),
                )
            now = await repo.entitlement(conn, found.entitlement_id)
            assert now is not None
            (view,) = await views(context, conn, [now], day)
        if queued:
            context.relay_soon()
        return view

    async def grants(
        self, token: str | None, page_size: int, page_token: str
    ) -> Page[tuple[GrantRow, EntitlementView]]:
        """The council's grants, newest first (the lazily due expiries written first)."""
        context = self.context
        officer = await context.officer(token)
        size = effective_page_size(page_size)
        binding = f"grants:{officer.funder_id}"
        before = decode_movements_token(page_token, binding)
        at = context.now()
        day = context.service_day(at)
        async with context.pool.acquire() as conn:
            async with conn.transaction():
                await repo.expire_due(conn, day, at, funder_id=officer.funder_id)
            rows = await repo.grants_page(conn, officer.funder_id, before, size + 1)
            shown = await views(context, conn, [r.entitlement for r in rows], day)
        page = _page(list(zip(rows, shown, strict=True)), size, lambda r: r[0].seq, binding)
        return page

    async def audit(self, token: str | None, page_size: int, page_token: str) -> Page[AuditRow]:
        """The council's audit trail, newest first."""
        context = self.context
        officer = await context.officer(token)
        size = effective_page_size(page_size)
        binding = f"audit:{officer.funder_id}"
        before = decode_movements_token(page_token, binding)
        at = context.now()
        async with context.pool.acquire() as conn:
            async with conn.transaction():
                await repo.expire_due(
                    conn, context.service_day(at), at, funder_id=officer.funder_id
                )
            rows = await repo.audit_page(conn, officer.funder_id, before, size + 1)
        return _page(rows, size, lambda r: r.event_id, binding)

    async def own(self, token: str | None) -> list[EntitlementView]:
        """The signed-in traveller's entitlements, newest first."""
        context = self.context
        traveller_id = await context.travellers.authenticate(token)
        at = context.now()
        day = context.service_day(at)
        async with context.pool.acquire() as conn:
            async with conn.transaction():
                await repo.expire_due(conn, day, at, traveller_id=traveller_id)
            held = await repo.entitlements_of(conn, traveller_id)
            shown = await views(context, conn, held, day)
        return shown[::-1]

    async def own_movements(
        self, token: str | None, entitlement_id: str, page_size: int, page_token: str
    ) -> Page[MovementRow]:
        """One of the signed-in traveller's entitlements' movements, newest first."""
        context = self.context
        traveller_id = await context.travellers.authenticate(token)
        size = effective_page_size(page_size)
        binding = f"entitlement:{entitlement_id}"
        before = decode_movements_token(page_token, binding)
        async with context.pool.acquire() as conn:
            found = None
            if may_be_entitlement_id(entitlement_id):
                found = await repo.entitlement(conn, entitlement_id)
            if found is None or found.traveller_id != traveller_id:
                raise UnknownEntitlementError("you hold no entitlement with this id")
            rows = await repo.movements_page(conn, found.entitlement_id, before, size + 1)
        return _page(rows, size, lambda r: r.movement_id, binding)

    async def expire_once(self) -> int:
        """Write EXPIRED for every grant due (with its audit line), and end the concessions
        of cards whose travel passes have ended (also publishing any a card lacks); how many
        grants expired."""
        context = self.context
        at = context.now()
        day = context.service_day(at)
        async with context.pool.acquire() as conn, conn.transaction():
            # The accounts' locks first (as a grant takes them), then the grants' rows.
            accounts, queued = await self._reconcile(conn, day)
            expired = await repo.expire_due(conn, day, at)
        more = queued
        while accounts == RECONCILE_BATCH and more:  # a backlog: the next batch
            async with context.pool.acquire() as conn, conn.transaction():
                accounts, more = await self._reconcile(conn, day)
            queued += more
        if queued:
            context.relay_soon()
        return expired

    async def _reconcile(self, conn: asyncpg.Connection, day: date) -> tuple[int, int]:
        if self.context.concessions is None:
            return 0, 0
        return await self.context.concessions.reconcile(conn, day)

    async def run_expiry(self, every_s: float = EXPIRY_SWEEP_S) -> None:
        """The periodic expiry sweep (a background task; failures are retried)."""
        delays = RetryPolicy().delays()
        while True:
            try:
                expired = await self.expire_once()
            except Exception as exc:
                await back_off_after("entitlement expiry sweep failed", exc, delays, log)
                continue
            delays = RetryPolicy().delays()
            if expired:
                log.info("entitlements expired", extra={"count": expired})
            await asyncio.sleep(every_s)

    async def report(self, token: str | None, month: str) -> CouncilReport:
        """The council's usage evidence for `month`, small cells suppressed."""
        context = self.context
        officer = await context.officer(token)
        first = month_start(month)
        after_last = next_month_start(month)
        funder = officer.funder_id
        async with context.pool.acquire() as conn:
            categories = await repo.spend_by(conn, funder, month, "category")
            providers = await repo.spend_by(conn, funder, month, "provider_id")
            by_scheme = await repo.spend_by(conn, funder, month, "scheme_id")
            in_force = await repo.grants_in_force(conn, funder, first, after_last)
        return CouncilReport(
            funder,
            month,
            (
                people_table(
                    SPEND_BY_CATEGORY,
                    ("category", "people", "redemptions", "amount"),
                    (Cell((r.key,), r.people, r.redemptions, r.amount_minor) for r in categories),
                ),
                people_table(
                    SPEND_BY_PROVIDER,
                    ("provider", "name", "people", "redemptions", "amount"),
                    (
                        Cell(
                            (r.key, self._party_name(r.key, first)),
                            r.people,
                            r.redemptions,
                            r.amount_minor,
                        )
                        for r in providers
                    ),
                ),
                self._budget(funder, first, {r.key: r.amount_minor for r in by_scheme}),
                self._take_up(in_force, first),
            ),
        )

    def _party_name(self, party_id: str, day: date) -> str:
        party = self.context.party(party_id, day)
        return party.name if party is not None else party_id

    def _budget(self, funder_id: str, first: date, used: dict[str, int]) -> ReportTable:
        schemes = {
            s.scheme_id: s for s in self.context.scheme.entitlement_schemes_of(funder_id, first)
        }
        for scheme_id in used:
            found = self.context.entitlement_scheme(scheme_id, first)
            if found is not None:
                schemes.setdefault(scheme_id, found)
        currency = self.context.currency
        return budget_table(
            Cell(
                (s.scheme_id, s.name, str(Money(s.monthly_budget_minor, currency))),
                0,
                0,
                used.get(s.scheme_id, 0),
            )
            for s in schemes.values()
        )

    def _take_up(self, in_force: Sequence[repo.TakeUpRow], first: date) -> ReportTable:
        people: dict[tuple[str, str], set[str]] = defaultdict(set)
        for row in in_force:
            scheme = self.context.entitlement_scheme(row.scheme_id, first)
            if scheme is None:
                continue
            age = age_on(row.date_of_birth, max(first, row.valid_from))
            band = band_of(age_bands(scheme), age)
            people[(row.scheme_id, band.label)].add(row.traveller_id)
        return people_table(
            TAKE_UP,
            ("scheme", "age band", "people"),
            (Cell(labels, len(who)) for labels, who in people.items()),
        )
