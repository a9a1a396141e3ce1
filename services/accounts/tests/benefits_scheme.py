"""A scheme with councils, providers, entitlement schemes and reward rules, built in code
(the tests do not depend on the example scheme file's contents)."""

from __future__ import annotations

from datetime import date, time

from clearway.scheme.model import (
    BankAccount,
    Dated,
    EntitlementKind,
    EntitlementScheme,
    HoursWindow,
    Party,
    PartyKind,
    RewardCredit,
    RewardKind,
    RewardPeriod,
    RewardRule,
    Scheme,
    SettlementCalendar,
)

SINCE = Dated(date(2025, 1, 1))
BANK = BankAccount(sort_code="309466", account_number="18203974")
YOUTH = "camden-youth-leisure"
STUDIO = "camden-studio-pass"
SENIOR = "camden-senior-pass"
ISLINGTON_YOUTH = "islington-youth"


def _party(party_id: str, kind: PartyKind, name: str, **extra: object) -> Party:
    return Party(party_id, kind, name, BANK, SINCE, **extra)  # type: ignore[arg-type]


def youth_scheme(
    scheme_id: str = YOUTH,
    funder_id: str = "funder:camden",
    *,
    budget: int = 500_000,
    categories: frozenset[str] = frozenset({"swimming", "gym", "pitch_hire", "studio_hire"}),
    per_visit: int = 1000,
) -> EntitlementScheme:
    """An allowance of 20.00 a month for 11-18 year olds living in camden."""
    return EntitlementScheme(
        scheme_id=scheme_id,
        funder_id=funder_id,
        name=f"{scheme_id} (test)",
        kind=EntitlementKind.ALLOWANCE,
        dates=SINCE,
        min_age=11,
        max_age=18,
        areas=frozenset({"camden"}) if funder_id == "funder:camden" else frozenset({"islington"}),
        validity_days=365,
        renewal_window_days=30,
        monthly_budget_minor=budget,
        allowance_per_month_minor=2000,
        categories=categories,
        per_visit_limit_minor=per_visit,
    )


def benefits_scheme() -> Scheme:
    """Two councils, two providers, four entitlement schemes, three reward rules."""
    weekdays = HoursWindow(frozenset(range(5)), time(10, 0), time(16, 0))
    return Scheme(
        scheme_id="benefits-test",
        name="Benefits test scheme",
        currency="GBP",
        calendar=SettlementCalendar("Europe/London", time(10, 0)),
        parties=(
            _party("scheme:clearway", PartyKind.SCHEME, "Clearway"),
            _party("funder:camden", PartyKind.FUNDER, "Camden", areas=frozenset({"camden"})),
            _party("funder:islington", PartyKind.FUNDER, "Islington"),
            _party("operator:BUSCO", PartyKind.OPERATOR, "Bus co", agency_ids=frozenset({"BUSCO"})),
            _party(
                "provider:camden-leisure",
                PartyKind.PROVIDER,
                "Camden Leisure",
                categories=frozenset({"swimming", "gym", "pitch_hire"}),
            ),
            _party(
                "provider:soundbox",
                PartyKind.PROVIDER,
                "Soundbox studios",
                categories=frozenset({"studio_hire"}),
            ),
        ),
        fees=(),
        default_methods=(),
        method_rules=(),
        funding_rules=(),
        entitlement_schemes=(
            youth_scheme(),
            youth_scheme(
                STUDIO, budget=2500, categories=frozenset({"studio_hire"}), per_visit=2000
            ),
            EntitlementScheme(
                scheme_id=SENIOR,
                funder_id="funder:camden",
                name="Camden senior pass (test)",
                kind=EntitlementKind.TRAVEL_PASS,
                dates=SINCE,
                min_age=66,
                max_age=120,
                areas=frozenset({"camden"}),
                validity_days=365 * 5,
                renewal_window_days=60,
                monthly_budget_minor=1_000_000,
                rider_category="SENIOR",
            ),
            youth_scheme(ISLINGTON_YOUTH, "funder:islington"),
        ),
        reward_rules=(
            RewardRule(
                "camden-volunteering",
                "funder:camden",
                "Volunteering",
                RewardKind.OFFICER_GRANT,
                500,
                RewardCredit.STORED_VALUE,
                RewardPeriod.MONTH,
                SINCE,
            ),
            RewardRule(
                "camden-youth-bonus",
                "funder:camden",
                "Youth bonus",
                RewardKind.OFFICER_GRANT,
                500,
                RewardCredit.ENTITLEMENT,
                RewardPeriod.MONTH,
                SINCE,
                entitlement_scheme_id=YOUTH,
            ),
            RewardRule(
                "busco-off-peak",
                "operator:BUSCO",
                "Off-peak bus",
                RewardKind.OFF_PEAK_TRAVEL,
                50,
                RewardCredit.STORED_VALUE,
                RewardPeriod.DAY,
                SINCE,
                hours=(weekdays,),
            ),
        ),
    )
