"""gRPC servicers of `clearway.benefits.v1` (docs/benefits.md): OfficerService (council
officers), BenefitsService (travellers' own entitlements) and RedemptionService
(providers' signed devices). Parse, call the use case, reply.

Officers and travellers are whoever the session token in `authorization: Bearer <token>`
belongs to; a device is whoever's key signed the redemption. Status and `reason-code`
come from the domain errors through the shared interceptor (clearway.rpc).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from clearway.benefits.v1 import benefits_pb2, benefits_pb2_grpc
from clearway.common.v1.money_pb2 import Money
from clearway.disclosure import MINIMUM_CELL
from clearway.money import Money as MoneyValue
from clearway.rpc import Slot
from clearway.scheme.model import EntitlementScheme, RewardRule
from services.accounts.adapters.benefits_repository import AuditRow, MovementRow
from services.accounts.domain.council_report import ReportTable
from services.accounts.domain.entitlements import renewal_opens
from services.accounts.entrypoints.grpc import Context, bearer_token
from services.accounts.service_layer.benefits import (
    BenefitsContext,
    Entitlements,
    EntitlementView,
    GrantRequest,
)
from services.accounts.service_layer.redemptions import Redemptions
from services.accounts.service_layer.rewards import Rewards

_SERVICES = benefits_pb2.DESCRIPTOR.services_by_name
OFFICER_SERVICE_NAME = _SERVICES["OfficerService"].full_name
BENEFITS_SERVICE_NAME = _SERVICES["BenefitsService"].full_name
REDEMPTION_SERVICE_NAME = _SERVICES["RedemptionService"].full_name
BENEFITS_SERVICE_NAMES = [OFFICER_SERVICE_NAME, BENEFITS_SERVICE_NAME, REDEMPTION_SERVICE_NAME]


@dataclass(frozen=True, slots=True)
class BenefitsPorts:
    """What the benefits servicers talk to; exists once the service has started."""

    context: BenefitsContext
    entitlements: Entitlements
    redemptions: Redemptions
    rewards: Rewards


def _timestamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def _money(amount_minor: int, currency: str) -> Money:
    return Money(amount_minor=amount_minor, currency=currency)


def _of(amount: MoneyValue) -> Money:
    return Money(amount_minor=amount.amount_minor, currency=amount.currency)


def scheme_message(
    scheme: EntitlementScheme, used_minor: int, currency: str
) -> benefits_pb2.EntitlementScheme:
    """An entitlement scheme as officers see it, with this month's budget use."""
    return benefits_pb2.EntitlementScheme(
        scheme_id=scheme.scheme_id,
        funder_id=scheme.funder_id,
        name=scheme.name,
        kind=scheme.kind.value.upper(),
        allowance_per_month=_money(scheme.allowance_per_month_minor, currency),
        categories=sorted(scheme.categories),
        per_visit_limit=_money(scheme.per_visit_limit_minor, currency),
        rider_category=scheme.rider_category,
        min_age=scheme.min_age,
        max_age=scheme.max_age,
        areas=sorted(scheme.areas),
        validity_days=scheme.validity_days,
        renewal_window_days=scheme.renewal_window_days,
        monthly_budget=_money(scheme.monthly_budget_minor, currency),
        budget_used=_money(used_minor, currency),
    )


def rule_message(rule: RewardRule, currency: str) -> benefits_pb2.RewardRule:
    """A reward rule as officers see it."""
    return benefits_pb2.RewardRule(
        rule_id=rule.rule_id,
        funder_id=rule.funder_id,
        name=rule.name,
        kind=rule.kind.value.upper(),
        amount=_money(rule.amount_minor, currency),
        credit=rule.credit.value.upper(),
        entitlement_scheme_id=rule.entitlement_scheme_id,
        period=rule.period.value.upper(),
    )


def entitlement_message(view: EntitlementView, currency: str) -> benefits_pb2.Entitlement:
    """An entitlement with its status and what is left this month."""
    e, scheme = view.entitlement, view.scheme
    message = benefits_pb2.Entitlement(
        entitlement_id=e.entitlement_id,
        scheme_id=e.scheme_id,
        funder_id=e.funder_id,
        status=view.status.value.upper(),
        valid_from=e.valid_from.isoformat(),
        valid_to=e.valid_to.isoformat(),
        balance=_money(view.balance_minor, currency),
        granted_at=_timestamp(e.granted_at),
    )
    if scheme is not None:
        message.scheme_name = scheme.name
        message.allowance_per_month.CopyFrom(_money(scheme.allowance_per_month_minor, currency))
        message.categories.extend(sorted(scheme.categories))
        message.per_visit_limit.CopyFrom(_money(scheme.per_visit_limit_minor, currency))
        message.rider_category = scheme.rider_category
        message.renewal_opens = renewal_opens(scheme, e.valid_to).isoformat()
    return message


def audit_message(row: AuditRow) -> benefits_pb2.AuditEvent:
    """One line of the audit trail."""
    return benefits_pb2.AuditEvent(
        at=_timestamp(row.at),
        action=row.action.value.upper(),
        entitlement_id=row.entitlement_id,
        actor=row.actor,
        detail=row.detail,
    )


def table_message(table: ReportTable, currency: str) -> benefits_pb2.ReportTable:
    """A report table (suppressed rows carry no figures)."""
    return benefits_pb2.ReportTable(
        name=table.name,
        columns=list(table.columns),
        rows=[
            benefits_pb2.ReportRow(
                labels=list(r.labels),
                people=r.people,
                redemptions=r.redemptions,
                amount=_money(r.amount_minor, currency),
                suppressed=r.suppressed,
            )
            for r in table.rows
        ],
    )


class OfficerServicer(benefits_pb2_grpc.OfficerServiceServicer):
    """Council officers: their council's schemes, grants, rewards, audit trail, report."""

    def __init__(self, ports: Slot[BenefitsPorts]) -> None:
        self._ports = ports

    async def ListEntitlementSchemes(  # noqa: N802 - the generated base class names it
        self, request: benefits_pb2.ListEntitlementSchemesRequest, context: Context
    ) -> benefits_pb2.ListEntitlementSchemesResponse:
        """The council's schemes and reward rules in force, with this month's budget use."""
        ports = self._ports.get()
        overview = await ports.entitlements.schemes(bearer_token(context))
        currency = ports.context.currency
        return benefits_pb2.ListEntitlementSchemesResponse(
            funder_id=overview.funder_id,
            schemes=[scheme_message(s, used, currency) for s, used in overview.schemes],
            reward_rules=[rule_message(r, currency) for r in overview.reward_rules],
        )

    async def GrantEntitlement(  # noqa: N802
        self, request: benefits_pb2.GrantEntitlementRequest, context: Context
    ) -> benefits_pb2.GrantEntitlementResponse:
        """Grant (or renew) an entitlement of one of the council's schemes."""
        ports = self._ports.get()
        result = await ports.entitlements.grant(
            bearer_token(context),
            GrantRequest(
                request.traveller_email,
                request.scheme_id,
                request.date_of_birth,
                request.residence_area,
                request.evidence,
                request.idempotency_key,
                request.valid_from,
            ),
        )
        return benefits_pb2.GrantEntitlementResponse(
            entitlement=entitlement_message(result.view, ports.context.currency),
            replayed=result.replayed,
        )

    async def RevokeEntitlement(  # noqa: N802
        self, request: benefits_pb2.RevokeEntitlementRequest, context: Context
    ) -> benefits_pb2.RevokeEntitlementResponse:
        """Revoke one of the council's entitlements at once."""
        ports = self._ports.get()
        view = await ports.entitlements.revoke(
            bearer_token(context), request.entitlement_id, request.reason
        )
        return benefits_pb2.RevokeEntitlementResponse(
            entitlement=entitlement_message(view, ports.context.currency)
        )

    async def ListGrants(  # noqa: N802
        self, request: benefits_pb2.ListGrantsRequest, context: Context
    ) -> benefits_pb2.ListGrantsResponse:
        """The council's grants, newest first."""
        ports = self._ports.get()
        page = await ports.entitlements.grants(
            bearer_token(context), request.page_size, request.page_token
        )
        currency = ports.context.currency
        return benefits_pb2.ListGrantsResponse(
            grants=[
                benefits_pb2.Grant(
                    entitlement=entitlement_message(view, currency),
                    traveller_email=row.traveller_email,
                    granted_by=row.granted_by_email,
                )
                for row, view in page.items
            ],
            next_page_token=page.next_page_token,
        )

    async def GrantReward(  # noqa: N802
        self, request: benefits_pb2.GrantRewardRequest, context: Context
    ) -> benefits_pb2.GrantRewardResponse:
        """Credit a reward of one of the council's officer_grant rules."""
        ports = self._ports.get()
        result = await ports.rewards.grant(
            bearer_token(context),
            request.traveller_email,
            request.rule_id,
            request.reason,
            request.idempotency_key,
        )
        reward = result.reward
        return benefits_pb2.GrantRewardResponse(
            reward_id=reward.reward_id,
            amount=_of(reward.amount),
            period=reward.period,
            replayed=result.replayed,
        )

    async def ListAuditEvents(  # noqa: N802
        self, request: benefits_pb2.ListAuditEventsRequest, context: Context
    ) -> benefits_pb2.ListAuditEventsResponse:
        """The council's audit trail, newest first."""
        ports = self._ports.get()
        page = await ports.entitlements.audit(
            bearer_token(context), request.page_size, request.page_token
        )
        return benefits_pb2.ListAuditEventsResponse(
            events=[audit_message(r) for r in page.items],
            next_page_token=page.next_page_token,
        )

    async def GetCouncilReport(  # noqa: N802
        self, request: benefits_pb2.GetCouncilReportRequest, context: Context
    ) -> benefits_pb2.GetCouncilReportResponse:
        """Usage evidence of a month, small cells suppressed."""
        ports = self._ports.get()
        report = await ports.entitlements.report(bearer_token(context), request.month)
        currency = ports.context.currency
        return benefits_pb2.GetCouncilReportResponse(
            funder_id=report.funder_id,
            month=report.month,
            tables=[table_message(t, currency) for t in report.tables],
            minimum_cell=MINIMUM_CELL,
        )


def movement_messages(
    rows: Iterable[MovementRow], ports: BenefitsPorts
) -> list[benefits_pb2.EntitlementMovement]:
    """An entitlement's movements, providers by name."""
    out = []
    for row in rows:
        provider = ports.context.party(row.provider_id, row.at.date()) if row.provider_id else None
        out.append(
            benefits_pb2.EntitlementMovement(
                kind=row.kind.value.upper(),
                month=row.month,
                amount=_of(row.amount),
                provider_name=provider.name if provider is not None else row.provider_id,
                category=row.category,
                at=_timestamp(row.at),
            )
        )
    return out


class BenefitsServicer(benefits_pb2_grpc.BenefitsServiceServicer):
    """A traveller's own entitlements."""

    def __init__(self, ports: Slot[BenefitsPorts]) -> None:
        self._ports = ports

    async def ListEntitlements(  # noqa: N802
        self, request: benefits_pb2.ListEntitlementsRequest, context: Context
    ) -> benefits_pb2.ListEntitlementsResponse:
        """The caller's entitlements, newest first, with this month's balances."""
        ports = self._ports.get()
        shown = await ports.entitlements.own(bearer_token(context))
        currency = ports.context.currency
        return benefits_pb2.ListEntitlementsResponse(
            entitlements=[entitlement_message(v, currency) for v in shown]
        )

    async def ListEntitlementMovements(  # noqa: N802
        self, request: benefits_pb2.ListEntitlementMovementsRequest, context: Context
    ) -> benefits_pb2.ListEntitlementMovementsResponse:
        """One of the caller's entitlements' movements, newest first."""
        ports = self._ports.get()
        page = await ports.entitlements.own_movements(
            bearer_token(context), request.entitlement_id, request.page_size, request.page_token
        )
        return benefits_pb2.ListEntitlementMovementsResponse(
            movements=movement_messages(page.items, ports),
            next_page_token=page.next_page_token,
        )


class RedemptionServicer(benefits_pb2_grpc.RedemptionServiceServicer):
    """Providers' devices: signed redemptions, answered at once."""

    def __init__(self, ports: Slot[BenefitsPorts]) -> None:
        self._ports = ports

    async def Redeem(  # noqa: N802
        self, request: benefits_pb2.RedeemRequest, context: Context
    ) -> benefits_pb2.RedeemResponse:
        """Authorise a signed redemption, or refuse it with its reason."""
        ports = self._ports.get()
        result = await ports.redemptions.redeem(
            request.device_id, request.key_id, request.redemption, request.signature
        )
        r = result.redemption
        return benefits_pb2.RedeemResponse(
            redemption_id=r.redemption_id,
            amount=_of(r.amount),
            balance_after=_money(r.balance_after_minor, r.amount.currency),
            entitlement_id=r.entitlement_id,
            provider_id=r.provider_id,
            replayed=result.replayed,
            service_day=r.service_day.isoformat(),
        )
