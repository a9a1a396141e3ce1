"""Transfers: fare legs linked into journeys by fare_transfer_rules.txt.

After a priced fare leg, the next one joins the same journey when a transfer rule applies
(direction, duration limit, transfer count, a transfer product sold to the card); the
applicable rule with the cheapest outcome wins and sets the next leg's charge
(docs/fare-data.md, fare_transfer_rules.txt).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .fare_legs import FareLeg
from .fare_rules import FareProduct, FareTransferRule, FareTransferType

_A_AB, _A_AB_B = FareTransferType.A_AB, FareTransferType.A_AB_B  # see legs.TRIP


@dataclass(slots=True)
class Journey:
    """Fare legs linked by transfers, before caps; and how many transfers each rule made."""

    legs: list[FareLeg]
    transfers_by_rule: dict[str, int] = field(default_factory=dict)


def link_journeys(fare_legs: list[FareLeg]) -> list[Journey]:
    """Fare legs (in time order) linked into journeys; a transfer sets the charges it makes."""
    journeys: list[Journey] = []
    current: Journey | None = None
    for leg in fare_legs:
        if current is not None and leg.linkable and _try_transfer(current, leg):
            current.legs.append(leg)
        else:
            current = Journey([leg])
            journeys.append(current)
    return journeys


def _try_transfer(journey: Journey, nxt: FareLeg) -> bool:
    """Link `nxt` (linkable) to the journey if a transfer rule applies; sets the charges."""
    prev = journey.legs[-1]
    data = prev.data
    if not prev.linkable or nxt.data is not data or not data.transfer_rules:
        return False
    if prev.category != nxt.category or prev.media != nxt.media:
        return False
    best = _best_transfer(journey, prev, nxt)
    if best is None:
        return False
    _, rule, product = best
    cost = product.amount_minor if product else 0
    if rule.fare_transfer_type is _A_AB:
        nxt.charge = _floor(cost)
    elif rule.fare_transfer_type is _A_AB_B:
        nxt.charge = _floor(nxt.price.fare + cost)
    else:  # AB: the transfer product replaces the from-leg's fare too
        prev.charge = 0
        nxt.charge = _floor(cost)
    nxt.transfer_rule_id = rule.rule_id
    nxt.transfer_product_id = product.fare_product_id if product else None
    nxt.notes.append(
        f"transfer {rule.rule_id} (type {rule.fare_transfer_type.value},"
        f" {prev.price.leg_group_id or '-'} -> {nxt.price.leg_group_id or '-'}):"
        f" transfer product {nxt.transfer_product_id or 'none'} {cost}, leg charged {nxt.charge}"
    )
    journey.transfers_by_rule[rule.rule_id] = journey.transfers_by_rule.get(rule.rule_id, 0) + 1
    return True


def _best_transfer(
    journey: Journey, prev: FareLeg, nxt: FareLeg
) -> tuple[int, FareTransferRule, FareProduct | None] | None:
    """The applicable transfer rule with the cheapest outcome for the next leg."""
    index = prev.data.index
    best: tuple[int, FareTransferRule, FareProduct | None] | None = None
    for rule in index.transfer_rules_between(prev.price.leg_group_id, nxt.price.leg_group_id):
        if not _within_duration(rule, journey, prev, nxt):
            continue
        count = rule.transfer_count
        if count not in (None, -1) and journey.transfers_by_rule.get(rule.rule_id, 0) >= count:
            continue
        product = None
        if rule.fare_product_id is not None:
            product = index.transfer_product(rule.fare_product_id, nxt.category, nxt.media)
            if product is None:
                continue
        cost = product.amount_minor if product else 0
        outcome = _transfer_outcome(rule, cost, prev, nxt)
        if best is None or outcome < best[0]:
            best = (outcome, rule, product)
    return best


def _transfer_outcome(rule: FareTransferRule, cost: int, prev: FareLeg, nxt: FareLeg) -> int:
    if rule.fare_transfer_type is _A_AB:
        return _floor(cost)
    if rule.fare_transfer_type is _A_AB_B:
        return _floor(nxt.price.fare + cost)
    return _floor(cost) - prev.charge


def _floor(charge: int) -> int:
    """A leg's charge after a transfer is never below zero: a negative transfer product
    (a discount) can waive the leg's own fare, never take back what earlier legs cost."""
    return charge if charge > 0 else 0


def _within_duration(rule: FareTransferRule, journey: Journey, prev: FareLeg, nxt: FareLeg) -> bool:
    if rule.duration_limit is None:
        return True
    kind = rule.duration_limit_type or 0
    # Departure-based limits run from the journey's first validation (a ticket's validity,
    # e.g. TfL's Hopper); arrival-based limits from the previous leg's exit.
    start = journey.legs[0].departure if kind in (0, 1) else prev.arrival
    end = nxt.arrival if kind in (0, 3) else nxt.departure
    return (end - start).total_seconds() <= rule.duration_limit
