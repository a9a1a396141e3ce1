"""The benefits pages over HTTP with in-memory fakes of accounts (no servers): who sees the
officer pages, the remembered role, the grant form's refusals in words and its fresh
idempotency key, revocation, and the report with its chart and CSV."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestClient, TestServer

from clearway.money import Money
from services.portal.adapters.accounts import AccountsRefusalError, Session
from services.portal.adapters.benefits import (
    EntitlementMovementPage,
    GrantPage,
    GrantRequest,
    GrantResult,
)
from services.portal.domain.council_report import (
    CouncilReportView,
    ReportRowView,
    ReportTableView,
)
from services.portal.domain.entitlements import (
    CouncilView,
    EntitlementMovementKind,
    EntitlementMovementView,
    EntitlementStatus,
    EntitlementView,
    GrantView,
)
from services.portal.entrypoints.benefits import BenefitsPages, add_benefits_routes
from services.portal.entrypoints.web import Portal, WebConfig, web_app
from services.portal.tests.test_benefits import allowance, gbp, youth_scheme

OFFICER, TRAVELLER = "session-officer", "session-traveller"


@dataclass
class FakeAccounts:
    """TravellerService: two accounts, an officer and a traveller."""

    async def sign_in(self, email: str, password: str) -> Session:
        if password != "pw":
            raise AccountsRefusalError("BAD_CREDENTIALS", "UNAUTHENTICATED")
        return Session(OFFICER if email.startswith("officer") else TRAVELLER, None)


@dataclass
class FakeBenefits:
    """BenefitsService and OfficerService as accounts answers them."""

    council_calls: int = 0
    grants: list[GrantRequest] = field(default_factory=list)
    revoked: list[tuple[str, str]] = field(default_factory=list)
    refuse_grant: str = ""

    async def council(self, session: str) -> CouncilView:
        self.council_calls += 1
        if session != OFFICER:
            raise AccountsRefusalError("NOT_AN_OFFICER", "PERMISSION_DENIED")
        return CouncilView("funder:camden", (youth_scheme(),), ())

    async def list_entitlements(self, session: str) -> list[EntitlementView]:
        return [allowance()] if session == TRAVELLER else []

    async def list_entitlement_movements(
        self, session: str, entitlement_id: str, page_size: int, page_token: str
    ) -> EntitlementMovementPage:
        at = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
        return EntitlementMovementPage(
            [
                EntitlementMovementView(
                    EntitlementMovementKind.REDEMPTION,
                    "2026-11",
                    gbp(-600),
                    "Camden Leisure",
                    "swimming",
                    at,
                ),
                EntitlementMovementView(
                    EntitlementMovementKind.ALLOWANCE, "2026-11", gbp(2000), "", "", at
                ),
            ],
            "",
        )

    async def grant_entitlement(self, session: str, grant: GrantRequest) -> GrantResult:
        if self.refuse_grant:
            raise AccountsRefusalError(self.refuse_grant, "FAILED_PRECONDITION")
        self.grants.append(grant)
        return GrantResult(allowance(), replayed=False)

    async def list_grants(self, session: str, page_size: int, page_token: str) -> GrantPage:
        revoked = allowance(entitlement_id="ent-0", status=EntitlementStatus.REVOKED)
        return GrantPage(
            [
                GrantView(allowance(), "young@example.org", "officer@camden.example"),
                GrantView(revoked, "older@example.org", "officer@camden.example"),
            ],
            "",
        )

    async def revoke_entitlement(
        self, session: str, entitlement_id: str, reason: str
    ) -> EntitlementView:
        self.revoked.append((entitlement_id, reason))
        return allowance(status=EntitlementStatus.REVOKED)

    async def council_report(self, session: str, month: str) -> CouncilReportView:
        spend = ReportTableView(
            "spend_by_category",
            ("category",),
            (
                ReportRowView(("gym",), 11, 14, gbp(4200), False),
                ReportRowView(("swimming",), 0, 0, gbp(0), True),
            ),
        )
        budget = ReportTableView(
            "budget",
            ("scheme", "name", "budget", "used"),
            (ReportRowView(("camden-youth-leisure",), 0, 0, gbp(4950), False),),
        )
        return CouncilReportView("funder:camden", month, (spend, budget), 10)


@dataclass
class Site:
    client: TestClient  # type: ignore[type-arg]
    benefits: FakeBenefits

    async def sign_in(self, email: str) -> str:
        """Sign in by the form (the CSRF token read from the page); the redirect target."""
        token = await self.csrf("/sign-in")
        answer = await self.client.post(
            "/sign-in",
            data={"email": email, "password": "pw", "csrf_token": token},
            allow_redirects=False,
        )
        assert answer.status == 303
        return answer.headers["Location"]

    async def csrf(self, path: str) -> str:
        page = await (await self.client.get(path)).text()
        match = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert match is not None, page
        return match.group(1)


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    benefits = FakeBenefits()
    portal = Portal(FakeAccounts(), benefits, WebConfig(secret=b"s" * 32))  # type: ignore[arg-type]
    app = web_app(portal)
    add_benefits_routes(app, BenefitsPages(portal))
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Site(client, benefits)
    finally:
        await client.close()


def role_cookie_of(site: Site) -> str:
    cookies = {c.key: c.value for c in site.client.session.cookie_jar}
    return cookies.get("clearway_role", "")


async def test_a_traveller_gets_403_on_every_officer_page_and_is_not_asked_again(
    site: Site,
) -> None:
    assert await site.sign_in("young@example.org") == "/cards"
    assert role_cookie_of(site).startswith("traveller")
    calls = site.benefits.council_calls
    for path in ("/officer", "/officer/grant", "/officer/grants", "/officer/report"):
        answer = await site.client.get(path)
        assert answer.status == 403, path
        assert "for council officers only" in await answer.text()
    assert site.benefits.council_calls == calls  # the remembered answer, not accounts
    page = await (await site.client.get("/entitlements")).text()
    assert 'href="/officer"' not in page


async def test_a_forged_role_cookie_does_not_open_the_officer_pages(site: Site) -> None:
    await site.sign_in("young@example.org")
    site.client.session.cookie_jar.update_cookies(
        {"clearway_role": "officer:funder:camden.forged"}, site.client.make_url("/")
    )
    answer = await site.client.get("/officer")
    assert answer.status == 403  # the forged cookie is ignored: accounts is asked
    assert role_cookie_of(site).startswith("traveller")


async def test_an_officer_is_sent_to_the_council_page_with_its_budget(site: Site) -> None:
    assert await site.sign_in("officer@camden.example") == "/officer"
    assert role_cookie_of(site).startswith("officer:funder:camden.")
    page = await (await site.client.get("/officer")).text()
    assert "Camden youth leisure allowance" in page
    assert "£7.50 of £5000.00 used this month" in page
    assert 'href="/officer">Council</a>' in page


async def test_a_traveller_sees_the_months_balance_and_the_movements(site: Site) -> None:
    await site.sign_in("young@example.org")
    page = await (await site.client.get("/entitlements")).text()
    assert "£14.00 of £20.00 this month" in page
    assert "Swimming at Camden Leisure" in page and "-£6.00" in page
    assert "Allowance for November 2026" in page and "+£20.00" in page
    assert "swimming, gym and pitch hire" in page and "up to £10.00 a visit" in page
    assert "21 Oct 2027" in page  # renewal opens
    one = await site.client.get("/entitlements/ent-1")
    assert one.status == 200
    missing = await site.client.get("/entitlements/someone-elses")
    assert missing.status == 404
    assert "could not find that entitlement" in await missing.text()


async def test_a_refused_grant_is_shown_in_words_with_a_fresh_form(site: Site) -> None:
    await site.sign_in("officer@camden.example")
    page = await (await site.client.get("/officer/grant")).text()
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page)
    assert key is not None
    form = {
        "csrf_token": await site.csrf("/officer/grant"),
        "traveller_email": "young@example.org",
        "scheme_id": "camden-youth-leisure",
        "date_of_birth": "2000-01-01",
        "residence_area": "camden",
        "evidence": "passport seen",
        "idempotency_key": key.group(1),
    }
    site.benefits.refuse_grant = "NOT_ELIGIBLE_AGE"
    refused = await site.client.post("/officer/grant", data=form)
    assert refused.status == 400
    text = await refused.text()
    assert "Not eligible: age outside 11\u201318 on the day of the grant." in text
    assert 'value="young@example.org"' in text and 'value="passport seen"' in text
    fresh = re.search(r'name="idempotency_key" value="([^"]+)"', text)
    assert fresh is not None and fresh.group(1) != key.group(1)

    missing = await site.client.post("/officer/grant", data={**form, "date_of_birth": "30/02"})
    assert "Enter a real date of birth" in await missing.text()

    site.benefits.refuse_grant = ""
    granted = await site.client.post("/officer/grant", data=form, allow_redirects=False)
    assert granted.status == 303
    assert granted.headers["Location"] == "/officer/grants?notice=granted"
    assert site.benefits.grants[0].date_of_birth == "2000-01-01"


async def test_grants_have_a_revoke_form_and_posts_need_the_csrf_token(site: Site) -> None:
    await site.sign_in("officer@camden.example")
    page = await (await site.client.get("/officer/grants")).text()
    assert page.count('action="/officer/grants/revoke"') == 1  # the active grant only
    token = await site.csrf("/officer/grants")
    forged = await site.client.post(
        "/officer/grants/revoke", data={"entitlement_id": "ent-1", "reason": "moved away"}
    )
    assert forged.status == 403 and site.benefits.revoked == []
    no_reason = await site.client.post(
        "/officer/grants/revoke", data={"csrf_token": token, "entitlement_id": "ent-1"}
    )
    assert no_reason.status == 400 and "Give a reason" in await no_reason.text()
    done = await site.client.post(
        "/officer/grants/revoke",
        data={"csrf_token": token, "entitlement_id": "ent-1", "reason": "moved away"},
        allow_redirects=False,
    )
    assert done.status == 303 and site.benefits.revoked == [("ent-1", "moved away")]


async def test_the_report_renders_tables_charts_and_csv(site: Site) -> None:
    await site.sign_in("officer@camden.example")
    page = await (await site.client.get("/officer/report?month=2026-11")).text()
    assert "Report for November 2026" in page
    assert page.count("<svg") == 2 and "<title" in page
    assert "fewer than 10" in page and "£42.00" in page
    assert "£49.50 of £5000.00" in page  # budget used against the monthly budget
    bad = await site.client.get("/officer/report?month=2026-13")
    assert bad.status == 400 and "Enter a month like 2026-11" in await bad.text()

    answer = await site.client.get("/officer/report.csv?month=2026-11&table=spend_by_category")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/csv")
    assert "clearway-report-2026-11-spend_by_category.csv" in answer.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(await answer.text())))
    assert rows[1] == ["gym", "11", "14", "42.00", "GBP"]
    assert rows[2] == ["swimming", "<10", "<10", "<10", "GBP"]
    unknown = await site.client.get("/officer/report.csv?month=2026-11&table=people")
    assert unknown.status == 404


async def test_signed_out_the_pages_ask_for_sign_in(site: Site) -> None:
    for path in ("/entitlements", "/officer", "/officer/report"):
        answer = await site.client.get(path, allow_redirects=False)
        assert answer.status == 303 and answer.headers["Location"] == "/sign-in", path


def test_money_is_formatted_as_elsewhere() -> None:
    assert allowance(balance=Money(5, "GBP")).balance_summary == "£0.05 of £20.00 this month"
