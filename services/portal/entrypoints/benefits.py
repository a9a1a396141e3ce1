"""The portal's benefits pages: a traveller's entitlements, and a council officer's schemes,
grants, rewards, audit trail and monthly report (docs/portal.md#council-entitlements).

Handlers stay thin, as in `web.py`: read the form, call accounts with the caller's session,
render or redirect. Every officer page starts with `Portal.officer_council`, which refuses
an account that is not an officer (403) and gives the council accounts knows for the
session; the portal never names a council itself.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from datetime import UTC, datetime

from aiohttp import web
from markupsafe import Markup

from clearway.disclosure import MINIMUM_CELL
from services.portal.adapters.accounts import AccountsRefusalError
from services.portal.adapters.benefits import GrantRequest
from services.portal.domain.chart import bar_chart_svg
from services.portal.domain.council_report import (
    MonthError,
    budget_bars,
    current_month,
    parse_month,
    report_csv,
    spend_bars,
)
from services.portal.domain.entitlements import (
    CouncilView,
    GrantFormError,
    benefit_message,
    parse_date_of_birth,
)
from services.portal.entrypoints.web import (
    FIELD_LIMIT,
    Portal,
    form_field,
    not_an_officer,
    see_other,
)

# Accounts' answers about an entitlement URL that must look like "no such page".
ENTITLEMENT_NOT_FOUND = {"NOT_YOUR_ENTITLEMENT", "UNKNOWN_ENTITLEMENT", "BAD_ENTITLEMENT_ID"}
_FILE_PART = re.compile(r"[^A-Za-z0-9_-]+")


def _short(text: str, limit: int = 500) -> str:
    return text.strip()[:limit]


def _refused_on_form(refusal: AccountsRefusalError) -> bool:
    """Whether a refusal belongs on the officer's form (else: sign-in, or the 403 page)."""
    if refusal.code == "NOT_SIGNED_IN":
        return False
    if refusal.status == "PERMISSION_DENIED":
        raise not_an_officer() from None
    return True


class BenefitsPages:
    """The traveller's entitlement pages and the officer pages."""

    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self.benefits = portal.benefits

    # -- travellers -----------------------------------------------------------------------

    async def entitlements(self, request: web.Request) -> web.StreamResponse:
        """The traveller's entitlements, each with its newest movements."""
        session = self.portal.require_session(request)
        size = self.portal.config.page_size
        entitlements = await self.benefits.list_entitlements(session)
        pages = await asyncio.gather(
            *(
                self.benefits.list_entitlement_movements(session, e.entitlement_id, size, "")
                for e in entitlements
            )
        )
        return self.portal.page(
            request,
            "entitlements.html",
            title="My entitlements",
            entitlements=list(zip(entitlements, pages, strict=True)),
        )

    async def entitlement(self, request: web.Request) -> web.StreamResponse:
        """One of the traveller's entitlements and its movements, paged."""
        session = self.portal.require_session(request)
        wanted = request.match_info["entitlement"][:FIELD_LIMIT]
        page_token = request.query.get("movements", "")[:FIELD_LIMIT]
        entitlements = await self.benefits.list_entitlements(session)
        found = next((e for e in entitlements if e.entitlement_id == wanted), None)
        if found is None:
            return self._no_entitlement(request)
        try:
            page = await self.benefits.list_entitlement_movements(
                session, wanted, self.portal.config.page_size, page_token
            )
        except AccountsRefusalError as refusal:
            if refusal.code in ENTITLEMENT_NOT_FOUND:
                return self._no_entitlement(request)
            raise
        return self.portal.page(
            request,
            "entitlement.html",
            title=found.scheme_name,
            entitlement=found,
            movements=page.movements,
            next_page=page.next_page_token,
            first_page=not page_token,
        )

    def _no_entitlement(self, request: web.Request) -> web.Response:
        return self.portal.error_page(
            request, 404, "Page not found", "We could not find that entitlement among yours."
        )

    # -- officers: the council ------------------------------------------------------------

    async def council(self, request: web.Request) -> web.StreamResponse:
        """The council's schemes with this month's budget use, and its reward rules."""
        _, council = await self.portal.officer_council(request)
        return self.portal.page(
            request, "officer/council.html", title="Your council's schemes", council=council
        )

    # -- officers: grants -----------------------------------------------------------------

    async def grant_form(self, request: web.Request) -> web.StreamResponse:
        _, council = await self.portal.officer_council(request)
        return self._grant_page(request, council)

    def _grant_page(
        self,
        request: web.Request,
        council: CouncilView,
        *,
        status: int = 200,
        error: str | None = None,
        fields: dict[str, str] | None = None,
    ) -> web.Response:
        """The grant form."""
        blank = ("traveller_email", "scheme_id", "date_of_birth", "residence_area", "evidence")
        return self._form_page(
            request,
            "officer/grant.html",
            "Grant an entitlement",
            council,
            blank,
            status=status,
            error=error,
            fields=fields,
        )

    def _form_page(
        self,
        request: web.Request,
        template: str,
        title: str,
        council: CouncilView,
        names: tuple[str, ...],
        *,
        status: int,
        error: str | None,
        fields: dict[str, str] | None,
    ) -> web.Response:
        """An officer's form (`names` blank unless given in `fields`), with a fresh
        idempotency key on every render."""
        return self.portal.page(
            request,
            template,
            status=status,
            title=title,
            council=council,
            error=error,
            form={**dict.fromkeys(names, ""), **(fields or {})},
            idempotency_key=secrets.token_urlsafe(24),
        )

    async def grant(self, request: web.Request) -> web.StreamResponse:
        """Grant an entitlement; a refusal comes back on the form in plain words."""
        session, council = await self.portal.officer_council(request)
        form = await request.post()
        fields = {
            "traveller_email": _short(form_field(form, "traveller_email"), 254),
            "scheme_id": _short(form_field(form, "scheme_id"), 128),
            "date_of_birth": _short(form_field(form, "date_of_birth"), 32),
            "residence_area": _short(form_field(form, "residence_area"), 128),
            "evidence": _short(form_field(form, "evidence")),
        }
        scheme = council.scheme(fields["scheme_id"])
        try:
            born = self._check_grant(fields)
            result = await self.benefits.grant_entitlement(
                session,
                GrantRequest(
                    traveller_email=fields["traveller_email"],
                    scheme_id=fields["scheme_id"],
                    date_of_birth=born,
                    residence_area=fields["residence_area"],
                    evidence=fields["evidence"],
                    idempotency_key=form_field(form, "idempotency_key"),
                ),
            )
        except GrantFormError as bad:
            error = benefit_message(bad.code, scheme)
        except AccountsRefusalError as refusal:
            if not _refused_on_form(refusal):
                raise
            error = benefit_message(refusal.code, scheme)
        else:
            notice = "grant-replayed" if result.replayed else "granted"
            return see_other(f"/officer/grants?notice={notice}")
        return self._grant_page(request, council, status=400, error=error, fields=fields)

    @staticmethod
    def _check_grant(fields: dict[str, str]) -> str:
        """The date of birth, once every field the form needs is there."""
        if not fields["traveller_email"]:
            raise GrantFormError("MISSING_TRAVELLER_EMAIL")
        if not fields["scheme_id"]:
            raise GrantFormError("MISSING_SCHEME")
        born = parse_date_of_birth(fields["date_of_birth"], datetime.now(UTC).date())
        if not fields["residence_area"]:
            raise GrantFormError("MISSING_RESIDENCE_AREA")
        if not fields["evidence"]:
            raise GrantFormError("MISSING_EVIDENCE")
        return born

    async def grants(self, request: web.Request) -> web.StreamResponse:
        return await self._grants_page(request)

    async def _grants_page(
        self, request: web.Request, *, status: int = 200, error: str | None = None
    ) -> web.Response:
        """A page of the council's grants, newest first, each active one with a revoke form."""
        session, council = await self.portal.officer_council(request)
        page_token = request.query.get("page", "")[:FIELD_LIMIT]
        page = await self.benefits.list_grants(session, self.portal.config.page_size, page_token)
        return self.portal.page(
            request,
            "officer/grants.html",
            status=status,
            title="Grants",
            council=council,
            grants=page.grants,
            next_page=page.next_page_token,
            first_page=not page_token,
            error=error,
        )

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        """Revoke a grant at once (with the officer's reason, kept in the audit trail)."""
        session, _ = await self.portal.officer_council(request)
        form = await request.post()
        entitlement_id = _short(form_field(form, "entitlement_id"), 128)
        reason = _short(form_field(form, "reason"))
        if not reason:
            return await self._grants_page(
                request, status=400, error=benefit_message("MISSING_REASON")
            )
        try:
            await self.benefits.revoke_entitlement(session, entitlement_id, reason)
        except AccountsRefusalError as refusal:
            if not _refused_on_form(refusal):
                raise
            return await self._grants_page(request, status=400, error=benefit_message(refusal.code))
        return see_other("/officer/grants?notice=revoked")

    # -- officers: rewards ----------------------------------------------------------------

    async def rewards_form(self, request: web.Request) -> web.StreamResponse:
        _, council = await self.portal.officer_council(request)
        return self._rewards_page(request, council)

    def _rewards_page(
        self,
        request: web.Request,
        council: CouncilView,
        *,
        status: int = 200,
        error: str | None = None,
        fields: dict[str, str] | None = None,
    ) -> web.Response:
        """The reward form."""
        return self._form_page(
            request,
            "officer/rewards.html",
            "Grant a reward",
            council,
            ("traveller_email", "rule_id", "reason"),
            status=status,
            error=error,
            fields=fields,
        )

    async def grant_reward(self, request: web.Request) -> web.StreamResponse:
        """Credit an officer-granted reward to a traveller."""
        session, council = await self.portal.officer_council(request)
        form = await request.post()
        fields = {
            "traveller_email": _short(form_field(form, "traveller_email"), 254),
            "rule_id": _short(form_field(form, "rule_id"), 128),
            "reason": _short(form_field(form, "reason")),
        }
        missing = next(
            (
                code
                for code, name in (
                    ("MISSING_TRAVELLER_EMAIL", "traveller_email"),
                    ("MISSING_REWARD_RULE", "rule_id"),
                    ("MISSING_REASON", "reason"),
                )
                if not fields[name]
            ),
            None,
        )
        if missing is not None:
            error = benefit_message(missing)
        else:
            try:
                result = await self.benefits.grant_reward(
                    session,
                    fields["traveller_email"],
                    fields["rule_id"],
                    fields["reason"],
                    form_field(form, "idempotency_key"),
                )
            except AccountsRefusalError as refusal:
                if not _refused_on_form(refusal):
                    raise
                error = benefit_message(refusal.code)
            else:
                notice = "reward-replayed" if result.replayed else "rewarded"
                return see_other(f"/officer/rewards?notice={notice}")
        return self._rewards_page(request, council, status=400, error=error, fields=fields)

    # -- officers: the audit trail --------------------------------------------------------

    async def audit(self, request: web.Request) -> web.StreamResponse:
        """A page of the council's audit trail, newest first."""
        session, council = await self.portal.officer_council(request)
        page_token = request.query.get("page", "")[:FIELD_LIMIT]
        page = await self.benefits.list_audit_events(
            session, self.portal.config.page_size, page_token
        )
        return self.portal.page(
            request,
            "officer/audit.html",
            title="Audit trail",
            council=council,
            events=page.events,
            next_page=page.next_page_token,
            first_page=not page_token,
        )

    # -- officers: the monthly report -----------------------------------------------------

    async def report(self, request: web.Request) -> web.StreamResponse:
        """The council's report for a month: each table, and two charts."""
        session, council = await self.portal.officer_council(request)
        typed = request.query.get("month", "")[:32]
        try:
            month = parse_month(typed) if typed else current_month(datetime.now(UTC).date())
            report = await self.benefits.council_report(session, month)
        except MonthError:
            return self._report_refused(request, council, typed, "BAD_MONTH")
        except AccountsRefusalError as refusal:
            if not _refused_on_form(refusal):
                raise
            return self._report_refused(request, council, typed, refusal.code)
        spend = report.table("spend_by_category")
        charts = [
            Markup(  # noqa: S704 - built by bar_chart_svg, which escapes every text it writes
                bar_chart_svg(
                    "chart-spend",
                    f"Spend by service category, {month}",
                    spend_bars(spend, report.minimum_cell) if spend else [],
                    empty="No spending this month",
                )
            ),
            Markup(  # noqa: S704 - as above
                bar_chart_svg(
                    "chart-budget",
                    f"Budget used against monthly budget, {month}",
                    budget_bars(report.table("budget"), council.schemes, report.minimum_cell),
                    empty="No scheme with a monthly budget",
                )
            ),
        ]
        return self.portal.page(
            request,
            "officer/report.html",
            title=f"Report for {month}",
            council=council,
            month=month,
            report=report,
            charts=charts,
        )

    def _report_refused(
        self, request: web.Request, council: CouncilView, typed: str, code: str
    ) -> web.Response:
        return self.portal.page(
            request,
            "officer/report.html",
            status=400,
            title="Report",
            council=council,
            month=typed,
            report=None,
            charts=[],
            error=benefit_message(code),
        )

    async def report_csv(self, request: web.Request) -> web.StreamResponse:
        """One table of a month's report as CSV (a suppressed cell's figures: '<10')."""
        session, council = await self.portal.officer_council(request)
        try:
            month = parse_month(request.query.get("month", "")[:32])
        except MonthError:
            return self._report_refused(request, council, "", "BAD_MONTH")
        report = await self.benefits.council_report(session, month)
        table = report.table(request.query.get("table", "")[:128])
        if table is None:
            raise web.HTTPNotFound
        name = "-".join(
            _FILE_PART.sub("-", part) for part in ("clearway-report", month, table.name)
        )
        return web.Response(
            text=report_csv(table, report.minimum_cell or MINIMUM_CELL),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )


def add_benefits_routes(app: web.Application, pages: BenefitsPages) -> None:
    """The traveller's entitlement pages and the officer pages."""
    r = app.router
    r.add_get("/entitlements", pages.entitlements)
    r.add_get("/entitlements/{entitlement}", pages.entitlement)
    r.add_get("/officer", pages.council)
    r.add_get("/officer/grant", pages.grant_form)
    r.add_post("/officer/grant", pages.grant)
    r.add_get("/officer/grants", pages.grants)
    r.add_post("/officer/grants/revoke", pages.revoke)
    r.add_get("/officer/rewards", pages.rewards_form)
    r.add_post("/officer/rewards", pages.grant_reward)
    r.add_get("/officer/audit", pages.audit)
    r.add_get("/officer/report", pages.report)
    r.add_get("/officer/report.csv", pages.report_csv)
