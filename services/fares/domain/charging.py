"""Charging: a journey's legs charged in time order under the card's caps, as a
PricedJourney (with every leg's fare, charge, standalone and reference fare).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from clearway.money import Money

from .caps import CapSpend, CapSpent, cap_charge
from .fare_legs import FareLeg
from .frozen import fast_builder
from .leg_rules import standalone_price
from .legs import TRIP, Leg
from .priced import CapApplied, PricedJourney, PricedLeg
from .transfers import Journey

# Two of these per leg and journey: built without a frozen dataclass's per-field setattr.
_new_priced_leg = fast_builder(PricedLeg)
_new_priced_journey = fast_builder(PricedJourney)


def charge_journeys(
    card: str, journeys: list[Journey], spend: CapSpend, counted: list[CapSpent] | None
) -> list[PricedJourney]:
    """Charge `journeys` (in time order) from the running `spend`; with `counted`, append
    what the caps had counted before each journey."""
    if counted is None:
        return [charge_journey(card, journey, spend) for journey in journeys]
    priced = []
    for journey in journeys:
        counted.append(spend.counted())
        priced.append(charge_journey(card, journey, spend))
    return priced


def charge_journey(card: str, journey: Journey, spend: CapSpend) -> PricedJourney:
    """One journey charged under the caps (its service day is its first fare leg's)."""
    head = journey.legs[0]
    index = head.legs[0].data.index  # one fare data version per journey
    money = index.money
    day = head.service_day
    capped = index.has_caps
    period = (day, day - timedelta(days=day.weekday()) if capped else day)
    saved_by_cap: dict[str, int] = {}
    spend.saved_by_cap = saved_by_cap
    legs: list[PricedLeg] = []
    explanation: list[str] = []
    reasons: list[str] = []
    before = charge = 0
    incomplete = False
    default_category = index.default_rider_category_id
    for fare_leg in journey.legs:
        explanation += fare_leg.notes
        price = fare_leg.price
        reason = price.no_fare_reason
        # The fare leg priced alone (before transfers and caps) for the traveller, and for
        # the default rider category (priced again only for another category); both 0 for
        # a leg with a no-fare reason.
        if reason is not None:
            if reason:
                reasons.append(reason)
            standalone = reference = 0
        else:
            standalone = price.fare
            reference = (
                standalone
                if fare_leg.category == default_category
                else _reference_fare(fare_leg, default_category)
            )
        for leg, fare, alone, ref in _shares(fare_leg, standalone, reference):
            leg_charge = cap_charge(index, fare_leg, fare, period, spend) if capped else fare
            legs.append(_priced_leg(leg, fare_leg, (fare, leg_charge, alone, ref)))
            before += fare
            charge += leg_charge
            incomplete = incomplete or leg.incomplete
    caps: tuple[CapApplied, ...] = ()
    if saved_by_cap:
        caps = tuple(
            CapApplied(cap_id, money[saved])
            for cap_id, saved in sorted(saved_by_cap.items())
            if saved
        )
        for cap in caps:
            explanation.append(f"cap {cap.cap_id} saved {cap.saved.amount_minor}")
    return _new_priced_journey(  # positional, in PricedJourney's field order (each named)
        "j-" + head.legs[0].first_tap.tap_id,  # journey_id
        card,  # card_token
        day,  # service_day
        tuple(legs),  # legs
        money[before],  # amount_before_caps
        caps,  # caps
        money[charge],  # charge
        incomplete,  # incomplete
        index.fare_version,  # fare_version
        head.category or "",  # rider_category_id
        head.media or "",  # fare_media_id
        tuple(explanation),  # explanation
        "; ".join(reasons) if reasons else None,  # no_fare_reason
    )


def _shares(
    fare_leg: FareLeg, standalone: int, reference: int
) -> Iterable[tuple[Leg, int, int, int]]:
    """Each leg of a fare leg with its share of the charge, standalone and reference fare."""
    legs = fare_leg.legs
    if len(legs) == 1:
        return ((legs[0], fare_leg.charge, standalone, reference),)
    return zip(
        legs,
        _split(fare_leg, fare_leg.charge),
        _split(fare_leg, standalone),
        _split(fare_leg, reference),
        strict=True,
    )


def _split(fare_leg: FareLeg, amount: int) -> list[int]:
    """Share an amount of a joined fare leg (its charge, its standalone or reference fare)
    between its legs: by distance, else equally, to the penny."""
    data = fare_leg.data
    weights = [
        (data.index.distance_m(leg.from_stop, leg.to_stop) or 0) if leg.to_stop else 0
        for leg in fare_leg.legs
    ]
    if sum(weights) == 0:
        weights = [1] * len(fare_leg.legs)
    return [m.amount_minor for m in Money(amount, data.currency).allocate(weights)]


def _reference_fare(fare_leg: FareLeg, default_category: str | None) -> int:
    """The fare leg priced alone for the fare data's default rider category, on the
    traveller's fare media (remembered with every standalone price)."""
    return standalone_price(fare_leg.data, fare_leg.legs, default_category, fare_leg.media).fare


def _priced_leg(leg: Leg, fare_leg: FareLeg, amounts: tuple[int, int, int, int]) -> PricedLeg:
    """A leg of `fare_leg` with `amounts`: its share of the fare, its charge after caps, and
    its shares of the standalone and reference fares."""
    fare, charge, standalone, reference = amounts
    index = leg.data.index
    money = index.money
    fare_money = money[fare]
    # Mostly equal amounts: share the Money rather than look it up again.
    alone_money = fare_money if standalone == fare else money[standalone]
    reference_money = alone_money if reference == standalone else money[reference]
    price = fare_leg.price
    first = leg is fare_leg.legs[0]
    distance_m = None
    to_stop = leg.to_stop
    if leg.kind is TRIP and to_stop is not None:
        distance_m = price.distance_m
        if distance_m is None or len(fare_leg.legs) > 1:
            distance_m = index.distance_m(leg.from_stop, to_stop)
    last_tap = leg.last_tap
    # Positional, in PricedLeg's field order (each named): a keyword call of twenty
    # arguments costs as much as building the leg (test_frozen_builder pins the order).
    return _new_priced_leg(
        "l-" + leg.first_tap.tap_id,  # leg_id
        leg.operator_id,  # operator_id
        leg.network_id,  # network_id
        leg.route_id,  # route_id
        leg.from_stop,  # from_stop_id
        to_stop,  # to_stop_id
        leg.departure,  # entry_at
        last_tap.tapped_at if last_tap is not None else None,  # exit_at
        fare_money,  # fare
        price.product_id,  # fare_product_id
        leg.incomplete,  # incomplete
        leg.tap_ids,  # tap_ids
        fare_leg.transfer_rule_id if first else None,  # transfer_rule_id
        distance_m,  # distance_m
        price.leg_group_id,  # leg_group_id
        fare_leg.transfer_product_id if first else None,  # transfer_product_id
        price.maximum_fare,  # maximum_fare
        fare_money if charge == fare else money[charge],  # charge
        alone_money,  # standalone_fare
        reference_money,  # reference_fare
    )
