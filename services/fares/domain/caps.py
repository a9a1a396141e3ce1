"""Caps: a card's running spend per cap and period, and what each leg pays under it.

Caps are per card and across operators. Legs are charged in time order; each pays
min(fare, the headroom of every cap that counts it), and its charge is added to every such
cap (docs/fare-data.md, section 3.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from .fare_index import FareIndex
from .fare_legs import FareLeg

CapSpent = tuple[tuple[str, date, int], ...]
"""What caps have counted so far: (cap id, first day of the cap's period, amount), sorted."""


@dataclass(slots=True)
class CapSpend:
    """One card's running spend per (cap id, first day of the cap's period), and what each
    cap saved on the journey being charged."""

    spent: dict[tuple[str, date], int] = field(default_factory=dict)
    saved_by_cap: dict[str, int] = field(default_factory=dict)

    @classmethod
    def after(cls, spent: CapSpent) -> CapSpend:
        """The running spend once `spent` has been counted."""
        return cls({(cap_id, day): amount for cap_id, day, amount in spent})

    def counted(self) -> CapSpent:
        """What the caps have counted so far (amounts of 0 left out), sorted."""
        return tuple(sorted((c, d, a) for (c, d), a in self.spent.items() if a))


def cap_charge(
    index: FareIndex, fare_leg: FareLeg, fare: int, period: tuple[date, date], spend: CapSpend
) -> int:
    """min(fare, headroom of every cap counting the leg) in `period`: the journey's service
    day (which also decides which day-type caps count it) and its week's Monday; records
    the spend and, for the tightest cap, the saving."""
    price = fare_leg.price
    if price.maximum_fare and not index.maximum_fares_count_to_caps:
        return fare
    transfer_product_id = fare_leg.transfer_product_id
    caps = (
        price.caps  # remembered with the price
        if transfer_product_id is None
        else index.caps_counting(
            price.product_id, transfer_product_id, fare_leg.category, fare_leg.media
        )
    )
    if not caps:
        return fare
    day, week = period
    spent = spend.spent
    counted = []  # (key, what it had counted) of every cap that counts the leg
    # The tightest cap: least headroom, then lowest cap id (a loop: this runs for every leg).
    headroom, cap_id = fare + 1, ""
    for cap in caps:
        if cap.days is not None and day not in cap.days:
            continue  # a cap of other service days (clearway_caps.service_id)
        key = (cap.cap_id, day if cap.daily else week)
        so_far = spent.get(key, 0)
        counted.append((key, so_far))
        left = cap.amount_minor - so_far
        left = left if left > 0 else 0
        if left < headroom or (left == headroom and cap.cap_id < cap_id):
            headroom, cap_id = left, cap.cap_id
    charge = fare
    if fare > headroom:
        charge = headroom
        saved = spend.saved_by_cap
        saved[cap_id] = saved.get(cap_id, 0) + fare - charge
    for key, so_far in counted:
        spent[key] = so_far + charge
    return charge
