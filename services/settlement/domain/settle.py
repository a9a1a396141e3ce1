"""Settling one journey under the scheme: who is owed what, to the penny, and why.

A journey's settlement is computed from its `JourneyBasis` (legs, charge, rider category,
start time) under the scheme rules in force on its service day:

1. **Operators**: each leg's GTFS agency maps to its operator party on the service day;
   several agencies of one party count as one operator. Operators are ordered by first
   appearance among the legs; that order breaks every rounding tie (see below).
2. **Method**: an operator-set rule whose `agency_ids` equal the journey's set of agencies;
   else a network rule whose `network_id` every leg is on; else the default method. Within
   each kind the first matching rule in file order wins, and operator-set rules are tried
   before network rules whatever their place in the file (a rule naming both an agency set
   and a network must match both; a rule naming neither never matches).
3. **Weights** per operator: distance (metres of its legs), standalone fare (minor units
   of its legs priced alone; a leg without one counts 0), equal (1 each), fixed (the
   declared percentages of its agencies, on a common denominator; an agency the rule does
   not list counts 0). All weights 0: the journey falls back to equal, and says so.
4. **Funding**: the first funding rule in force whose rider categories contain the
   journey's, whose networks contain every leg's network, and one of whose hours windows
   contains the start time in the scheme's timezone. The fare forgone is the reference
   (adult) fare of the legs, each priced alone (a leg without one: its standalone fare),
   less what the traveller was charged, never below 0; transfer discounts an adult would
   have had are not deducted. The funder reimburses a percentage of it, or (no better, no
   worse off) it times a factor plus an amount per journey. No start time, no funding.
5. **Revenue** = charge + reimbursement. The clearing fee is basis points of the revenue
   (rounded half up) plus the per-journey amount, at most the revenue, 0 when the revenue
   is not positive.
6. **Shares**: the revenue is split by the weights with `Money.allocate` (largest
   remainder), giving each operator's gross share; the fee is split in proportion to the
   gross shares, again by largest remainder, so no operator's fee part exceeds its gross
   share (splitting the fee by the raw weights could, by one penny, since the largest
   remainder method is not monotone). Net = gross - fee part; sum of nets + fee = revenue.

**Tie-break**: the largest-remainder method gives the pennies left after rounding down to
the operators with the largest remainders; between equal remainders, to the operator that
appears first among the legs (100p over three equal weights: 34/33/33, the 34 to the
operator of the first leg).

**Rounding** of fees, commissions and reimbursements is half up (half away from zero) on
exact fractions, never floats: `round_half_up`.

**Position** (positive credits the party), zero entries omitted, always summing to zero:
the scheme party `traveller_charges` = -charge and `clearing_fees` = +fee; each operator
`fare_revenue` = +gross share and `clearing_fees` = -its fee part; the funder
`concession_reimbursements` = -reimbursement. A withdrawn journey (no legs, charge 0) has
an empty position; `ledger.postings_for_settlement` posts the difference from what stands.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from fractions import Fraction
from types import MappingProxyType
from zoneinfo import ZoneInfo

from clearway.money import Money
from clearway.scheme.model import (
    FundingRule,
    Method,
    MethodRule,
    Party,
    PartyKind,
    Reimbursement,
    ReimbursementForm,
    Scheme,
)

from .benefits import BenefitKind, BenefitPosting
from .errors import InvalidBenefitPostingError, InvalidJourneyError, SettlementError

TRAVELLER_CHARGES = "traveller_charges"  # scheme: what travellers were charged
CLEARING_FEES = "clearing_fees"  # scheme: fees earned; operator: fees paid
FARE_REVENUE = "fare_revenue"  # operator: its gross share of the revenue
CONCESSION_REIMBURSEMENTS = "concession_reimbursements"  # funder: what it pays
TOP_UPS_SOLD = "top_ups_sold"  # retailer: top-ups it collected and owes
COMMISSION = "commission"  # retailer: commission it earned
TRAVELLER_FLOAT = "traveller_float"  # scheme: stored value owed to travellers
COMMISSION_PAID = "commission_paid"  # scheme: commission paid to retailers
# Benefits (docs/benefits.md): a council pays for what its entitlements buy at providers
# and for rewards credited to stored value (which the scheme then holds for the traveller,
# in traveller_float, as it holds top-ups).
VOUCHERS_FUNDED = "vouchers_funded"  # funder: redemptions at providers it owes
VOUCHER_REDEMPTIONS = "voucher_redemptions"  # provider: redemptions it is owed
REWARDS_FUNDED = "rewards_funded"  # funder or operator: rewards it owes the traveller float

DEFAULT_RULE_ID = "default"
"""The `method_rule_id` of a journey no method rule matched."""

Position = dict[tuple[str, str], Money]
"""Amounts per (party id, account); positive credits the party."""


class InvalidTopUpError(SettlementError):
    """A top-up that cannot be settled; `code` says why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}", code=code)
        self.detail = detail


def round_half_up(value: Fraction | int) -> int:
    """`value` rounded to the nearest integer, halves away from zero (2.5 -> 3, -2.5 -> -3)."""
    exact = Fraction(value)
    magnitude = (2 * abs(exact.numerator) + exact.denominator) // (2 * exact.denominator)
    return magnitude if exact >= 0 else -magnitude


@dataclass(frozen=True, slots=True)
class Leg:
    """One physical leg as settlement sees it."""

    leg_id: str
    agency_id: str  # the GTFS agency (the tap event's operator_id)
    network_id: str = ""  # "" = unknown: matches no network rule and no funding rule
    distance_m: int = 0
    standalone_fare: Money | None = None  # the leg priced alone, traveller's category
    reference_fare: Money | None = None  # the leg priced alone, the reference category

    def __post_init__(self) -> None:
        if not self.agency_id:
            raise InvalidJourneyError("MISSING_OPERATOR", f"leg {self.leg_id!r} has no agency")
        if self.distance_m < 0:
            raise InvalidJourneyError("INVALID_LEG", f"leg {self.leg_id!r}: distance < 0")
        for fare in (self.standalone_fare, self.reference_fare):
            if fare is not None and fare.amount_minor < 0:
                raise InvalidJourneyError("INVALID_LEG", f"leg {self.leg_id!r}: fare < 0")


@dataclass(frozen=True, slots=True)
class JourneyBasis:
    """Everything a journey's settlement is computed from."""

    journey_id: str
    revision: int
    service_day: date
    started_at: datetime | None  # first leg's entry, timezone-aware (UTC)
    rider_category_id: str
    charge: Money  # what the traveller pays, after caps and transfer discounts
    legs: tuple[Leg, ...]

    def __post_init__(self) -> None:
        if not self.journey_id:
            raise InvalidJourneyError("MISSING_JOURNEY_ID", "journey_id is empty")
        if self.revision < 1:
            raise InvalidJourneyError("INVALID_REVISION", f"revision {self.revision} < 1")
        if not self.legs and self.charge.amount_minor != 0:
            raise InvalidJourneyError("NO_LEGS", "a non-zero charge needs at least one leg")
        if self.started_at is not None and self.started_at.utcoffset() is None:
            raise InvalidJourneyError("INVALID_STARTED_AT", "started_at must be timezone-aware")
        for leg in self.legs:
            for fare in (leg.standalone_fare, leg.reference_fare):
                if fare is not None and fare.currency != self.charge.currency:
                    raise InvalidJourneyError(
                        "CURRENCY_MISMATCH",
                        f"leg {leg.leg_id!r} priced in {fare.currency},"
                        f" journey charged in {self.charge.currency}",
                    )


@dataclass(frozen=True, slots=True)
class OperatorShare:
    """One operator's part of a journey's revenue, and how it was reached."""

    party_id: str
    agency_ids: tuple[str, ...]  # its agencies on the journey, in order of appearance
    weight: int  # what the method measured (metres, minor units, 1, scaled percentage)
    proportion: Fraction  # weight / sum of the weights, exact
    gross: Money  # its share of the revenue
    fee: Money  # its part of the clearing fee
    net: Money  # gross - fee


@dataclass(frozen=True, slots=True)
class Settlement:
    """The outcome of settling one journey revision, and why."""

    journey_id: str
    revision: int
    service_day: date
    scheme_id: str
    method: Method | None  # None for a withdrawn journey
    method_rule_id: str | None  # DEFAULT_RULE_ID when no rule matched; None when withdrawn
    fell_back_to_equal: bool  # the method's weights were all 0
    funding_rule_id: str | None
    funder_id: str | None
    charge: Money
    fare_forgone: Money  # 0 unless funded
    reimbursement: Money  # 0 unless funded
    revenue: Money  # charge + reimbursement
    fee: Money
    shares: tuple[OperatorShare, ...]
    position: Mapping[tuple[str, str], Money]  # read-only; see the module docstring

    @property
    def currency(self) -> str:
        """The currency of every amount of the settlement."""
        return self.charge.currency


def settle_journey(scheme: Scheme, basis: JourneyBasis) -> Settlement:
    """Settle `basis` under the rules `scheme` has in force on its service day."""
    if basis.charge.currency != scheme.currency:
        raise InvalidJourneyError(
            "CURRENCY_MISMATCH",
            f"journey {basis.journey_id} charged in {basis.charge.currency},"
            f" scheme {scheme.scheme_id} settles in {scheme.currency}",
        )
    if not basis.legs:
        return _withdrawn(scheme, basis)
    day = basis.service_day
    operators = _operators_of(scheme, basis)
    rule = _method_rule(scheme.rules_on(day), basis.legs)
    method = rule.method if rule is not None else scheme.default_method(day)
    weights = _weights(method, rule, operators, basis.legs)
    fell_back = sum(weights) == 0
    if fell_back:
        weights = [1] * len(operators)
    funding, forgone, reimbursement = _funding(scheme, basis)
    revenue = basis.charge + reimbursement
    fee = clearing_fee(scheme, day, revenue)
    shares = _shares(operators, weights, revenue, fee)
    funder_id = funding.funder_id if funding is not None else None
    position = _position(
        scheme.scheme_party(day),
        basis.charge,
        fee,
        shares,
        funder_id=funder_id,
        reimbursement=reimbursement,
    )
    return Settlement(
        journey_id=basis.journey_id,
        revision=basis.revision,
        service_day=day,
        scheme_id=scheme.scheme_id,
        method=method,
        method_rule_id=rule.rule_id if rule is not None else DEFAULT_RULE_ID,
        fell_back_to_equal=fell_back,
        funding_rule_id=funding.rule_id if funding is not None else None,
        funder_id=funder_id,
        charge=basis.charge,
        fare_forgone=forgone,
        reimbursement=reimbursement,
        revenue=revenue,
        fee=fee,
        shares=shares,
        position=MappingProxyType(position),
    )


def clearing_fee(scheme: Scheme, day: date, revenue: Money) -> Money:
    """The clearing fee on a journey's `revenue`: basis points (half up) + per journey,
    at most the revenue; 0 when the revenue is not positive."""
    if revenue.amount_minor <= 0:
        return Money.zero(revenue.currency)
    fees = scheme.fees_on(day)
    amount = round_half_up(Fraction(revenue.amount_minor * fees.clearing_fee_bps, 10_000))
    amount += fees.clearing_fee_per_journey_minor
    return Money(max(0, min(amount, revenue.amount_minor)), revenue.currency)


def commission_for_top_up(scheme: Scheme, day: date, amount: Money) -> Money:
    """A retailer's commission on a top-up of `amount`: basis points, rounded half up
    (a reversed top-up, negative, reverses the same commission)."""
    if amount.currency != scheme.currency:
        raise InvalidTopUpError(
            "CURRENCY_MISMATCH",
            f"top-up in {amount.currency}, scheme {scheme.scheme_id} settles in {scheme.currency}",
        )
    bps = scheme.fees_on(day).retailer_commission_bps
    return Money(round_half_up(Fraction(amount.amount_minor * bps, 10_000)), amount.currency)


def top_up_position(scheme: Scheme, day: date, retailer_id: str, amount: Money) -> Position:
    """Where the ledger stands after retailer `retailer_id` sold a top-up of `amount`:
    the retailer owes the amount less its commission; the scheme holds the amount for the
    traveller and pays the commission. Zero entries omitted; sums to zero."""
    retailer = scheme.party(retailer_id, day)
    if retailer is None or retailer.kind is not PartyKind.RETAILER:
        raise InvalidTopUpError("UNKNOWN_RETAILER", f"no retailer {retailer_id} on {day}")
    commission = commission_for_top_up(scheme, day, amount)
    scheme_id = scheme.scheme_party(day).party_id
    position: Position = {
        (retailer_id, TOP_UPS_SOLD): -amount,
        (retailer_id, COMMISSION): commission,
        (scheme_id, TRAVELLER_FLOAT): amount,
        (scheme_id, COMMISSION_PAID): -commission,
    }
    return {key: value for key, value in position.items() if value.amount_minor != 0}


def benefit_position(scheme: Scheme, day: date, posting: BenefitPosting) -> Position:
    """Where the ledger stands after `posting`, under the parties in force on `day`: a
    redemption makes its funder (a council) owe the provider the amount; a reward makes its
    funder (a council or an operator) owe the scheme's traveller float the amount. Zero
    entries omitted; sums to zero."""
    amount = posting.amount
    if amount.currency != scheme.currency:
        raise InvalidBenefitPostingError(
            "CURRENCY_MISMATCH",
            f"{posting.kind} in {amount.currency}, scheme {scheme.scheme_id} settles in"
            f" {scheme.currency}",
        )
    funder = scheme.party(posting.funder_id, day)
    if posting.kind is BenefitKind.REDEMPTION:
        if funder is None or funder.kind is not PartyKind.FUNDER:
            raise InvalidBenefitPostingError(
                "UNKNOWN_FUNDER", f"no funder {posting.funder_id} on {day}"
            )
        provider = scheme.party(posting.provider_id, day)
        if provider is None or provider.kind is not PartyKind.PROVIDER:
            raise InvalidBenefitPostingError(
                "UNKNOWN_PROVIDER", f"no provider {posting.provider_id} on {day}"
            )
        position: Position = {
            (funder.party_id, VOUCHERS_FUNDED): -amount,
            (provider.party_id, VOUCHER_REDEMPTIONS): amount,
        }
    elif posting.kind is BenefitKind.REWARD:
        if funder is None or funder.kind not in (PartyKind.FUNDER, PartyKind.OPERATOR):
            raise InvalidBenefitPostingError(
                "UNKNOWN_FUNDER", f"no funder or operator {posting.funder_id} on {day}"
            )
        position = {
            (funder.party_id, REWARDS_FUNDED): -amount,
            (scheme.scheme_party(day).party_id, TRAVELLER_FLOAT): amount,
        }
    else:
        raise InvalidBenefitPostingError("UNKNOWN_KIND", f"kind {posting.kind!r}")
    return {key: value for key, value in position.items() if value.amount_minor != 0}


@dataclass(frozen=True, slots=True)
class _Operator:
    party_id: str
    agency_ids: tuple[str, ...]


def _operators_of(scheme: Scheme, basis: JourneyBasis) -> list[_Operator]:
    """The journey's operator parties, in order of first appearance among the legs."""
    agencies: dict[str, list[str]] = {}
    for leg in basis.legs:
        party = scheme.operator_for(leg.agency_id, basis.service_day)
        if party is None:
            raise InvalidJourneyError(
                "UNMAPPED_OPERATOR",
                f"journey {basis.journey_id} leg {leg.leg_id}: agency {leg.agency_id}"
                f" has no operator on {basis.service_day}",
            )
        mine = agencies.setdefault(party.party_id, [])
        if leg.agency_id not in mine:
            mine.append(leg.agency_id)
    return [_Operator(party_id, tuple(ids)) for party_id, ids in agencies.items()]


def _method_rule(rules: Sequence[MethodRule], legs: Sequence[Leg]) -> MethodRule | None:
    """The first operator-set rule matching the legs, else the first network rule."""
    agencies = frozenset(leg.agency_id for leg in legs)

    def on_network(rule: MethodRule) -> bool:
        return rule.network_id is None or all(leg.network_id == rule.network_id for leg in legs)

    for rule in rules:
        if rule.agency_ids is not None and rule.agency_ids == agencies and on_network(rule):
            return rule
    for rule in rules:
        if rule.agency_ids is None and rule.network_id is not None and on_network(rule):
            return rule
    return None


def _weights(
    method: Method, rule: MethodRule | None, operators: Sequence[_Operator], legs: Sequence[Leg]
) -> list[int]:
    """Integer weights per operator (may all be 0)."""
    if method is Method.EQUAL:
        return [1] * len(operators)
    if method is Method.FIXED:
        return _fixed_weights(rule.percentages if rule is not None else (), operators)
    weights: list[int] = []
    for op in operators:
        mine = [leg for leg in legs if leg.agency_id in op.agency_ids]
        if method is Method.DISTANCE:
            weights.append(sum(leg.distance_m for leg in mine))
        else:
            fares = (leg.standalone_fare for leg in mine)
            weights.append(sum(fare.amount_minor for fare in fares if fare is not None))
    return weights


def _fixed_weights(
    percentages: Sequence[tuple[str, Fraction]], operators: Sequence[_Operator]
) -> list[int]:
    """The operators' declared percentages as integers on a common denominator."""
    declared = dict(percentages)
    exact = [
        sum((declared.get(a, Fraction(0)) for a in op.agency_ids), Fraction(0)) for op in operators
    ]
    common = math.lcm(*(f.denominator for f in exact))
    return [int(f * common) for f in exact]


def _funding_rule(scheme: Scheme, basis: JourneyBasis) -> FundingRule | None:
    """The first funding rule in force that pays for this journey, if any."""
    if basis.started_at is None:
        return None
    local = basis.started_at.astimezone(ZoneInfo(scheme.calendar.timezone))
    networks = {leg.network_id for leg in basis.legs}
    for rule in scheme.funding_on(basis.service_day):
        if (
            basis.rider_category_id in rule.rider_categories
            and networks <= rule.network_ids
            and any(window.contains(local) for window in rule.hours)
        ):
            return rule
    return None


def _funding(scheme: Scheme, basis: JourneyBasis) -> tuple[FundingRule | None, Money, Money]:
    """The funding rule that pays for the journey, the fare forgone and the reimbursement
    (both 0 when no rule does)."""
    rule = _funding_rule(scheme, basis)
    if rule is None:
        return None, Money.zero(scheme.currency), Money.zero(scheme.currency)
    funder = scheme.party(rule.funder_id, basis.service_day)
    if funder is None or funder.kind is not PartyKind.FUNDER:
        raise InvalidJourneyError(
            "UNKNOWN_FUNDER",
            f"funding rule {rule.rule_id}: no funder {rule.funder_id} on {basis.service_day}",
        )
    forgone = _fare_forgone(basis)
    return rule, forgone, Money(_reimburse(rule.reimbursement, forgone), scheme.currency)


def _fare_forgone(basis: JourneyBasis) -> Money:
    """The reference fares of the legs (else their standalone fares) less the charge, >= 0."""
    reference = 0
    for leg in basis.legs:
        fare = leg.reference_fare if leg.reference_fare is not None else leg.standalone_fare
        reference += fare.amount_minor if fare is not None else 0
    return Money(max(0, reference - basis.charge.amount_minor), basis.charge.currency)


def _reimburse(rule: Reimbursement, forgone: Money) -> int:
    """What the funder pays the operators for `forgone`, in minor units."""
    if rule.form is ReimbursementForm.PERCENT_OF_FARE_FORGONE:
        return round_half_up(forgone.amount_minor * rule.percent / 100)
    return round_half_up(forgone.amount_minor * rule.factor) + rule.additional_per_journey_minor


def _shares(
    operators: Sequence[_Operator], weights: Sequence[int], revenue: Money, fee: Money
) -> tuple[OperatorShare, ...]:
    """Revenue by the weights; the fee by the gross shares (so fee part <= gross)."""
    gross = revenue.allocate(weights)
    if fee.amount_minor:
        fees = fee.allocate([g.amount_minor for g in gross])
    else:
        fees = [fee] * len(operators)
    total = sum(weights)
    return tuple(
        OperatorShare(op.party_id, op.agency_ids, w, Fraction(w, total), g, f, g - f)
        for op, w, g, f in zip(operators, weights, gross, fees, strict=True)
    )


def _position(
    scheme_party: Party,
    charge: Money,
    fee: Money,
    shares: Sequence[OperatorShare],
    *,
    funder_id: str | None,
    reimbursement: Money,
) -> Position:
    """The target ledger position of a journey: scheme, operators, funder; no zeros."""
    entries: list[tuple[tuple[str, str], Money]] = [
        ((scheme_party.party_id, TRAVELLER_CHARGES), -charge),
        ((scheme_party.party_id, CLEARING_FEES), fee),
    ]
    for share in shares:
        entries.append(((share.party_id, FARE_REVENUE), share.gross))
        entries.append(((share.party_id, CLEARING_FEES), -share.fee))
    if funder_id is not None:
        entries.append(((funder_id, CONCESSION_REIMBURSEMENTS), -reimbursement))
    return {key: amount for key, amount in entries if amount.amount_minor != 0}


def _withdrawn(scheme: Scheme, basis: JourneyBasis) -> Settlement:
    """The settlement of a journey with no legs (and no charge): nothing to anyone."""
    zero = Money.zero(scheme.currency)
    return Settlement(
        journey_id=basis.journey_id,
        revision=basis.revision,
        service_day=basis.service_day,
        scheme_id=scheme.scheme_id,
        method=None,
        method_rule_id=None,
        fell_back_to_equal=False,
        funding_rule_id=None,
        funder_id=None,
        charge=basis.charge,
        fare_forgone=zero,
        reimbursement=zero,
        revenue=zero,
        fee=zero,
        shares=(),
        position=MappingProxyType({}),
    )
