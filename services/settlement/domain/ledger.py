"""Double-entry postings for priced journeys, and netting of positions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from clearway.money import Money

from .apportionment import ApportionmentMethod, Leg, apportion
from .errors import InvalidJourneyError, MixedCurrencyError
from .periods import parse_period_id

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

    `delta` is what this revision adds to what earlier revisions charged (equal to
    `charge` on revision 1, negative for a refund adjustment).
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
        if not self.legs:
            raise InvalidJourneyError("NO_LEGS", "a journey needs at least one leg")
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


def postings_for(
    journey: JourneyRevision,
    period_id: str | None = None,
    method: ApportionmentMethod = ApportionmentMethod.EQUAL,
) -> list[LedgerEntry]:
    """Entries for one journey revision: debit the issuer by the delta, credit each
    operator its share. They sum to zero. A zero delta posts nothing.
    """
    if journey.delta.amount_minor == 0:
        return []
    period = period_id or journey.service_day
    ref = f"journey {journey.journey_id} rev {journey.revision}"
    entries = [
        LedgerEntry(
            period,
            journey.journey_id,
            journey.revision,
            ISSUER_PARTY,
            ISSUER_ACCOUNT,
            -journey.delta,
            f"charge {ref} (service day {journey.service_day})",
        )
    ]
    shares = apportion(journey.delta, journey.legs, method)
    for share in shares:
        entries.append(
            LedgerEntry(
                period,
                journey.journey_id,
                journey.revision,
                operator_party(share.operator_id),
                OPERATOR_ACCOUNT,
                share.amount,
                f"{method.value.lower()} share 1/{len(shares)} of {ref}",
            )
        )
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
