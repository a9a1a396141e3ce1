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
    charge: int = 0  # before caps, after transfer rules
    transfer_rule_id: str | None = None
    transfer_product_id: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def data(self) -> FareData:
        """The fare data version in force at its first tap."""
        return self.legs[0].data

    @property
    def departure(self) -> datetime:
        """Its first tap's instant."""
        return self.legs[0].departure

    @property
    def arrival(self) -> datetime:
        """Its last tap's instant."""
        return self.legs[-1].arrival

    @property
    def linkable(self) -> bool:
        """Whether a transfer may link it: priced, and no leg of it incomplete."""
        if self.price.no_fare_reason is not None:
            return False
        legs = self.legs
        return not any(leg.incomplete for leg in legs) if len(legs) > 1 else not legs[0].incomplete


def join_legs(legs: list[Leg]) -> list[list[Leg]]:
    """Consecutive legs grouped into fare legs by fare_leg_join_rules.txt (in order)."""
    groups: list[list[Leg]] = []
    for leg in legs:
        if groups and _joins(groups[-1][-1], leg):
            groups[-1].append(leg)
        else:
            groups.append([leg])
    return groups


def fare_leg_of(
    legs: list[Leg], fallback_category: str | None, fallback_media: str | None
) -> FareLeg:
    """The fare leg of `legs`, priced alone for its first tap's rider category and fare
    media (else the card's fallbacks, else the fare data's defaults)."""
    data = legs[0].data
    index = data.index
    first = legs[0].first_tap
    category = first.rider_category_id or fallback_category or index.default_rider_category_id
    media = first.fare_media_id or fallback_media or data.settings.default_fare_media_id
    day, groups = index.local_facts(legs[0].departure)
    price = standalone_price(data, legs, category, media, departure_groups=groups)
    return FareLeg(legs, category, media, price, day, charge=price.fare, notes=[price.note])


def _joins(prev: Leg, nxt: Leg) -> bool:
    data = prev.data
    if not data.join_rules or prev.kind is not TRIP or nxt.kind is not TRIP or nxt.data is not data:
        return False
    if nxt.departure - prev.arrival > data.index.join_gap:
        return False
    for rule in data.join_rules:
        if rule.from_network_id != prev.network_id or rule.to_network_id != nxt.network_id:
            continue
        if rule.from_stop_id is None:
            return True
        if _same_place(data, rule.from_stop_id, prev.to_stop) and _same_place(
            data, rule.to_stop_id, nxt.from_stop
        ):
            return True
    return False


def _same_place(data: FareData, rule_stop: str | None, stop_id: str | None) -> bool:
    """A join rule's stop matches the stop itself or its parent station."""
    if rule_stop is None or stop_id is None:
        return rule_stop == stop_id
    return rule_stop == stop_id or data.index.parent_station(stop_id) == rule_stop
