"""Price a card's taps, stage by stage (docs/fare-data.md, section 2):

1. pairing (`legs`): taps in time order become legs (entry + exit, a board tap, or an
   incomplete leg);
2. joining (`fare_legs`): consecutive legs a fare_leg_join_rule joins are one fare leg;
3. leg rules (`leg_rules`): each fare leg priced alone (fare_leg_rules, maximum fares,
   distance fares);
4. transfers (`transfers`): fare legs linked into journeys by fare_transfer_rules;
5. caps (`caps`, `charging`): each journey's legs charged under the card's caps, in
   time order, into PricedJourneys.

Pure: the result depends only on the fare data and the set of taps (not their order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter

from .caps import CapSpend, CapSpent
from .charging import charge_journey, charge_journeys
from .errors import NaiveTimeError
from .fare_legs import fare_leg_of, join_legs
from .legs import pair_taps
from .model import FareVersions
from .priced import PricedJourney
from .taps import Tap
from .transfers import Journey, link_journeys

__all__ = [
    "CapSpent",
    "PricingStart",
    "ResumedPricing",
    "cap_spend",
    "check_tap",
    "price_card",
    "price_card_from",
]

_TAP_ORDER = attrgetter("tapped_at", "tap_id")


def price_card(
    fare_data: FareVersions, taps: Sequence[Tap], *, as_of: datetime | None = None
) -> list[PricedJourney]:
    """Price the taps of one or more cards in a period into journeys, caps applied.

    Same taps in any order give the same result. With `as_of=None` the period is closed and
    an entry without exit is incomplete; with `as_of=t` a last entry whose exit may still
    come is left pending (not returned). Unknown stops and unmatched rules are reported per
    journey (`no_fare_reason`), never raised; NaiveTimeError and NoFareVersionError are.
    """
    by_card: dict[str, dict[str, Tap]] = {}
    for tap in taps:
        if tap.tapped_at.utcoffset() is None:
            raise NaiveTimeError(tap.tap_id)
        by_card.setdefault(tap.card_token, {}).setdefault(tap.tap_id, tap)
    journeys: list[PricedJourney] = []
    for card in sorted(by_card):
        ordered = sorted(by_card[card].values(), key=_TAP_ORDER)
        start = PricingStart.of(ordered)
        journeys.extend(_price_one_card(fare_data, card, ordered, as_of, start, snapshots=None))
    if len(by_card) > 1:  # one card's journeys are already in time order
        journeys.sort(key=lambda j: (j.legs[0].entry_at, j.card_token, j.journey_id))
    return journeys


@dataclass(frozen=True, slots=True)
class PricingStart:
    """Where pricing of a card resumes: what its caps had already counted, and the rider
    category and fare media that taps without one fall back to (the card's first taps')."""

    spent: CapSpent = ()
    rider_category_id: str | None = None
    fare_media_id: str | None = None

    @classmethod
    def of(cls, taps: Sequence[Tap], spent: CapSpent = ()) -> PricingStart:
        """The start for a card whose taps of the period are `taps` (sorted by time)."""
        category = media = None
        for tap in taps:  # the first tap carrying each (one pass: this runs for every card)
            category = category or tap.rider_category_id
            media = media or tap.fare_media_id
            if category and media:
                break
        return cls(spent, category, media)


@dataclass(frozen=True, slots=True)
class ResumedPricing:
    """Journeys priced from a start, and what the caps had counted before each of them."""

    journeys: list[PricedJourney]
    spent_before: list[CapSpent]


def price_card_from(
    fare_data: FareVersions,
    card_token: str,
    taps: Sequence[Tap],
    *,
    as_of: datetime | None,
    start: PricingStart,
) -> ResumedPricing:
    """Price one card's taps from a journey boundary onwards, as `price_card` would price
    them after the journeys before that boundary had counted `start.spent` towards caps.

    Pricing is a left fold over the card's taps in time order; at the first tap of a
    journey nothing carries over but cap spend (and the fallback category and media), so
    resuming there with the spend recorded before that journey gives the same journeys as
    pricing the whole period. Callers must resume at a boundary that later taps cannot
    move (see services/fares/service_layer/repricing.py).
    """
    ordered = _ordered_taps(taps)
    snapshots: list[CapSpent] = []
    journeys = _price_one_card(fare_data, card_token, ordered, as_of, start, snapshots=snapshots)
    return ResumedPricing(journeys, snapshots)


def cap_spend(
    fare_data: FareVersions,
    card_token: str,
    taps: Sequence[Tap],
    *,
    as_of: datetime | None,
    start: PricingStart | None = None,
) -> CapSpent:
    """What the caps have counted once one card's taps are priced as `price_card_from`
    prices them (from `start`, default the taps' own): (cap id, period start, amount)."""
    ordered = _ordered_taps(taps)
    start = start or PricingStart.of(ordered)
    # The same fold as `price_card_from`, keeping the running spend instead of the journeys.
    spend = CapSpend.after(start.spent)
    for journey in _journeys(fare_data, ordered, as_of, start):
        charge_journey(card_token, journey, spend)
    return spend.counted()


def _price_one_card(
    versions: FareVersions,
    card: str,
    taps: list[Tap],
    as_of: datetime | None,
    start: PricingStart,
    *,
    snapshots: list[CapSpent] | None,
) -> list[PricedJourney]:
    journeys = _journeys(versions, taps, as_of, start)
    return charge_journeys(card, journeys, CapSpend.after(start.spent), snapshots)


def _journeys(
    versions: FareVersions, taps: list[Tap], as_of: datetime | None, start: PricingStart
) -> list[Journey]:
    """The stages before caps: taps paired into legs, legs joined into fare legs and priced
    alone, fare legs linked into journeys by transfers."""
    category, media = start.rider_category_id, start.fare_media_id
    legs = pair_taps(versions, taps, as_of)
    fare_legs = [fare_leg_of(group, category, media) for group in join_legs(legs)]
    return link_journeys(fare_legs)


def _ordered_taps(taps: Sequence[Tap]) -> list[Tap]:
    """One card's taps, each tap id once (its first), in pricing order; NaiveTimeError for
    a tap without a UTC offset."""
    unique: dict[str, Tap] = {}
    for tap in taps:
        if tap.tapped_at.utcoffset() is None:
            raise NaiveTimeError(tap.tap_id)
        unique.setdefault(tap.tap_id, tap)
    return sorted(unique.values(), key=_TAP_ORDER)


def check_tap(fare_data: FareVersions, tap: Tap) -> None:
    """Raise the domain error a tap would meet: NAIVE_TIME, NO_FARE_VERSION, UNKNOWN_STOP or
    UNKNOWN_ROUTE. Pricing itself never raises for these; it reports them per journey."""
    if tap.tapped_at.utcoffset() is None:
        raise NaiveTimeError(tap.tap_id)
    data = fare_data.version_at(tap.tapped_at)
    if tap.stop_id not in data.stops:
        data.stop(tap.stop_id)
    if tap.route_id is not None and tap.route_id not in data.routes:
        data.route(tap.route_id)
