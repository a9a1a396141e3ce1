"""Charging: a journey's legs charged in time order under the card's caps, as a
PricedJourney (with every leg's fare, charge, standalone and reference fare).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from clearway.money import Money

from .caps import CapSpend, CapSpent, cap_charge
from .fare_legs import FareLeg
from .leg_rules import standalone_price
from .legs import TRIP, Leg
from .priced import CapApplied, PricedJourney, PricedLeg
from .transfers import Journey


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
    data = head.data
    money = data.index.money
    day = head.service_day
    period = (day, day - timedelta(days=day.weekday()))
    saved_by_cap: dict[str, int] = {}
    spend.saved_by_cap = saved_by_cap
    legs: list[PricedLeg] = []
    explanation: list[str] = []
    reasons: list[str] = []
    before = charge = 0
    incomplete = False
    default_category = data.index.default_rider_category_id  # one version per journey
    for fare_leg in journey.legs:
        explanation += fare_leg.notes
        price = fare_leg.price
        if price.no_fare_reason:
            reasons.append(price.no_fare_reason)
        # The fare leg priced alone (before transfers and caps) for the traveller, and for
        # the default rider category (priced again only for another category); both 0 for
        # a leg with a no-fare reason.
        if price.no_fare_reason is not None:
            standalone = reference = 0
        else:
            standalone = price.fare
            reference = (
                standalone
                if fare_leg.category == default_category
                else _reference_fare(fare_leg, default_category)
            )
        for leg, fare, alone, ref in _shares(fare_leg, standalone, reference):
            leg_charge = cap_charge(data, fare_leg, fare, period, spend)
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
    return PricedJourney(
        journey_id="j-" + head.legs[0].first_tap.tap_id,
        card_token=card,
        service_day=day,
        legs=tuple(legs),
        amount_before_caps=money[before],
        caps=caps,
        charge=money[charge],
        incomplete=incomplete,
        fare_version=data.index.fare_version,
        rider_category_id=head.category or "",
        fare_media_id=head.media or "",
        explanation=tuple(explanation),
        no_fare_reason="; ".join(reasons) if reasons else None,
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
    """`amounts`: the leg's fare, charge, standalone fare and reference fare."""
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
    if leg.kind is TRIP and leg.to_stop is not None:
        distance_m = (
            price.distance_m
            if len(fare_leg.legs) == 1 and price.distance_m is not None
            else index.distance_m(leg.from_stop, leg.to_stop)
        )
    return PricedLeg(
        leg_id="l-" + leg.first_tap.tap_id,
        operator_id=leg.operator_id,
        network_id=leg.network_id,
        route_id=leg.route_id,
        from_stop_id=leg.from_stop,
        to_stop_id=leg.to_stop,
        entry_at=leg.departure,
        exit_at=leg.last_tap.tapped_at if leg.last_tap is not None else None,
        fare=fare_money,
        fare_product_id=price.product_id,
        incomplete=leg.incomplete,
        tap_ids=leg.tap_ids,
        transfer_rule_id=fare_leg.transfer_rule_id if first else None,
        distance_m=distance_m,
        leg_group_id=price.leg_group_id,
        transfer_product_id=fare_leg.transfer_product_id if first else None,
        maximum_fare=price.maximum_fare,
        charge=money[charge],
        standalone_fare=alone_money,
        reference_fare=reference_money,
    )
