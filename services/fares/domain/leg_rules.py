"""Leg rules: what a fare leg costs alone, from fare_leg_rules.txt, maximum fares and
distance fares (docs/fare-data.md, sections 2 and 3.3-3.4).

A price depends only on the leg's kind, network, stops, timeframe groups, rider category
and fare media, so it is remembered per fare data version (FareIndex.leg_prices).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from .fare_index import NO_GROUPS, CapTerms, choose_product_row
from .fare_rules import ExitWithoutEntry, FareLegRule, FareProduct, MaximumFare
from .legs import ENTRY_ONLY, EXIT_ONLY, TRIP, Leg, LegKind
from .model import FareData

LegPriceKey = tuple[
    LegKind, str | None, str, str | None, frozenset[str], frozenset[str], str | None, str | None
]
"""What a standalone leg price depends on: leg kind, network, from stop, to stop, from and
to timeframe groups, rider category, fare media."""


@dataclass(frozen=True, slots=True)
class LegPrice:
    """What a fare leg costs alone: its fare (minor units), the product and leg rule (or
    maximum fare row) that priced it, and the note explaining it; or a no-fare reason."""

    fare: int
    product_id: str | None
    leg_group_id: str | None
    rule_id: str | None  # "fare_leg_rules.txt:<line>" or "clearway_maximum_fares.txt:<line>"
    distance_m: int | None
    maximum_fare: bool
    no_fare_reason: str | None
    note: str
    caps: tuple[CapTerms, ...] = ()  # the caps counting it with no transfer product

    @classmethod
    def no_fare(
        cls, reason: str, *, distance_m: int | None = None, maximum_fare: bool = False
    ) -> LegPrice:
        """No fare applies, for `reason` (reported with charge 0, never invented)."""
        return cls(
            fare=0,
            product_id=None,
            leg_group_id=None,
            rule_id=None,
            distance_m=distance_m,
            maximum_fare=maximum_fare,
            no_fare_reason=reason,
            note=reason,
        )


def standalone_price(
    data: FareData,
    legs: list[Leg],
    category: str | None,
    media: str | None,
    departure_groups: frozenset[str] | None = None,
) -> LegPrice:
    """What the fare leg made of `legs` costs alone for `category` on `media`, before
    transfers and caps (remembered in the FareIndex's bounded cache). `departure_groups`: the
    timeframe groups at its departure, when the caller has them already."""
    head, tail = legs[0], legs[-1]
    index = data.index
    # A timeframe field no rule uses cannot change the match: leave it out (and cache better).
    if departure_groups is None:
        departure_groups = (
            index.local_facts(head.departure)[1] if index.prices_by_departure_groups else NO_GROUPS
        )
    from_tfs = departure_groups if index.uses_from_timeframes else NO_GROUPS
    if head.incomplete:
        # An incomplete leg has no arrival; its price may depend on the maximum fare row of
        # its entry's timeframe (kept in the key's to-timeframes place).
        to_tfs = departure_groups if index.incomplete_prices_by_groups else NO_GROUPS
    elif not index.uses_to_timeframes:
        to_tfs = NO_GROUPS
    elif tail.kind is TRIP:
        to_tfs = index.local_facts(tail.arrival)[1]
    else:
        to_tfs = departure_groups
    key: LegPriceKey = (
        head.kind,
        head.network_id,
        head.from_stop,
        tail.to_stop,
        from_tfs,
        to_tfs,
        category,
        media,
    )
    cached = index.leg_prices.get(key)
    if cached is None:
        unknown = [
            s for s in (head.from_stop, tail.to_stop) if s is not None and s not in data.stops
        ]
        if unknown:
            reason = f"UNKNOWN_STOP: stop {unknown[0]!r} is not in the fare data"
            cached = LegPrice.no_fare(reason)
        elif head.kind is EXIT_ONLY:
            cached = _price_exit_only(data, head, to_tfs, category=category, media=media)
        elif head.kind is ENTRY_ONLY:
            cached = _price_entry_only(data, head, from_tfs, to_tfs, category=category, media=media)
        else:
            cached = _price_by_rules(
                data, head, tail, from_tfs, to_tfs, category=category, media=media
            )
        if index.has_caps and cached.product_id is not None:
            # Remembered with the price: which caps count the leg (without a transfer).
            cached = replace(
                cached, caps=index.caps_counting(cached.product_id, None, category, media)
            )
        index.leg_prices.remember(key, cached)
    return cached


def _price_by_rules(
    data: FareData,
    head: Leg,
    tail: Leg,
    from_tfs: frozenset[str],
    to_tfs: frozenset[str],
    *,
    category: str | None,
    media: str | None,
) -> LegPrice:
    to_stop = tail.to_stop
    distance = data.index.distance_m(head.from_stop, to_stop) if to_stop is not None else None
    rules = matching_leg_rules(
        data,
        head.network_id,
        from_areas=data.index.areas(head.from_stop),
        to_areas=data.index.areas(to_stop),
        from_timeframes=from_tfs,
        to_timeframes=to_tfs,
        distance_m=distance,
    )
    where = f"network {head.network_id or '-'} from {head.from_stop} to {to_stop or '-'}"
    if from_tfs or to_tfs:
        where += f" in timeframes {sorted(from_tfs)}->{sorted(to_tfs)}"
    if data.index.uses_distance_bands:
        where += f" over {'-' if distance is None else distance} m"
    if not rules:
        reason = f"NO_LEG_RULE: no fare_leg_rules row matches {where}"
        return LegPrice.no_fare(reason)
    best: tuple[int, str, FareLegRule] | None = None
    for rule in rules:
        product = choose_product(data, rule.fare_product_id, category, media)
        if product is None:
            continue
        amount = _amount(data, product, distance)
        if amount is None:
            continue
        if best is None or (amount, rule.fare_product_id) < (best[0], best[1]):
            best = (amount, rule.fare_product_id, rule)
    if best is None:
        products = sorted({r.fare_product_id for r in rules})
        reason = (
            f"NO_PRODUCT: {where} matches products {products} but none is sold to rider category"
            f" {category or '-'} on fare media {media or '-'}"
        )
        return LegPrice.no_fare(reason, distance_m=distance)
    amount, product_id, rule = best
    note = (
        f"{rule.rule_id} ({where}, leg group {rule.leg_group_id or '-'}) -> {product_id} {amount}"
    )
    if product_id in data.distance_fares:
        note += f" (distance fare over {distance} m)"
    return LegPrice(
        fare=amount,
        product_id=product_id,
        leg_group_id=rule.leg_group_id,
        rule_id=rule.rule_id,
        distance_m=distance,
        maximum_fare=False,
        no_fare_reason=None,
        note=note,
    )


def _price_entry_only(
    data: FareData,
    head: Leg,
    from_tfs: frozenset[str],
    entry_tfs: frozenset[str],
    *,
    category: str | None,
    media: str | None,
) -> LegPrice:
    row = data.index.maximum_fare_row(head.network_id, head.from_stop, entry_tfs)
    if row is not None:
        return _maximum_fare(data, row, category, media, f"entry at {head.from_stop} without exit")
    # No maximum fare declared: a flat fare that needs no exit may still apply.
    price = _price_by_rules(data, head, head, from_tfs, from_tfs, category=category, media=media)
    if price.no_fare_reason is None:
        return price
    reason = f"NO_MAXIMUM_FARE: entry at {head.from_stop} without exit and no maximum fare applies"
    return LegPrice.no_fare(reason)


def _price_exit_only(
    data: FareData, head: Leg, exit_tfs: frozenset[str], *, category: str | None, media: str | None
) -> LegPrice:
    what = f"exit at {head.from_stop} without entry"
    if data.settings.exit_without_entry is ExitWithoutEntry.MAXIMUM_FARE:
        row = data.index.maximum_fare_row(head.network_id, head.from_stop, exit_tfs)
        if row is not None:
            return _maximum_fare(data, row, category, media, what)
        reason = f"NO_MAXIMUM_FARE: {what} and no maximum fare applies"
    else:
        reason = f"EXIT_WITHOUT_ENTRY: {what}, not charged (exit_without_entry=ignore)"
    return LegPrice.no_fare(reason)


def _maximum_fare(
    data: FareData, row: MaximumFare, category: str | None, media: str | None, what: str
) -> LegPrice:
    product = choose_product(data, row.fare_product_id, category, media)
    if product is None:
        reason = (
            f"NO_PRODUCT: {what}; maximum fare {row.fare_product_id} is not sold to rider"
            f" category {category or '-'} on fare media {media or '-'}"
        )
        return LegPrice.no_fare(reason, maximum_fare=True)
    note = f"{what}: maximum fare {row.row_id} -> {product.fare_product_id} {product.amount_minor}"
    return LegPrice(
        fare=product.amount_minor,
        product_id=product.fare_product_id,
        leg_group_id=None,
        rule_id=row.row_id,
        distance_m=None,
        maximum_fare=True,
        no_fare_reason=None,
        note=note,
    )


def _amount(data: FareData, product: FareProduct, distance: int | None) -> int | None:
    distance_fare = data.distance_fares.get(product.fare_product_id)
    if distance_fare is None:
        return product.amount_minor
    if distance is None:
        return None
    return distance_fare.amount_for(distance)


def matching_leg_rules(
    data: FareData,
    network_id: str | None,
    *,
    from_areas: frozenset[str],
    to_areas: frozenset[str],
    from_timeframes: frozenset[str],
    to_timeframes: frozenset[str],
    distance_m: int | None = None,
) -> list[FareLegRule]:
    """fare_leg_rules rows that apply to a leg, following the GTFS matching semantics.

    With a rule_priority column, an empty field matches anything and only the rows of the
    highest priority are kept. Without it, an empty field matches only when no row names the
    leg's value for that field ("all values except those listed"). A distance band is the
    last field: rows whose band [min_distance, max_distance) holds the leg's distance, else
    (without rule_priority) the rows with no band.
    """
    checks: tuple[tuple[Callable[[FareLegRule], str | None], frozenset[str]], ...] = (
        (_rule_from_area, from_areas),
        (_rule_to_area, to_areas),
        (_rule_from_timeframe, from_timeframes),
        (_rule_to_timeframe, to_timeframes),
    )
    # The network field is matched by the index; the other fields on what is left.
    candidates = list(data.index.leg_rules_for_network(network_id))
    bands = data.index.uses_distance_bands
    if data.leg_rules_use_priority:
        matched = [
            r
            for r in candidates
            if all((v := get(r)) is None or v in values for get, values in checks)
            and (not bands or not r.has_distance_band or r.in_distance_band(distance_m))
        ]
        if not matched:
            return []
        top = max(r.rule_priority for r in matched)
        return [r for r in matched if r.rule_priority == top]
    if not candidates:
        return []
    for get, values in checks:
        exact = [r for r in candidates if (v := get(r)) is not None and v in values]
        candidates = exact or [r for r in candidates if get(r) is None]
        if not candidates:
            return []
    if bands:
        in_band = [r for r in candidates if r.in_distance_band(distance_m)]
        candidates = in_band or [r for r in candidates if not r.has_distance_band]
    return candidates


def _rule_from_area(rule: FareLegRule) -> str | None:
    return rule.from_area_id


def _rule_to_area(rule: FareLegRule) -> str | None:
    return rule.to_area_id


def _rule_from_timeframe(rule: FareLegRule) -> str | None:
    return rule.from_timeframe_group_id


def _rule_to_timeframe(rule: FareLegRule) -> str | None:
    return rule.to_timeframe_group_id


def choose_product(
    data: FareData, fare_product_id: str, category: str | None, media: str | None
) -> FareProduct | None:
    """The row of a product sold to `category` on `media` (None = any medium), cheapest first.

    Rows naming the rider category win over rows open to every category.
    """
    return choose_product_row(data.products(fare_product_id), category, media)
