"""The scheme: who clears with whom, and how. Pure data, read from a scheme file.

A scheme declares, each with effective dates (a dated item applies to the service days
from `effective_from` up to, not including, `effective_to`):
- parties: operators (mapped to GTFS agency ids, with a tier), retailers that sell
  top-ups, funders (councils, with their areas) that fund concessions and entitlements,
  providers (with the service categories they sell) paid for redemptions, and the scheme
  itself, each with its settlement bank account;
- fees: the clearing fee (basis points of the revenue of a journey and/or a fixed amount
  per journey) and the retailers' commission on top-ups;
- apportionment: the default method and rules per network or per operator set;
- funding: which funder pays for which rider categories on which networks and hours, and
  how the operators are reimbursed;
- entitlement schemes (a council's allowances and travel passes) and reward rules
  (docs/benefits.md).
A journey is always settled under the rules in force on its service day, also when a late
adjustment posts into a later period. See docs/scheme.md for the file format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from enum import StrEnum
from fractions import Fraction

from clearway.errors import ClearwayError


class SchemeError(ClearwayError, ValueError):
    """A scheme that cannot be used; `problems` name the file, the path in it and what."""

    code = "SCHEME_INVALID"

    def __init__(self, problems: Sequence[SchemeProblem]) -> None:
        self.problems = tuple(problems)
        shown = "; ".join(str(p) for p in self.problems[:10])
        more = f" (+{len(self.problems) - 10} more)" if len(self.problems) > 10 else ""
        super().__init__(f"scheme refused, {len(self.problems)} problem(s): {shown}{more}")


@dataclass(frozen=True, slots=True)
class SchemeProblem:
    """One defect: the file, the path inside it (`party[2].bank.iban`) and the problem."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}"


class PartyKind(StrEnum):
    """What a party is in the scheme."""

    OPERATOR = "operator"
    RETAILER = "retailer"
    FUNDER = "funder"
    SCHEME = "scheme"
    PROVIDER = "provider"  # a leisure or recreation provider paid for redemptions


class Tier(StrEnum):
    """An operator's tier."""

    LOCAL = "local"
    REGIONAL = "regional"
    NATIONAL = "national"


@dataclass(frozen=True, slots=True)
class BankAccount:
    """Where a party is paid: an IBAN (with an optional BIC), or a UK sort code and account
    number. Validated when the scheme is read (IBAN mod-97, BIC shape, 6 + 8 digits)."""

    iban: str | None = None
    bic: str | None = None
    sort_code: str | None = None  # "040004" (digits only)
    account_number: str | None = None  # "12345678"


@dataclass(frozen=True, slots=True)
class Dated:
    """The service days an item applies to: [effective_from, effective_to)."""

    effective_from: date
    effective_to: date | None = None

    def applies_on(self, day: date) -> bool:
        """Whether the item is in force on service day `day`."""
        return self.effective_from <= day and (self.effective_to is None or day < self.effective_to)


@dataclass(frozen=True, slots=True)
class Party:
    """A party that settles: it receives statements and is paid or pays."""

    party_id: str  # "operator:LUL", "retailer:cornershop", "funder:camden", "scheme:clearway"
    kind: PartyKind
    name: str
    bank: BankAccount
    dates: Dated
    agency_ids: frozenset[str] = frozenset()  # operators: the GTFS agencies they run
    tier: Tier | None = None  # operators only
    categories: frozenset[str] = frozenset()  # providers: the service categories they sell
    areas: frozenset[str] = frozenset()  # funders: the council's area, as GTFS area ids


@dataclass(frozen=True, slots=True)
class Fees:
    """The clearing fee and the retailers' commission."""

    dates: Dated
    clearing_fee_bps: int = 0  # of a journey's revenue (charge + reimbursement)
    clearing_fee_per_journey_minor: int = 0  # per journey with revenue
    retailer_commission_bps: int = 0  # of each top-up a retailer sells


class Method(StrEnum):
    """How a journey's revenue is split between its operators."""

    DISTANCE = "distance"  # km travelled on each operator's legs
    STANDALONE_FARE = "standalone_fare"  # each leg priced as if travelled alone
    EQUAL = "equal"  # the same for every operator of the journey
    FIXED = "fixed"  # declared percentages for a set of operators


@dataclass(frozen=True, slots=True)
class MethodRule:
    """A rule choosing the method: for journeys whose operators are exactly `agency_ids`
    (an operator-set rule), or whose legs are all on `network_id` (a network rule)."""

    rule_id: str
    method: Method
    dates: Dated
    network_id: str | None = None
    agency_ids: frozenset[str] | None = None
    # FIXED only: agency id -> percentage (exact; they sum to 100).
    percentages: tuple[tuple[str, Fraction], ...] = ()


@dataclass(frozen=True, slots=True)
class DefaultMethod:
    """The method for journeys no rule matches."""

    method: Method
    dates: Dated


@dataclass(frozen=True, slots=True)
class HoursWindow:
    """Local times on some days of the week: [start, end) on each day of `weekdays`
    (0 = Monday); `end` None means midnight (the end of the day)."""

    weekdays: frozenset[int]
    start: time
    end: time | None

    def contains(self, local: datetime) -> bool:
        """Whether local wall-clock instant `local` falls in the window."""
        if local.weekday() not in self.weekdays:
            return False
        at = local.time().replace(tzinfo=None)
        return self.start <= at and (self.end is None or at < self.end)


class ReimbursementForm(StrEnum):
    """How a funder reimburses an operator for a concession journey."""

    PERCENT_OF_FARE_FORGONE = "percent_of_fare_forgone"
    NO_BETTER_NO_WORSE = "no_better_no_worse"  # forgone x factor + per journey


@dataclass(frozen=True, slots=True)
class Reimbursement:
    """The reimbursement rule of a funding rule."""

    form: ReimbursementForm
    percent: Fraction = Fraction(0)  # PERCENT_OF_FARE_FORGONE: e.g. 55 for 55 %
    factor: Fraction = Fraction(0)  # NO_BETTER_NO_WORSE: e.g. 0.48
    additional_per_journey_minor: int = 0  # NO_BETTER_NO_WORSE


@dataclass(frozen=True, slots=True)
class FundingRule:
    """A funder pays for journeys of these rider categories, on these networks, starting
    in these hours (local time of the scheme)."""

    rule_id: str
    funder_id: str  # a FUNDER party
    rider_categories: frozenset[str]
    network_ids: frozenset[str]
    hours: tuple[HoursWindow, ...]
    reimbursement: Reimbursement
    dates: Dated


class EntitlementKind(StrEnum):
    """What an entitlement gives."""

    ALLOWANCE = "allowance"  # money per month to spend at providers
    TRAVEL_PASS = "travel_pass"  # a rider category (a senior bus pass) for its validity


@dataclass(frozen=True, slots=True)
class EntitlementScheme:
    """A council's entitlement scheme: who may be granted it (age on the day of the grant,
    residence area), what it gives, for how long, and the council's budget for it."""

    scheme_id: str
    funder_id: str  # a FUNDER party
    name: str
    kind: EntitlementKind
    dates: Dated
    min_age: int  # inclusive
    max_age: int  # inclusive
    areas: frozenset[str]  # residence areas eligible (the officer verifies)
    validity_days: int  # a grant is valid this many service days
    renewal_window_days: int  # re-enrolment opens this many days before a grant expires
    monthly_budget_minor: int  # the most the council pays out of the scheme in a month
    allowance_per_month_minor: int = 0  # ALLOWANCE: credited each calendar month
    categories: frozenset[str] = frozenset()  # ALLOWANCE: service categories it may buy
    per_visit_limit_minor: int = 0  # ALLOWANCE: the most one redemption may spend
    rider_category: str = ""  # TRAVEL_PASS: the GTFS rider category it gives


class RewardKind(StrEnum):
    """How a reward is earned."""

    OFF_PEAK_TRAVEL = "off_peak_travel"  # a journey starting in the rule's hours
    OFFICER_GRANT = "officer_grant"  # an officer of the funder grants it (volunteering)


class RewardCredit(StrEnum):
    """Where a reward is credited."""

    STORED_VALUE = "stored_value"  # the card's balance; the funder pays at once
    ENTITLEMENT = "entitlement"  # an entitlement's balance; paid when it is redeemed


class RewardPeriod(StrEnum):
    """A rule rewards an account at most once per period."""

    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class RewardRule:
    """A party's (a council's or an operator's) reward: earned how, worth what, credited
    where, at most once per account and period."""

    rule_id: str
    funder_id: str  # the party that pays: a FUNDER or an OPERATOR
    name: str
    kind: RewardKind
    amount_minor: int
    credit: RewardCredit
    period: RewardPeriod
    dates: Dated
    entitlement_scheme_id: str = ""  # credit ENTITLEMENT: a scheme of the same funder
    hours: tuple[HoursWindow, ...] = ()  # OFF_PEAK_TRAVEL: when the journey starts


@dataclass(frozen=True, slots=True)
class SettlementCalendar:
    """The settlement period and its cut-off."""

    timezone: str  # IANA, e.g. Europe/London
    cutoff: time  # a service day's period may be closed from this local time the next day
    reference_rider_category: str = "ADULT"  # whose fare a concession forgoes


@dataclass(frozen=True, slots=True)
class Scheme:
    """Everything the scheme file declares. Lookups take the journey's service day."""

    scheme_id: str
    name: str
    currency: str
    calendar: SettlementCalendar
    parties: tuple[Party, ...]
    fees: tuple[Fees, ...]
    default_methods: tuple[DefaultMethod, ...]
    method_rules: tuple[MethodRule, ...]
    funding_rules: tuple[FundingRule, ...]
    source: str = ""  # the file it was read from
    entitlement_schemes: tuple[EntitlementScheme, ...] = ()
    reward_rules: tuple[RewardRule, ...] = ()

    def party(self, party_id: str, day: date) -> Party | None:
        """The party `party_id` in force on `day`."""
        return next(
            (p for p in self.parties if p.party_id == party_id and p.dates.applies_on(day)), None
        )

    def parties_on(self, day: date) -> list[Party]:
        """Every party in force on `day`, by id."""
        return sorted(
            (p for p in self.parties if p.dates.applies_on(day)), key=lambda p: p.party_id
        )

    def operator_for(self, agency_id: str, day: date) -> Party | None:
        """The operator party that runs GTFS agency `agency_id` on `day`."""
        return next(
            (
                p
                for p in self.parties
                if p.kind is PartyKind.OPERATOR
                and agency_id in p.agency_ids
                and p.dates.applies_on(day)
            ),
            None,
        )

    def scheme_party(self, day: date) -> Party:
        """The scheme's own party on `day` (exactly one is declared for every day)."""
        found = [p for p in self.parties if p.kind is PartyKind.SCHEME and p.dates.applies_on(day)]
        if len(found) != 1:
            raise SchemeError(
                [SchemeProblem(self.source, "parties", f"no single scheme party in force on {day}")]
            )
        return found[0]

    def fees_on(self, day: date) -> Fees:
        """The fees in force on `day` (none declared: no fee, no commission)."""
        return next((f for f in self.fees if f.dates.applies_on(day)), Fees(Dated(day)))

    def default_method(self, day: date) -> Method:
        """The default apportionment method on `day` (EQUAL when none is declared)."""
        return next(
            (d.method for d in self.default_methods if d.dates.applies_on(day)), Method.EQUAL
        )

    def rules_on(self, day: date) -> list[MethodRule]:
        """Method rules in force on `day`, in file order."""
        return [r for r in self.method_rules if r.dates.applies_on(day)]

    def funding_on(self, day: date) -> list[FundingRule]:
        """Funding rules in force on `day`, in file order."""
        return [r for r in self.funding_rules if r.dates.applies_on(day)]

    def entitlement_scheme(self, scheme_id: str, day: date) -> EntitlementScheme | None:
        """The entitlement scheme `scheme_id` in force on `day`."""
        return next(
            (
                e
                for e in self.entitlement_schemes
                if e.scheme_id == scheme_id and e.dates.applies_on(day)
            ),
            None,
        )

    def entitlement_schemes_of(self, funder_id: str, day: date) -> list[EntitlementScheme]:
        """The entitlement schemes of council `funder_id` in force on `day`, in file order."""
        return [
            e
            for e in self.entitlement_schemes
            if e.funder_id == funder_id and e.dates.applies_on(day)
        ]

    def reward_rule(self, rule_id: str, day: date) -> RewardRule | None:
        """The reward rule `rule_id` in force on `day`."""
        return next(
            (r for r in self.reward_rules if r.rule_id == rule_id and r.dates.applies_on(day)),
            None,
        )

    def reward_rules_on(self, day: date) -> list[RewardRule]:
        """Reward rules in force on `day`, in file order."""
        return [r for r in self.reward_rules if r.dates.applies_on(day)]
