"""Council entitlements as the portal shows them: a traveller's own (allowance balance,
movements) and a council officer's (schemes and budgets, grants, rewards, the audit trail),
and the plain words for every benefits reason code (docs/benefits.md)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from clearway.money import Money
from services.portal.domain.journeys import format_money
from services.portal.domain.messages import message_for

EN_DASH = "\u2013"  # between the ages of a range, as typeset
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def day_text(service_day: str) -> str:
    """'2026-11-20' as '20 Nov 2026' (the text itself when it is not a date)."""
    try:
        return date.fromisoformat(service_day).strftime("%d %b %Y")
    except ValueError:
        return service_day


def month_text(month: str) -> str:
    """'2026-11' as 'November 2026' (the text itself when it is not a month)."""
    year, _, number = month.partition("-")
    if year.isdigit() and number.isdigit() and 1 <= int(number) <= 12:
        return f"{MONTHS[int(number) - 1]} {year}"
    return month


def category_text(category: str) -> str:
    """A service category as words: 'pitch_hire' as 'pitch hire'."""
    return category.replace("_", " ")


def categories_text(categories: tuple[str, ...]) -> str:
    """'swimming, gym, pitch hire and studio hire'."""
    words = [category_text(c) for c in categories]
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


class EntitlementStatus(StrEnum):
    """Where an entitlement stands (accounts' ACTIVE, EXPIRED, REVOKED)."""

    ACTIVE = "ACTIVE"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"
    OTHER = ""


STATUS_TEXT = {
    EntitlementStatus.ACTIVE: "Active",
    EntitlementStatus.EXPIRED: "Expired",
    EntitlementStatus.REVOKED: "Revoked",
    EntitlementStatus.OTHER: "Unknown",
}


@dataclass(frozen=True, slots=True)
class EntitlementView:
    """One entitlement of a traveller (an allowance or a travel pass)."""

    entitlement_id: str
    scheme_id: str
    scheme_name: str
    funder_id: str
    status: EntitlementStatus
    valid_from: str  # service day, YYYY-MM-DD
    valid_to: str  # the first day it is no longer valid
    balance: Money  # allowance: what is left this month
    allowance_per_month: Money
    categories: tuple[str, ...]
    per_visit_limit: Money
    rider_category: str  # travel pass: the rider category it gives
    renewal_opens: str
    granted_at: datetime | None

    @property
    def is_allowance(self) -> bool:
        """True for money to spend at providers (not a travel pass)."""
        return not self.rider_category

    @property
    def status_text(self) -> str:
        """'Active', 'Expired', 'Revoked'."""
        return STATUS_TEXT[self.status]

    @property
    def balance_summary(self) -> str:
        """'£14.00 of £20.00 this month'."""
        return (
            f"{format_money(self.balance)} of {format_money(self.allowance_per_month)} this month"
        )

    @property
    def valid_text(self) -> str:
        """'20 Nov 2026 to 19 Nov 2027' (valid_to is the first day it is not valid)."""
        return f"{day_text(self.valid_from)} to {day_text(last_valid_day(self.valid_to))}"

    @property
    def categories_text(self) -> str:
        """What it may buy, in words."""
        return categories_text(self.categories)

    @property
    def per_visit_text(self) -> str:
        """'up to £10.00 a visit', or '' when there is no limit."""
        if self.per_visit_limit.amount_minor <= 0:
            return ""
        return f"up to {format_money(self.per_visit_limit)} a visit"


def last_valid_day(valid_to: str) -> str:
    """The last service day an entitlement is valid, from the first day it is not."""
    try:
        return (date.fromisoformat(valid_to) - timedelta(days=1)).isoformat()
    except ValueError:
        return valid_to


class EntitlementMovementKind(StrEnum):
    """What moved an entitlement's balance."""

    ALLOWANCE = "ALLOWANCE"
    REDEMPTION = "REDEMPTION"
    REWARD = "REWARD"
    OTHER = ""


@dataclass(frozen=True, slots=True)
class EntitlementMovementView:
    """One movement of an entitlement: the month's allowance, a redemption, a reward."""

    kind: EntitlementMovementKind
    month: str  # YYYY-MM it counts in
    amount: Money  # signed: allowance and rewards positive, redemptions negative
    provider_name: str
    category: str
    at: datetime | None

    @property
    def description(self) -> str:
        """'Allowance for November 2026', 'Swimming at Camden Leisure', 'Reward'."""
        if self.kind is EntitlementMovementKind.ALLOWANCE:
            return f"Allowance for {month_text(self.month)}"
        if self.kind is EntitlementMovementKind.REDEMPTION:
            what = category_text(self.category).capitalize() or "Spent"
            return f"{what} at {self.provider_name}" if self.provider_name else what
        if self.kind is EntitlementMovementKind.REWARD:
            return "Reward"
        return "Balance change"


@dataclass(frozen=True, slots=True)
class SchemeView:
    """One of the officer's council's entitlement schemes, with this month's budget use."""

    scheme_id: str
    name: str
    kind: str  # ALLOWANCE or TRAVEL_PASS
    allowance_per_month: Money
    categories: tuple[str, ...]
    per_visit_limit: Money
    rider_category: str
    min_age: int
    max_age: int
    areas: tuple[str, ...]
    validity_days: int
    renewal_window_days: int
    monthly_budget: Money
    budget_used: Money

    @property
    def ages_text(self) -> str:
        """'11-18' with an en dash (as typeset)."""
        return f"{self.min_age}{EN_DASH}{self.max_age}"

    @property
    def areas_text(self) -> str:
        """'camden' or 'camden and islington'."""
        return categories_text(self.areas)

    @property
    def budget_summary(self) -> str:
        """'£7.50 of £5,000.00 used this month'."""
        return (
            f"{format_money(self.budget_used)} of {format_money(self.monthly_budget)} "
            "used this month"
        )

    @property
    def budget_share(self) -> int:
        """Whole per cent of the monthly budget used (0 without a budget)."""
        if self.monthly_budget.amount_minor <= 0:
            return 0
        return self.budget_used.amount_minor * 100 // self.monthly_budget.amount_minor


@dataclass(frozen=True, slots=True)
class RewardRuleView:
    """A reward rule the council pays."""

    rule_id: str
    name: str
    kind: str  # OFF_PEAK_TRAVEL or OFFICER_GRANT
    amount: Money
    credit: str  # STORED_VALUE or ENTITLEMENT
    entitlement_scheme_id: str
    period: str  # DAY or MONTH

    @property
    def officer_granted(self) -> bool:
        """True for the rules an officer grants by hand (officer_grant)."""
        return self.kind.upper() == "OFFICER_GRANT"

    @property
    def summary(self) -> str:
        """'£5.00 to stored value, once a month'."""
        return self.summary_naming(self.entitlement_scheme_id)

    def summary_naming(self, scheme_name: str) -> str:
        """The summary with the entitlement credited named: '£5.00 to Youth leisure, once
        a month'."""
        credit = f"to {scheme_name}" if self.credit.upper() == "ENTITLEMENT" else "to stored value"
        period = {"DAY": "once a day", "MONTH": "once a month"}.get(self.period.upper(), "")
        return ", ".join(p for p in (f"{format_money(self.amount)} {credit}", period) if p)


@dataclass(frozen=True, slots=True)
class CouncilView:
    """What ListEntitlementSchemes tells an officer: their council and its schemes."""

    funder_id: str
    schemes: tuple[SchemeView, ...]
    reward_rules: tuple[RewardRuleView, ...]

    def scheme(self, scheme_id: str) -> SchemeView | None:
        """The council's scheme of that id, if it has one."""
        return next((s for s in self.schemes if s.scheme_id == scheme_id), None)

    def reward_summary(self, rule: RewardRuleView) -> str:
        """A rule's summary naming the council's scheme it credits."""
        scheme = self.scheme(rule.entitlement_scheme_id)
        return rule.summary_naming(scheme.name if scheme else rule.entitlement_scheme_id)

    @property
    def officer_grant_rules(self) -> tuple[RewardRuleView, ...]:
        """The reward rules an officer may grant."""
        return tuple(r for r in self.reward_rules if r.officer_granted)


@dataclass(frozen=True, slots=True)
class GrantView:
    """One of the council's grants, with the traveller's email (officers only)."""

    entitlement: EntitlementView
    traveller_email: str
    granted_by: str


AUDIT_ACTIONS = {
    "GRANTED": "Granted",
    "RENEWED": "Renewed",
    "EXPIRED": "Expired",
    "REVOKED": "Revoked",
    "REWARDED": "Reward credited",
}


@dataclass(frozen=True, slots=True)
class AuditEventView:
    """One line of the council's audit trail."""

    at: datetime | None
    action: str
    entitlement_id: str
    actor: str
    detail: str

    @property
    def action_text(self) -> str:
        """'Granted', 'Revoked', 'Reward credited', ..."""
        return AUDIT_ACTIONS.get(self.action.upper(), self.action.capitalize())


class GrantFormError(ValueError):
    """A grant form the portal will not send; `code` says why."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def parse_date_of_birth(text: str, today: date) -> str:
    """The date of birth typed into the grant form, as YYYY-MM-DD.

    MISSING_DATE_OF_BIRTH when empty; BAD_DATE_OF_BIRTH when it is not a date, is in the
    future or more than 130 years ago. Eligibility itself is accounts' to decide.
    """
    cleaned = text.strip()
    if not cleaned:
        raise GrantFormError("MISSING_DATE_OF_BIRTH")
    if len(cleaned) != 10 or not cleaned.isascii():
        raise GrantFormError("BAD_DATE_OF_BIRTH")
    try:
        born = date.fromisoformat(cleaned)
    except ValueError:
        raise GrantFormError("BAD_DATE_OF_BIRTH") from None
    if born > today or born.year < today.year - 130:
        raise GrantFormError("BAD_DATE_OF_BIRTH")
    return born.isoformat()


# Every reason code of docs/benefits.md (grants, rewards, redemptions), and the portal's
# own form checks, in words an officer or a traveller can act on. `{ages}` and `{areas}`
# are the chosen scheme's.
BENEFIT_MESSAGES = {
    # Grants (OfficerService.GrantEntitlement)
    "NOT_ELIGIBLE_AGE": "Not eligible: age outside {ages} on the day of the grant.",
    "NOT_ELIGIBLE_AREA": "Not eligible: the residence area is not one of the scheme's ({areas}).",
    "UNKNOWN_TRAVELLER": (
        "There is no traveller account with that email address. Ask them to create one "
        "first, then grant it."
    ),
    "UNKNOWN_ENTITLEMENT_SCHEME": "That scheme is not one of your council's schemes.",
    "ALREADY_GRANTED": (
        "This traveller already has an active grant of that scheme, and its renewal has not "
        "opened yet."
    ),
    # Rewards (OfficerService.GrantReward)
    "REWARD_ALREADY_GRANTED": (
        "This traveller has already had that reward in this period. It can be given once a period."
    ),
    "UNKNOWN_REWARD_RULE": "That reward is not one your council's officers can grant.",
    # Revocations and the grants' pages
    "UNKNOWN_ENTITLEMENT": "We could not find that grant among your council's.",
    "NOT_AN_OFFICER": "These pages are for council officers only.",
    # Redemptions (RedemptionService.Redeem): the device and its key
    "UNKNOWN_DEVICE": "Refused: the device is not registered.",
    "UNKNOWN_KEY": "Refused: the device's key is not registered.",
    "BAD_SIGNATURE": "Refused: the device's signature does not match the redemption.",
    "DEVICE_REVOKED": "Refused: the device has been revoked.",
    # ... the request's fields
    "BAD_CARD_TOKEN": "Refused: that is not a card token.",
    "BAD_CATEGORY": "Refused: that is not a service category.",
    "BAD_AMOUNT": "Refused: the amount must be more than zero.",
    "CURRENCY_MISMATCH": "Refused: the amount is not in the scheme's currency.",
    "BAD_IDEMPOTENCY_KEY": "Refused: the redemption's key is missing or malformed.",
    "BAD_REQUESTED_AT": "Refused: the till's clock is wrong, or the visit was queued too long ago.",
    "UNDECODABLE_REQUEST": "Refused: the request could not be read.",
    # ... the provider, the entitlement and the scheme's rules
    "CATEGORY_NOT_OFFERED": "Refused: this provider does not sell that service.",
    "NO_ENTITLEMENT": "Refused: the card's account has no entitlement for this.",
    "ENTITLEMENT_EXPIRED": "Refused: the entitlement has expired.",
    "ENTITLEMENT_REVOKED": "Refused: the entitlement has been revoked.",
    "CATEGORY_NOT_ALLOWED": "Refused: the entitlement cannot be spent on that service.",
    "OVER_VISIT_LIMIT": "Refused: the amount is over the scheme's limit for one visit.",
    "INSUFFICIENT_ENTITLEMENT": "Refused: not enough left of this month's allowance.",
    "BUDGET_EXHAUSTED": "Refused: the council's budget for this scheme is spent this month.",
    "IDEMPOTENCY_KEY_REUSED": (
        "That form was already used for another grant, so nothing was done this time. Check "
        "the list and use the form again if you still need to."
    ),
    # The portal's own form checks
    "MISSING_TRAVELLER_EMAIL": "Enter the traveller's email address.",
    "MISSING_SCHEME": "Choose a scheme.",
    "MISSING_DATE_OF_BIRTH": "Enter the date of birth you checked, like 2011-04-23.",
    "BAD_DATE_OF_BIRTH": "Enter a real date of birth, like 2011-04-23.",
    "BAD_VALID_FROM": "A grant may start today or up to 31 days back, not later.",
    "BAD_EVIDENCE": "Keep the evidence note to 200 characters.",
    "BAD_PAGE_TOKEN": "That page link has expired. Start again from the first page.",
    "NOT_SIGNED_IN": "Your session has ended. Sign in again.",
    "NO_CARD": "Not credited: the traveller has no scheme card to credit.",
    "UNKNOWN_PROVIDER": "Refused: the device's provider is not part of the scheme today.",
    "UNKNOWN_FUNDER": "That council is not part of the scheme.",
    "DEVICE_EXISTS": "That device id is already registered to another provider or key.",
    "MISSING_RESIDENCE_AREA": "Enter the residence area you checked.",
    "MISSING_EVIDENCE": "Note the evidence you saw (a document reference, never a copy).",
    "MISSING_REWARD_RULE": "Choose a reward.",
    "MISSING_REASON": "Give a reason.",
    "BAD_MONTH": "Enter a month like 2026-11.",
}


def benefit_message(code: str | None, scheme: SchemeView | None = None) -> str:
    """The plain words of a benefits reason code (the portal's usual text for any other).

    Age and area refusals name the scheme's limits when the scheme is known.
    """
    text = BENEFIT_MESSAGES.get(code or "")
    if text is None:
        return message_for(code)
    ages = scheme.ages_text if scheme is not None else "the scheme's ages"
    areas = scheme.areas_text if scheme is not None and scheme.areas else "see the scheme"
    return text.replace("{ages}", ages).replace("{areas}", areas)
