"""The portal's pure benefits pieces: reason codes in plain words, entitlement and scheme
views, the grant form's date of birth, the officer-role cookie, the report's CSV and the
SVG chart."""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from clearway.money import Money
from services.portal.domain.chart import Bar, bar_chart_svg
from services.portal.domain.council_report import (
    CouncilReportView,
    MonthError,
    ReportRowView,
    ReportTableView,
    budget_bars,
    current_month,
    parse_month,
    report_csv,
    spend_bars,
)
from services.portal.domain.entitlements import (
    AuditEventView,
    CouncilView,
    EntitlementMovementKind,
    EntitlementMovementView,
    EntitlementStatus,
    EntitlementView,
    GrantFormError,
    RewardRuleView,
    SchemeView,
    benefit_message,
    categories_text,
    month_text,
    parse_date_of_birth,
)
from services.portal.domain.messages import DEFAULT_MESSAGE
from services.portal.domain.roles import Role, role_cookie, role_from_cookie

SVG = "{http://www.w3.org/2000/svg}"
SECRET = b"k" * 32
DOCS = Path(__file__).resolve().parents[3] / "docs" / "benefits.md"


def gbp(minor: int) -> Money:
    return Money(minor, "GBP")


def youth_scheme(**overrides: object) -> SchemeView:
    fields: dict[str, object] = {
        "scheme_id": "camden-youth-leisure",
        "name": "Camden youth leisure allowance",
        "kind": "ALLOWANCE",
        "allowance_per_month": gbp(2000),
        "categories": ("swimming", "gym", "pitch_hire", "studio_hire"),
        "per_visit_limit": gbp(1000),
        "rider_category": "",
        "min_age": 11,
        "max_age": 18,
        "areas": ("camden",),
        "validity_days": 365,
        "renewal_window_days": 30,
        "monthly_budget": gbp(500_000),
        "budget_used": gbp(750),
    }
    fields.update(overrides)
    return SchemeView(**fields)  # type: ignore[arg-type]


def allowance(**overrides: object) -> EntitlementView:
    fields: dict[str, object] = {
        "entitlement_id": "ent-1",
        "scheme_id": "camden-youth-leisure",
        "scheme_name": "Camden youth leisure allowance",
        "funder_id": "funder:camden",
        "status": EntitlementStatus.ACTIVE,
        "valid_from": "2026-11-20",
        "valid_to": "2027-11-20",
        "balance": gbp(1400),
        "allowance_per_month": gbp(2000),
        "categories": ("swimming", "gym", "pitch_hire"),
        "per_visit_limit": gbp(1000),
        "rider_category": "",
        "renewal_opens": "2027-10-21",
        "granted_at": datetime(2026, 11, 20, 9, 0, tzinfo=UTC),
    }
    fields.update(overrides)
    return EntitlementView(**fields)  # type: ignore[arg-type]


# -- reason codes ------------------------------------------------------------------------


def test_every_reason_code_in_the_benefits_docs_has_plain_words() -> None:
    documented = set(re.findall(r"`([A-Z][A-Z_]{3,})`", DOCS.read_text(encoding="utf-8")))
    statuses = {
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "INVALID_ARGUMENT",
        "FAILED_PRECONDITION",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "ALLOWANCE",
        "TRAVEL_PASS",
        # Entitlement statuses, audit actions, movement and posting kinds: not refusals.
        "ACTIVE",
        "EXPIRED",
        "REVOKED",
        "RENEWED",
        "REWARDED",
        "REDEMPTION",
        "REWARD",
        "KIND_REDEMPTION",
        "KIND_REWARD",
    }
    codes = {c for c in documented - statuses if not c.startswith("CLEARWAY_")}
    assert {"NOT_ELIGIBLE_AGE", "BUDGET_EXHAUSTED", "REWARD_ALREADY_GRANTED"} <= codes
    for code in codes:
        assert benefit_message(code, youth_scheme()) != DEFAULT_MESSAGE, code


def test_age_and_area_refusals_name_the_schemes_limits() -> None:
    scheme = youth_scheme()
    assert (
        benefit_message("NOT_ELIGIBLE_AGE", scheme)
        == "Not eligible: age outside 11\u201318 on the day of the grant."
    )
    assert "(camden)" in benefit_message("NOT_ELIGIBLE_AREA", scheme)
    assert "the scheme's ages" in benefit_message("NOT_ELIGIBLE_AGE")
    two_areas = youth_scheme(areas=("camden", "islington"))
    assert "(camden and islington)" in benefit_message("NOT_ELIGIBLE_AREA", two_areas)


def test_a_code_the_benefits_pages_do_not_know_falls_back_to_the_portals_words() -> None:
    assert benefit_message("BAD_EMAIL") == "Enter an email address like name@example.org."
    assert benefit_message("SOMETHING_NEW") == DEFAULT_MESSAGE
    assert benefit_message(None) == DEFAULT_MESSAGE


# -- entitlements and schemes ----------------------------------------------------------


def test_an_allowance_shows_this_months_balance_validity_and_what_it_buys() -> None:
    e = allowance()
    assert e.is_allowance and e.status_text == "Active"
    assert e.balance_summary == "£14.00 of £20.00 this month"
    assert e.valid_text == "20 Nov 2026 to 19 Nov 2027"  # valid_to is the first day it is not
    assert e.categories_text == "swimming, gym and pitch hire"
    assert e.per_visit_text == "up to £10.00 a visit"
    assert allowance(per_visit_limit=gbp(0)).per_visit_text == ""
    assert not allowance(rider_category="SENIOR").is_allowance
    assert allowance(status=EntitlementStatus.REVOKED).status_text == "Revoked"


def test_movements_say_what_moved_the_allowance() -> None:
    def movement(kind: EntitlementMovementKind, **more: str) -> EntitlementMovementView:
        fields = {"provider_name": "", "category": "", **more}
        return EntitlementMovementView(kind, "2026-11", gbp(-750), at=None, **fields)

    assert movement(EntitlementMovementKind.ALLOWANCE).description == "Allowance for November 2026"
    redeemed = movement(
        EntitlementMovementKind.REDEMPTION, provider_name="Camden Leisure", category="pitch_hire"
    )
    assert redeemed.description == "Pitch hire at Camden Leisure"
    assert movement(EntitlementMovementKind.REWARD).description == "Reward"
    assert month_text("2026-13") == "2026-13" and month_text("2027-01") == "January 2027"
    assert categories_text(("gym",)) == "gym" and categories_text(()) == ""


def test_a_scheme_shows_its_budget_use_and_ages() -> None:
    scheme = youth_scheme()
    assert scheme.budget_summary == "£7.50 of £5000.00 used this month"
    assert scheme.budget_share == 0 and youth_scheme(budget_used=gbp(250_000)).budget_share == 50
    assert youth_scheme(monthly_budget=gbp(0)).budget_share == 0
    assert scheme.ages_text == "11\u201318"


def test_reward_rules_and_audit_events_in_words() -> None:
    rule = RewardRuleView(
        "volunteering", "Volunteering", "OFFICER_GRANT", gbp(500), "STORED_VALUE", "", "MONTH"
    )
    assert rule.officer_granted and rule.summary == "£5.00 to stored value, once a month"
    off_peak = RewardRuleView(
        "r2", "Off-peak", "OFF_PEAK_TRAVEL", gbp(100), "ENTITLEMENT", "youth", "DAY"
    )
    assert not off_peak.officer_granted
    assert off_peak.summary == "£1.00 to youth, once a day"
    council = CouncilView("funder:camden", (youth_scheme(scheme_id="youth"),), (off_peak,))
    assert council.reward_summary(off_peak) == (
        "£1.00 to Camden youth leisure allowance, once a day"
    )
    assert council.officer_grant_rules == ()
    assert AuditEventView(None, "REWARDED", "", "", "").action_text == "Reward credited"
    assert AuditEventView(None, "SOMETHING", "", "", "").action_text == "Something"


def test_the_grant_forms_date_of_birth() -> None:
    today = date(2026, 11, 20)
    assert parse_date_of_birth(" 2011-04-23 ", today) == "2011-04-23"
    for typed, code in (
        ("", "MISSING_DATE_OF_BIRTH"),
        ("23/04/2011", "BAD_DATE_OF_BIRTH"),
        ("2011-02-30", "BAD_DATE_OF_BIRTH"),
        ("2027-01-01", "BAD_DATE_OF_BIRTH"),  # in the future
        ("1890-01-01", "BAD_DATE_OF_BIRTH"),
        ("\uff12\uff10\uff11\uff11-04-23", "BAD_DATE_OF_BIRTH"),  # other scripts' digits
    ):
        with pytest.raises(GrantFormError) as refused:
            parse_date_of_birth(typed, today)
        assert refused.value.code == code, typed


# -- the officer role ----------------------------------------------------------------------


def test_the_role_cookie_is_bound_to_the_session_and_cannot_be_edited() -> None:
    officer = Role("officer", "funder:camden")
    value = role_cookie(SECRET, "session-a", officer)
    assert role_from_cookie(SECRET, "session-a", value) == officer
    assert role_from_cookie(SECRET, "session-a", value).officer  # type: ignore[union-attr]
    assert role_from_cookie(SECRET, "session-b", value) is None  # another session's
    assert role_from_cookie(b"x" * 32, "session-a", value) is None
    assert role_from_cookie(SECRET, "", value) is None
    traveller = role_cookie(SECRET, "session-a", Role("traveller"))
    forged = traveller.replace("traveller:", "officer:funder:camden", 1)
    assert role_from_cookie(SECRET, "session-a", forged) is None
    assert role_from_cookie(SECRET, "session-a", traveller) == Role("traveller")
    assert role_from_cookie(SECRET, "session-a", "") is None
    assert role_from_cookie(SECRET, "session-a", "garbage") is None


# -- the report: months, CSV, bars ---------------------------------------------------------


def spend_table() -> ReportTableView:
    return ReportTableView(
        "spend_by_category",
        ("category",),
        (
            ReportRowView(("gym",), 0, 0, gbp(0), suppressed=True),
            ReportRowView(("swimming",), 12, 30, gbp(22_500), suppressed=False),
            ReportRowView(("=cmd|' /C calc'!A0",), 15, 15, gbp(100), suppressed=False),
        ),
    )


def test_report_months() -> None:
    assert parse_month("2026-11") == "2026-11"
    assert current_month(date(2026, 1, 5)) == "2026-01"
    for typed in ("2026-13", "2026-1", "26-11", "1999-12", "2026-11-01", "november"):
        with pytest.raises(MonthError):
            parse_month(typed)


def test_report_csv_hides_suppressed_figures_and_never_starts_a_formula() -> None:
    rows = list(csv.reader(io.StringIO(report_csv(spend_table()))))
    assert rows[0] == ["category", "people", "redemptions", "amount", "currency"]
    assert rows[1] == ["gym", "<10", "<10", "<10", "GBP"]
    assert rows[2] == ["swimming", "12", "30", "225.00", "GBP"]
    assert rows[3][0] == "'=cmd|' /C calc'!A0"
    assert report_csv(spend_table()).endswith("\r\n")


def test_the_budget_table_is_money_only() -> None:
    table = ReportTableView(
        "budget",
        ("scheme", "name", "budget", "used"),
        (ReportRowView(("camden-youth-leisure", "Youth", "500000"), 0, 0, gbp(750), False),),
    )
    assert table.label_columns == ("scheme", "name", "budget") and not table.counts_people
    rows = list(csv.reader(io.StringIO(report_csv(table))))
    assert rows == [
        ["scheme", "name", "budget", "used", "currency"],
        ["camden-youth-leisure", "Youth", "500000", "7.50", "GBP"],
    ]
    bars = budget_bars(table, [youth_scheme(), youth_scheme(monthly_budget=gbp(0))], 10)
    assert bars == [
        Bar("Camden youth leisure allowance", 750, "£7.50", 500_000, "£5000.00"),
    ]
    assert budget_bars(None, [youth_scheme()], 10)[0].value == 0  # no redemptions yet


def test_spend_bars_leave_suppressed_cells_undrawn() -> None:
    bars = spend_bars(spend_table(), 10)
    assert bars[0] == Bar("gym", None, "fewer than 10 people: not shown")
    assert bars[1] == Bar("swimming", 22_500, "£225.00")
    report = CouncilReportView("funder:camden", "2026-11", (spend_table(),), 10)
    assert report.suppressed == "fewer than 10" and report.table("budget") is None
    assert report.table("spend_by_category") is not None
    assert spend_table().label_columns == ("category",)
    assert spend_table().title == "Spend by service category"
    assert ReportTableView("new_table", (), ()).title == "New table"


# -- the chart -------------------------------------------------------------------------------


def test_the_chart_is_an_accessible_svg_with_a_bar_a_shown_cell() -> None:
    bars = [
        Bar("swimming", 750, "£7.50"),
        Bar("gym", None, "fewer than 10 people: not shown"),
        Bar("pitch <hire>", 1500, "£15.00"),
    ]
    text = bar_chart_svg("chart-spend", "Spend by category, 2026-11", bars)
    svg = ET.fromstring(text)  # well-formed XML: every label escaped
    assert svg.tag == f"{SVG}svg" and svg.get("role") == "img"
    assert svg.get("aria-labelledby") == "chart-spend-title chart-spend-desc"
    title = svg.find(f"{SVG}title")
    assert title is not None and title.text == "Spend by category, 2026-11"
    assert title.get("id") == "chart-spend-title"
    desc = svg.find(f"{SVG}desc")
    assert desc is not None
    assert desc.text == (
        "swimming: £7.50; gym: fewer than 10 people: not shown; pitch <hire>: £15.00"
    )
    values = svg.findall(f".//{SVG}rect[@class='value']")
    assert len(values) == 2  # the suppressed cell is not drawn
    widths = [float(r.get("width", "0")) for r in values]
    assert widths[1] == pytest.approx(2 * widths[0])  # scaled to the largest
    groups = svg.findall(f"{SVG}g")
    assert [g.get("aria-label") for g in groups][1] == "gym: fewer than 10 people: not shown"
    assert "style=" not in text and "<script" not in text  # the CSP allows neither


def test_a_bar_with_a_limit_draws_the_limit_behind_it() -> None:
    text = bar_chart_svg("chart-budget", "Budget", [Bar("Youth", 250, "£2.50", 1000, "£10.00")])
    svg = ET.fromstring(text)
    limit = svg.find(f".//{SVG}rect[@class='limit']")
    value = svg.find(f".//{SVG}rect[@class='value']")
    assert limit is not None and value is not None
    assert float(limit.get("width", "0")) == pytest.approx(4 * float(value.get("width", "0")))
    assert "Youth: £2.50 of £10.00" in text


def test_an_empty_chart_says_so_and_ids_are_checked() -> None:
    svg = ET.fromstring(bar_chart_svg("chart-x", "Nothing", [], empty="No spending this month"))
    assert "No spending this month" in "".join(svg.itertext())
    with pytest.raises(ValueError):
        bar_chart_svg('x" onload="alert(1)', "t", [])
