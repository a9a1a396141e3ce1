"""Accounts' benefits services over gRPC: a traveller's entitlements (BenefitsService) and a
council officer's pages (OfficerService), with the caller's session as a bearer token.

Refusals and outages are mapped as for the rest of accounts (`call_accounts`). The council
of an officer comes from their session in accounts, never from anything the portal sends.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from clearway.benefits.v1 import benefits_pb2, benefits_pb2_grpc
from clearway.money import Money
from services.portal.adapters.accounts import bearer, call_accounts, money_of, time_of
from services.portal.domain.council_report import (
    CouncilReportView,
    ReportRowView,
    ReportTableView,
)
from services.portal.domain.entitlements import (
    AuditEventView,
    CouncilView,
    EntitlementMovementKind,
    EntitlementMovementView,
    EntitlementStatus,
    EntitlementView,
    GrantView,
    RewardRuleView,
    SchemeView,
)


@dataclass(frozen=True, slots=True)
class EntitlementMovementPage:
    """One page of an entitlement's movements, newest first."""

    movements: list[EntitlementMovementView]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class GrantPage:
    """One page of the council's grants, newest first."""

    grants: list[GrantView]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of the council's audit trail, newest first."""

    events: list[AuditEventView]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """What an officer verified and grants (the idempotency key: one per form render)."""

    traveller_email: str
    scheme_id: str
    date_of_birth: str
    residence_area: str
    evidence: str
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class GrantResult:
    """The entitlement granted, and whether this form had been sent already."""

    entitlement: EntitlementView
    replayed: bool


@dataclass(frozen=True, slots=True)
class RewardResult:
    """A reward credited: its amount, the period it counts against, whether replayed."""

    reward_id: str
    amount: Money
    period: str
    replayed: bool


def _status(text: str) -> EntitlementStatus:
    try:
        return EntitlementStatus(text.upper())
    except ValueError:
        return EntitlementStatus.OTHER


def _kind(text: str) -> EntitlementMovementKind:
    try:
        return EntitlementMovementKind(text.upper())
    except ValueError:
        return EntitlementMovementKind.OTHER


def entitlement_view(e: benefits_pb2.Entitlement, currency: str = "GBP") -> EntitlementView:
    """The portal's view of an Entitlement."""
    currency = e.allowance_per_month.currency or e.balance.currency or currency
    return EntitlementView(
        entitlement_id=e.entitlement_id,
        scheme_id=e.scheme_id,
        scheme_name=e.scheme_name or e.scheme_id,
        funder_id=e.funder_id,
        status=_status(e.status),
        valid_from=e.valid_from,
        valid_to=e.valid_to,
        balance=money_of(e.balance, currency),
        allowance_per_month=money_of(e.allowance_per_month, currency),
        categories=tuple(e.categories),
        per_visit_limit=money_of(e.per_visit_limit, currency),
        rider_category=e.rider_category,
        renewal_opens=e.renewal_opens,
        granted_at=time_of(e.granted_at, e.HasField("granted_at")),
    )


def scheme_view(s: benefits_pb2.EntitlementScheme, currency: str = "GBP") -> SchemeView:
    """The portal's view of one of the council's schemes."""
    currency = s.monthly_budget.currency or s.allowance_per_month.currency or currency
    return SchemeView(
        scheme_id=s.scheme_id,
        name=s.name or s.scheme_id,
        kind=s.kind,
        allowance_per_month=money_of(s.allowance_per_month, currency),
        categories=tuple(s.categories),
        per_visit_limit=money_of(s.per_visit_limit, currency),
        rider_category=s.rider_category,
        min_age=s.min_age,
        max_age=s.max_age,
        areas=tuple(s.areas),
        validity_days=s.validity_days,
        renewal_window_days=s.renewal_window_days,
        monthly_budget=money_of(s.monthly_budget, currency),
        budget_used=money_of(s.budget_used, currency),
    )


def report_view(r: benefits_pb2.GetCouncilReportResponse) -> CouncilReportView:
    """The portal's view of a council report."""
    tables = tuple(
        ReportTableView(
            name=t.name,
            columns=tuple(t.columns),
            rows=tuple(
                ReportRowView(
                    labels=tuple(row.labels),
                    people=row.people,
                    redemptions=row.redemptions,
                    amount=money_of(row.amount, "GBP"),
                    suppressed=row.suppressed,
                )
                for row in t.rows
            ),
        )
        for t in r.tables
    )
    return CouncilReportView(r.funder_id, r.month, tables, r.minimum_cell)


class BenefitsClient:
    """BenefitsService and OfficerService on accounts' channel, with a deadline per call."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = 5.0) -> None:
        self.benefits = benefits_pb2_grpc.BenefitsServiceStub(channel)
        self.officers = benefits_pb2_grpc.OfficerServiceStub(channel)
        self.timeout_s = timeout_s

    # -- travellers -----------------------------------------------------------------------

    async def list_entitlements(self, session: str) -> list[EntitlementView]:
        """The caller's entitlements."""
        request = benefits_pb2.ListEntitlementsRequest()
        reply = await call_accounts(
            lambda: self.benefits.ListEntitlements(
                request, metadata=bearer(session), timeout=self.timeout_s
            )
        )
        return [entitlement_view(e) for e in reply.entitlements]

    async def list_entitlement_movements(
        self, session: str, entitlement_id: str, page_size: int, page_token: str
    ) -> EntitlementMovementPage:
        """One page of what moved one of the caller's entitlements, newest first."""
        request = benefits_pb2.ListEntitlementMovementsRequest(
            entitlement_id=entitlement_id, page_size=page_size, page_token=page_token
        )
        reply = await call_accounts(
            lambda: self.benefits.ListEntitlementMovements(
                request, metadata=bearer(session), timeout=self.timeout_s
            )
        )
        movements = [
            EntitlementMovementView(
                kind=_kind(m.kind),
                month=m.month,
                amount=money_of(m.amount, "GBP"),
                provider_name=m.provider_name,
                category=m.category,
                at=time_of(m.at, m.HasField("at")),
            )
            for m in reply.movements
        ]
        return EntitlementMovementPage(movements, reply.next_page_token)

    # -- officers -------------------------------------------------------------------------

    async def council(self, session: str) -> CouncilView:
        """The officer's council, its schemes (with this month's budget use) and reward
        rules; PERMISSION_DENIED when the account is not an officer."""
        request = benefits_pb2.ListEntitlementSchemesRequest()
        reply = await call_accounts(
            lambda: self.officers.ListEntitlementSchemes(
                request, metadata=bearer(session), timeout=self.timeout_s
            )
        )
        rules = tuple(
            RewardRuleView(
                rule_id=r.rule_id,
                name=r.name or r.rule_id,
                kind=r.kind,
                amount=money_of(r.amount, "GBP"),
                credit=r.credit,
                entitlement_scheme_id=r.entitlement_scheme_id,
                period=r.period,
            )
            for r in reply.reward_rules
        )
        schemes = tuple(scheme_view(s) for s in reply.schemes)
        return CouncilView(reply.funder_id, schemes, rules)

    async def grant_entitlement(self, session: str, grant: GrantRequest) -> GrantResult:
        """Grant an entitlement of one of the officer's council's schemes (once per key)."""
        request = benefits_pb2.GrantEntitlementRequest(
            traveller_email=grant.traveller_email,
            scheme_id=grant.scheme_id,
            date_of_birth=grant.date_of_birth,
            residence_area=grant.residence_area,
            evidence=grant.evidence,
            idempotency_key=grant.idempotency_key,
        )
        reply = await call_accounts(
            lambda: self.officers.GrantEntitlement(
                request, metadata=bearer(session), timeout=self.timeout_s
            )
        )
        return GrantResult(entitlement_view(reply.entitlement), reply.replayed)

    async def revoke_entitlement(
        self, session: str, entitlement_id: str, reason: str
    ) -> EntitlementView:
        """Revoke one of the council's grants at once."""
        request = benefits_pb2.RevokeEntitlementRequest(
            entitlement_id=entitlement_id, reason=reason
        )
        reply = await call_accounts(
            lambda: self.officers.RevokeEntitlement(
                request, metadata=bearer(session), timeout=self.timeout_s
            )
        )
        return entitlement_view(reply.entitlement)

    async def list_grants(self, session: str, page_size: int, page_token: str) -> GrantPage:
        """One page of the council's grants, newest first."""
        request = benefits_pb2.ListGrantsRequest(page_size=page_size, page_token=page_token)
        reply = await call_accounts(
            lambda: self.officers.ListGrants(
                request, metadata=bearer(session), timeout=self.timeout_s
            )
        )
        grants = [
            GrantView(entitlement_view(g.entitlement), g.traveller_email, g.granted_by)
            for g in reply.grants
        ]
        return GrantPage(grants, reply.next_page_token)

    async def grant_reward(
        self, session: str, traveller_email: str, rule_id: str, reason: str, idempotency_key: str
    ) -> RewardResult:
        """Credit an officer-granted reward to a traveller (once per key)."""
        request = benefits_pb2.GrantRewardRequest(
            traveller_email=traveller_email,
            rule_id=rule_id,
            reason=reason,
            idempotency_key=idempotency_key,
        )
        reply = await call_accounts(
            lambda: self.officers.GrantReward(
                request, metadata=bearer(session), timeout=self.timeout_s
            )
        )
        return RewardResult(
            reply.reward_id, money_of(reply.amount, "GBP"), reply.period, reply.replayed
        )

    async def list_audit_events(self, session: str, page_size: int, page_token: str) -> AuditPage:
        """One page of the council's audit trail, newest first."""
        request = benefits_pb2.ListAuditEventsRequest(page_size=page_size, page_token=page_token)
        reply = await call_accounts(
            lambda: self.officers.ListAuditEvents(
                request, metadata=bearer(session), timeout=self.timeout_s
            )
        )
        events = [
            AuditEventView(
                at=time_of(e.at, e.HasField("at")),
                action=e.action,
                entitlement_id=e.entitlement_id,
                actor=e.actor,
                detail=e.detail,
            )
            for e in reply.events
        ]
        return AuditPage(events, reply.next_page_token)

    async def council_report(self, session: str, month: str) -> CouncilReportView:
        """The council's usage evidence for a month (suppressed cells carry no figures)."""
        request = benefits_pb2.GetCouncilReportRequest(month=month)
        reply = await call_accounts(
            lambda: self.officers.GetCouncilReport(
                request, metadata=bearer(session), timeout=self.timeout_s
            )
        )
        return report_view(reply)
