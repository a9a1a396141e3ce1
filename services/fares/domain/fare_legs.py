"""Fare legs: consecutive legs joined by fare_leg_join_rules.txt are priced as one.

A fare leg is one leg, or several legs a join rule makes one effective fare leg, priced
from the first entry to the last exit (docs/fare-data.md, fare_leg_join_rules.txt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from .leg_rules import LegPrice, standalone_price
from .legs import TRIP, Leg
from .model import FareData


@dataclass(slots=True)
class FareLeg:
    """What a fare applies to: one leg, or several joined, with the rider category and fare
    media it is priced for, its standalone price and its service day. Transfers then set
    its `charge` (before caps) and the transfer rule and product that applied."""

    legs: list[Leg]
    category: str | None
    media: str | None
    price: LegPrice
    service_day: date
    data: FareData  # the fare data version in force at its first tap
    linkable: bool  # whether a transfer may link it: priced, and no leg of it incomplete
    charge: int = 0  # before caps, after transfer rules
    transfer_rule_id: str | None = None
    transfer_product_id: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def departure(self) -> datetime:
        """Its first tap's instant."""
        return self.legs[0].departure

    @property
    def arrival(self) -> datetime:
        """Its last tap's instant."""
        return self.legs[-1].arrival


def join_legs(legs: list[Leg]) -> list[list[Leg]]:
    """Consecutive legs grouped into fare legs by fare_leg_join_rules.txt (in order)."""
    if not legs or (not legs[0].data.join_rules and legs[-1].data is legs[0].data):
        return [[leg] for leg in legs]  # no join rule in force: each leg is a fare leg
    groups: list[list[Leg]] = []
    for leg in legs:
        if groups and _joins(groups[-1], leg):
            groups[-1].append(leg)
        else:
            groups.append([leg])
    return groups


def fare_leg_of(
    legs: list[Leg], fallback_category: str | None, fallback_media: str | None
) -> FareLeg:
    """The fare leg of `legs`, priced alone for its first tap's rider category and fare
    media (else the card's fallbacks, else the fare data's defaults)."""
    head = legs[0]
    data = head.data
    index = data.index
    first = head.first_tap
    category = first.rider_category_id or fallback_category or index.default_rider_category_id
    media = first.fare_media_id or fallback_media or data.settings.default_fare_media_id
    day, groups = index.local_facts(head.departure)
    price = standalone_price(data, legs, category, media, groups)
    if price.no_fare_reason is not None:
        linkable = False
    elif len(legs) == 1:
        linkable = not head.incomplete
    else:
        linkable = not any(leg.incomplete for leg in legs)
    # Positional (a class called with keywords packs them first): the last four are the
    # charge before transfers, no transfer rule or product yet, and the explanation.
    return FareLeg(
        legs, category, media, price, day, data, linkable, price.fare, None, None, [price.note]
    )


def _joins(group: list[Leg], nxt: Leg) -> bool:
    """Whether `nxt` joins the fare leg made so far of `group`: a join rule matches the
    last leg and `nxt`, within the rule's duration limit (else the feed's join window)."""
    prev = group[-1]
    data = prev.data
    if not data.join_rules or prev.kind is not TRIP or nxt.kind is not TRIP or nxt.data is not data:
        return False
    within_window = nxt.departure - prev.arrival <= data.index.join_gap
    for rule in data.join_rules:
        if rule.from_network_id != prev.network_id or rule.to_network_id != nxt.network_id:
            continue
        if rule.from_stop_id is not None and not (
            _same_place(data, rule.from_stop_id, prev.to_stop)
            and _same_place(data, rule.to_stop_id, nxt.from_stop)
        ):
            continue
        if rule.duration_limit is None:
            if within_window:
                return True
        elif _within_limit(rule.duration_limit, rule.duration_limit_type, group[0], prev, nxt):
            return True
    return False


def _within_limit(limit_s: int, kind: int | None, first: Leg, prev: Leg, nxt: Leg) -> bool:
    """duration_limit_type as in fare_transfer_rules: 0 first departure to next arrival,
    1 first departure to next departure, 2 previous arrival to next departure, 3 previous
    arrival to next arrival (first = the fare leg's first leg)."""
    start = first.departure if kind in (0, 1) else prev.arrival
    end = nxt.arrival if kind in (0, 3) else nxt.departure
    return (end - start).total_seconds() <= limit_s


def _same_place(data: FareData, rule_stop: str | None, stop_id: str | None) -> bool:
    """A join rule's stop matches the stop itself or its parent station."""
    if rule_stop is None or stop_id is None:
        return rule_stop == stop_id
    return rule_stop == stop_id or data.index.parent_station(stop_id) == rule_stop
