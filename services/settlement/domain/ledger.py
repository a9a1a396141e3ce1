"""Double-entry postings for priced journeys, and netting of positions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from clearway.money import Money

from .apportionment import ApportionmentMethod, Leg, apportion
from .errors import InvalidJourneyError, MixedCurrencyError
from .periods import parse_period_id
from .settle import (
    CLEARING_FEES,
    CONCESSION_REIMBURSEMENTS,
    FARE_REVENUE,
    TRAVELLER_CHARGES,
    Settlement,
)

ISSUER_PARTY = "scheme:issuer"
ISSUER_ACCOUNT = "traveller_charges"
OPERATOR_ACCOUNT = "fare_revenue"
OPERATOR_PREFIX = "operator:"


def operator_party(operator_id: str) -> str:
    """The party id of an operator."""
    return f"{OPERATOR_PREFIX}{operator_id}"


@dataclass(frozen=True, slots=True)
class JourneyRevision:
    """One revision of a priced journey, as settlement sees it.

    `charge` is what the journey costs as of this revision; `delta` is what this revision
    adds to what earlier revisions charged (equal to `charge` on revision 1, negative for
    a refund adjustment). A journey that vanished (its taps regrouped into other
    journeys) arrives as a revision with charge 0 and no legs.
    """

    journey_id: str
    revision: int
    service_day: str
    legs: tuple[Leg, ...]
    charge: Money
    delta: Money

    def __post_init__(self) -> None:
        if not self.journey_id:
            raise InvalidJourneyError("MISSING_JOURNEY_ID", "journey_id is empty")
        if self.revision < 1:
            raise InvalidJourneyError("INVALID_REVISION", f"revision {self.revision} < 1")
        if self.charge.currency != self.delta.currency:
            raise InvalidJourneyError(
                "CURRENCY_MISMATCH", f"charge {self.charge.currency} vs delta {self.delta.currency}"
            )
        if self.revision == 1 and self.delta != self.charge:
            raise InvalidJourneyError("INVALID_DELTA", "revision 1 must have delta == charge")
        try:
            parse_period_id(self.service_day)
        except ValueError as exc:
            raise InvalidJourneyError("INVALID_SERVICE_DAY", str(exc)) from None
        if not self.legs and self.charge.amount_minor != 0:
            raise InvalidJourneyError("NO_LEGS", "a non-zero charge needs at least one leg")
        if any(not leg.operator_id for leg in self.legs):
            raise InvalidJourneyError("MISSING_OPERATOR", "every leg needs an operator_id")


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One side of a posting. `amount` > 0 credits the party, < 0 debits it."""

    period_id: str
    journey_id: str
    revision: int
    party_id: str
    account: str
    amount: Money
    description: str

    @property
    def key(self) -> tuple[str, int, str, str]:
        """What makes an entry unique: posting it twice must add nothing."""
        return (self.journey_id, self.revision, self.party_id, self.account)


Position = dict[tuple[str, str], Money]
"""Amounts per (party id, account)."""


def target_position(
    journey: JourneyRevision, method: ApportionmentMethod = ApportionmentMethod.EQUAL
) -> Position:
    """Where the ledger should stand for `journey` after this revision: the issuer debited
    the full charge, each operator of the revision's legs credited its share of it.

    Empty for a vanished journey (charge 0, no legs). Ordered issuer first, then the
    operators in order of first appearance among the legs.
    """
    if not journey.legs:
        return {}
    position: Position = {(ISSUER_PARTY, ISSUER_ACCOUNT): -journey.charge}
    for share in apportion(journey.charge, journey.legs, method):
        position[(operator_party(share.operator_id), OPERATOR_ACCOUNT)] = share.amount
    return position


def standing_of(entries: Iterable[LedgerEntry]) -> Position:
    """The sum of `entries` per (party id, account), keyed in sorted order."""
    position: Position = {}
    for entry in entries:
        key = (entry.party_id, entry.account)
        current = position.get(key)
        position[key] = entry.amount if current is None else current + entry.amount
    return dict(sorted(position.items()))


def postings_for(
    journey: JourneyRevision,
    period_id: str | None = None,
    method: ApportionmentMethod = ApportionmentMethod.EQUAL,
    standing: Mapping[tuple[str, str], Money] | None = None,
) -> list[LedgerEntry]:
    """Entries that move the journey from its `standing` (the sum of what was already
    posted for it, per (party, account)) to the target position of this revision.

    The target debits the issuer by the revision's full charge and credits each operator
    its share of it. Entries are target minus standing for every (party, account) of
    either, where non-zero; both sides sum to zero, so the entries do too. With no
    standing (revision 1) that is the charge itself; the issuer's entry equals -delta
    whenever every earlier revision was posted, and operators' totals follow the legs of
    the latest revision even when the operators changed. A revision that changes
    nothing posts nothing.

    Raises InvalidJourneyError("CURRENCY_MISMATCH") when the standing is in another
    currency than the charge.
    """
    standing = dict(standing or {})
    currency = journey.charge.currency
    for key, amount in standing.items():
        if amount.currency != currency:
            raise InvalidJourneyError(
                "CURRENCY_MISMATCH",
                f"journey {journey.journey_id} stands in {amount.currency} at {key[0]},"
                f" revision {journey.revision} charges {currency}",
            )
    target = target_position(journey, method)
    keys = list(target) + sorted(k for k in standing if k not in target)
    period = period_id or journey.service_day
    if any(amount.amount_minor for amount in standing.values()):
        ref = f"journey {journey.journey_id} to rev {journey.revision}"
        issuer_text = f"adjustment of {ref} (service day {journey.service_day})"
        operator_text = f"adjustment of {ref}"
    else:
        ref = f"journey {journey.journey_id} rev {journey.revision}"
        issuer_text = f"charge {ref} (service day {journey.service_day})"
        shares = len(target) - 1
        operator_text = f"{method.value.lower()} share 1/{shares} of {ref}"
    zero = Money.zero(currency)
    entries: list[LedgerEntry] = []
    for party, account in keys:
        amount = target.get((party, account), zero) - standing.get((party, account), zero)
        if amount.amount_minor == 0:
            continue
        entries.append(
            LedgerEntry(
                period,
                journey.journey_id,
                journey.revision,
                party,
                account,
                amount,
                issuer_text if party == ISSUER_PARTY else operator_text,
            )
        )
    return entries


_SETTLEMENT_TEXT = {
    TRAVELLER_CHARGES: "charge",
    CLEARING_FEES: "clearing fee",
    CONCESSION_REIMBURSEMENTS: "concession reimbursement",
}


def postings_for_settlement(
    journey_id: str,
    revision: int,
    period_id: str | None,
    settlement: Settlement,
    standing: Mapping[tuple[str, str], Money] | None = None,
) -> list[LedgerEntry]:
    """Entries that move the journey from its `standing` (what was already posted for it,
    per (party, account)) to the target position of `settlement`, posted in `period_id`
    (default: the settlement's service day).

    Entries are target minus standing for every (party, account) of either, non-zero only,
    target keys first in the settlement's order, then the standing's others sorted; both
    sides sum to zero, so the entries do. Raises InvalidJourneyError: JOURNEY_MISMATCH
    when the settlement is of another journey or revision, CURRENCY_MISMATCH when the
    standing is in another currency.
    """
    if (journey_id, revision) != (settlement.journey_id, settlement.revision):
        raise InvalidJourneyError(
            "JOURNEY_MISMATCH",
            f"posting journey {journey_id} rev {revision} with the settlement of"
            f" journey {settlement.journey_id} rev {settlement.revision}",
        )
    standing = dict(standing or {})
    currency = settlement.currency
    for key, amount in standing.items():
        if amount.currency != currency:
            raise InvalidJourneyError(
                "CURRENCY_MISMATCH",
                f"journey {journey_id} stands in {amount.currency} at {key[0]},"
                f" revision {revision} settles in {currency}",
            )
    target = settlement.position
    keys = list(target) + sorted(k for k in standing if k not in target)
    period = period_id or settlement.service_day.isoformat()
    adjusting = any(amount.amount_minor for amount in standing.values())
    zero = Money.zero(currency)
    entries: list[LedgerEntry] = []
    for party, account in keys:
        amount = target.get((party, account), zero) - standing.get((party, account), zero)
        if amount.amount_minor == 0:
            continue
        what = _SETTLEMENT_TEXT.get(account, account.replace("_", " "))
        if account == FARE_REVENUE and settlement.method is not None:
            what = f"{settlement.method.value.replace('_', ' ')} share"
        text = f"{what} of journey {journey_id} rev {revision}"
        if adjusting:
            text = f"adjustment: {text}"
        entries.append(LedgerEntry(period, journey_id, revision, party, account, amount, text))
    return entries


def currency_of(entries: Sequence[LedgerEntry]) -> str:
    """The one currency of `entries`; MixedCurrencyError when there are several."""
    currencies = {e.amount.currency for e in entries}
    if len(currencies) != 1:
        raise MixedCurrencyError(f"expected one currency, got {sorted(currencies)}")
    return currencies.pop()


def net_positions(entries: Iterable[LedgerEntry]) -> dict[str, Money]:
    """Each party's net position (credits minus debits), keyed and ordered by party id.

    Over balanced postings the positions sum to exactly zero.
    """
    positions: dict[str, Money] = {}
    for entry in entries:
        current = positions.get(entry.party_id)
        positions[entry.party_id] = entry.amount if current is None else current + entry.amount
    return dict(sorted(positions.items()))
