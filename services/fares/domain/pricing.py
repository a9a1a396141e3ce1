"""Price a card's taps: pair taps into legs, link legs into journeys, apply caps.

Pure: the result depends only on the fare data and the set of taps (not their order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from operator import attrgetter

from clearway.money import Money

from .errors import NaiveTimeError
from .fare_index import NO_GROUPS, choose_product_row
from .model import (
    CapPeriod,
    ExitWithoutEntry,
    FareData,
    FareLegRule,
    FareProduct,
    FareTransferRule,
    FareTransferType,
    FareVersions,
    MaximumFare,
    Tap,
    TapKind,
)
from .priced import CapApplied, PricedJourney, PricedLeg

# Leg kinds.
TRIP = "trip"  # entry + exit
BOARD = "board"  # a single on-board tap
ENTRY_ONLY = "entry_only"  # entry with no exit: incomplete
EXIT_ONLY = "exit_only"  # exit with no entry: incomplete


class _Part:
    """A physical leg before pricing (attributes precomputed: this is the hot path)."""

    __slots__ = (
        "arrival",
        "data",
        "departure",
        "first",
        "from_stop",
        "incomplete",
        "kind",
        "last",
        "network_id",
        "operator_id",
        "route_id",
        "tap_ids",
        "to_stop",
    )

    def __init__(
        self,
        kind: str,
        first: Tap,
        last: Tap | None,
        data: FareData,
        network_id: str | None,
        *,
        operator_id: str,
        route_id: str | None,
    ) -> None:
        self.kind = kind
        self.first = first
        self.last = last
        self.data = data
        self.network_id = network_id
        self.operator_id = operator_id
        self.route_id = route_id
        self.departure: datetime = first.tapped_at
        self.arrival: datetime = last.tapped_at if last is not None else first.tapped_at
        self.incomplete = kind in (ENTRY_ONLY, EXIT_ONLY)
        self.from_stop = first.stop_id
        self.to_stop: str | None = (
            last.stop_id
            if kind == TRIP and last is not None
            else (first.stop_id if kind == EXIT_ONLY else None)
        )
        self.tap_ids: tuple[str, ...] = (
            (first.tap_id,) if last is None else (first.tap_id, last.tap_id)
        )


LegPriceKey = tuple[
    str, str | None, str, str | None, frozenset[str], frozenset[str], str | None, str | None
]
"""What a standalone leg price depends on: leg kind, network, from stop, to stop, from and
to timeframe groups, rider category, fare media."""


@dataclass(frozen=True, slots=True)
class LegPrice:
    """The standalone price of a fare leg (remembered per fare data version, FareIndex)."""

    fare: int
    product_id: str | None
    leg_group_id: str | None
    rule_id: str | None
    distance_m: int | None
    maximum_fare: bool
    no_fare_reason: str | None
    note: str


@dataclass(slots=True)
class _FareLeg:
    """An effective fare leg: one physical leg, or several joined by fare_leg_join_rules."""

    parts: list[_Part]
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
        return self.parts[0].data

    @property
    def departure(self) -> datetime:
        return self.parts[0].departure

    @property
    def arrival(self) -> datetime:
        return self.parts[-1].arrival

    @property
    def linkable(self) -> bool:
        if self.price.no_fare_reason is not None:
            return False
        return (
            not any(p.incomplete for p in self.parts)
            if len(self.parts) > 1
            else (not self.parts[0].incomplete)
        )


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


CapSpent = tuple[tuple[str, date, int], ...]
"""What caps have counted so far: (cap id, first day of the cap's period, amount), sorted."""


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
        return cls(
            spent,
            next((t.rider_category_id for t in taps if t.rider_category_id), None),
            next((t.fare_media_id for t in taps if t.fare_media_id), None),
        )


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
    unique: dict[str, Tap] = {}
    for tap in taps:
        if tap.tapped_at.utcoffset() is None:
            raise NaiveTimeError(tap.tap_id)
        unique.setdefault(tap.tap_id, tap)
    ordered = sorted(unique.values(), key=_TAP_ORDER)
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
    unique: dict[str, Tap] = {}
    for tap in taps:
        if tap.tapped_at.utcoffset() is None:
            raise NaiveTimeError(tap.tap_id)
        unique.setdefault(tap.tap_id, tap)
    ordered = sorted(unique.values(), key=_TAP_ORDER)
    start = start or PricingStart.of(ordered)
    parts = _pair_taps(fare_data, ordered, as_of)
    fare_legs = [
        _price_fare_leg(group, start.rider_category_id, start.fare_media_id)
        for group in _join(parts)
    ]
    # The same fold as `_apply_caps`, keeping the running spend instead of the journeys.
    spend = _CapSpend(card_token, {(cap_id, day): amount for cap_id, day, amount in start.spent})
    for journey in _link(fare_legs):
        _finish(card_token, journey, spend)
    return tuple(sorted((c, d, a) for (c, d), a in spend.spent.items() if a))


def _price_one_card(
    catalog: FareVersions,
    card: str,
    taps: list[Tap],
    as_of: datetime | None,
    start: PricingStart,
    *,
    snapshots: list[CapSpent] | None,
) -> list[PricedJourney]:
    parts = _pair_taps(catalog, taps, as_of)
    fallback_category, fallback_media = start.rider_category_id, start.fare_media_id
    fare_legs = [
        _price_fare_leg(group, fallback_category, fallback_media) for group in _join(parts)
    ]
    linked = _link(fare_legs)
    return _apply_caps(card, linked, start.spent, snapshots)


# --- taps -> physical legs ------------------------------------------------------------------


def _pair_taps(catalog: FareVersions, taps: list[Tap], as_of: datetime | None) -> list[_Part]:
    parts: list[_Part] = []
    open_entry: _Part | None = None
    single = len(catalog.versions) == 1 and bool(taps)
    if single:
        catalog.version_at(taps[0].tapped_at)  # raises when before the only version
    for tap in taps:
        data = catalog.versions[0] if single else catalog.version_at(tap.tapped_at)
        if (
            tap.kind is TapKind.EXIT
            and open_entry is not None
            and tap.tapped_at - open_entry.departure <= _incomplete_after(open_entry)
        ):
            parts.append(_complete(open_entry, tap))
            open_entry = None
            continue
        if open_entry is not None:
            parts.append(open_entry)  # an entry followed by anything but its exit: incomplete
            open_entry = None
        if tap.kind is TapKind.ENTRY:
            open_entry = _part(ENTRY_ONLY, tap, data)
        elif tap.kind is TapKind.EXIT:
            parts.append(_part(EXIT_ONLY, tap, data))
        else:
            parts.append(_part(BOARD, tap, data))
    if open_entry is not None:
        limit = open_entry.departure + _incomplete_after(open_entry)
        if as_of is None or as_of >= limit:
            parts.append(open_entry)
    return parts


def _part(kind: str, tap: Tap, data: FareData) -> _Part:
    network, operator = _network(data, tap, None), _operator(data, tap)
    return _Part(kind, tap, None, data, network, operator_id=operator, route_id=tap.route_id)


def _complete(entry: _Part, exit_tap: Tap) -> _Part:
    network = _network(entry.data, entry.first, exit_tap)
    return _Part(
        TRIP,
        entry.first,
        exit_tap,
        entry.data,
        network,
        operator_id=entry.operator_id,
        route_id=entry.route_id,
    )


def _network(data: FareData, tap: Tap, exit_tap: Tap | None) -> str | None:
    """The leg's fare network: its route's, else the network serving both ends, else the
    feed's only network."""
    route_id = tap.route_id or (exit_tap.route_id if exit_tap else None)
    if route_id is not None:
        route = data.routes.get(route_id)
        if route is not None:
            return route.network_id
    index = data.index
    candidates = index.networks_for_stop(tap.stop_id)
    if exit_tap is not None and candidates:
        at_exit = index.networks_for_stop(exit_tap.stop_id)
        candidates = tuple(n for n in candidates if n in at_exit) or candidates
    if candidates:
        return candidates[0]
    return index.only_network_id


def _operator(data: FareData, tap: Tap) -> str:
    if tap.operator_id:
        return tap.operator_id
    if tap.route_id is not None:
        route = data.routes.get(tap.route_id)
        if route is not None:
            return route.agency_id
    if tap.stop_id in data.stops:
        return data.index.operator_for_stop(tap.stop_id)
    return data.index.first_agency_id


def _incomplete_after(entry: _Part) -> timedelta:
    return entry.data.index.incomplete_after_entry(entry.network_id, entry.from_stop)


# --- physical legs -> effective fare legs (fare_leg_join_rules) -----------------------------


def _join(parts: list[_Part]) -> list[list[_Part]]:
    groups: list[list[_Part]] = []
    for part in parts:
        if groups and _joins(groups[-1][-1], part):
            groups[-1].append(part)
        else:
            groups.append([part])
    return groups


def _joins(prev: _Part, nxt: _Part) -> bool:
    data = prev.data
    if not data.join_rules or prev.kind != TRIP or nxt.kind != TRIP or nxt.data is not data:
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
    if rule_stop is None or stop_id is None:
        return rule_stop == stop_id
    return rule_stop == stop_id or data.index.parent_station(stop_id) == rule_stop


# --- pricing one fare leg -------------------------------------------------------------------


def _price_fare_leg(
    parts: list[_Part], fallback_category: str | None, fallback_media: str | None
) -> _FareLeg:
    data = parts[0].data
    index = data.index
    first = parts[0].first
    category = first.rider_category_id or fallback_category or index.default_rider_category_id
    media = first.fare_media_id or fallback_media or data.settings.default_fare_media_id
    day, groups = index.local_facts(parts[0].departure)
    price = _standalone_price(data, parts, category, media, departure_groups=groups)
    leg = _FareLeg(parts, category, media, price, day, charge=price.fare)
    leg.notes.append(price.note)
    return leg


def _standalone_price(
    data: FareData,
    parts: list[_Part],
    category: str | None,
    media: str | None,
    *,
    departure_groups: frozenset[str] | None = None,
) -> LegPrice:
    head, tail = parts[0], parts[-1]
    index = data.index
    # A timeframe field no rule uses cannot change the match: leave it out (and cache better).
    if departure_groups is None:
        uses = index.uses_from_timeframes or index.uses_to_timeframes
        departure_groups = index.local_facts(head.departure)[1] if uses else NO_GROUPS
    from_tfs = departure_groups if index.uses_from_timeframes else NO_GROUPS
    if not index.uses_to_timeframes:
        to_tfs = NO_GROUPS
    elif tail.kind == TRIP:
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
            cached = LegPrice(0, None, None, None, None, False, reason, reason)
        elif head.kind == EXIT_ONLY:
            cached = _price_exit_only(data, head, category, media)
        elif head.kind == ENTRY_ONLY:
            cached = _price_entry_only(data, head, from_tfs, category, media)
        else:
            cached = _price_by_rules(
                data, head, tail, from_tfs, to_tfs, category=category, media=media
            )
        index.leg_prices.put(key, cached)
    return cached


def _price_by_rules(
    data: FareData,
    head: _Part,
    tail: _Part,
    from_tfs: frozenset[str],
    to_tfs: frozenset[str],
    *,
    category: str | None,
    media: str | None,
) -> LegPrice:
    to_stop = tail.to_stop
    rules = matching_leg_rules(
        data,
        head.network_id,
        from_areas=data.index.areas(head.from_stop),
        to_areas=data.index.areas(to_stop),
        from_timeframes=from_tfs,
        to_timeframes=to_tfs,
    )
    where = f"network {head.network_id or '-'} from {head.from_stop} to {to_stop or '-'}"
    if from_tfs or to_tfs:
        where += f" in timeframes {sorted(from_tfs)}->{sorted(to_tfs)}"
    if not rules:
        reason = f"NO_LEG_RULE: no fare_leg_rules row matches {where}"
        return LegPrice(0, None, None, None, None, False, reason, reason)
    distance = data.index.distance_m(head.from_stop, to_stop) if to_stop is not None else None
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
        return LegPrice(0, None, None, None, distance, False, reason, reason)
    amount, product_id, rule = best
    note = (
        f"{rule.rule_id} ({where}, leg group {rule.leg_group_id or '-'}) -> {product_id} {amount}"
    )
    if product_id in data.distance_fares:
        note += f" (distance fare over {distance} m)"
    return LegPrice(
        amount, product_id, rule.leg_group_id, rule.rule_id, distance, False, None, note
    )


def _price_entry_only(
    data: FareData, head: _Part, from_tfs: frozenset[str], category: str | None, media: str | None
) -> LegPrice:
    row = data.index.maximum_fare_row(head.network_id, head.from_stop)
    if row is not None:
        return _maximum_fare(data, row, category, media, f"entry at {head.from_stop} without exit")
    # No maximum fare declared: a flat fare that needs no exit may still apply.
    price = _price_by_rules(data, head, head, from_tfs, from_tfs, category=category, media=media)
    if price.no_fare_reason is None:
        return price
    reason = f"NO_MAXIMUM_FARE: entry at {head.from_stop} without exit and no maximum fare applies"
    return LegPrice(0, None, None, None, None, False, reason, reason)


def _price_exit_only(
    data: FareData, head: _Part, category: str | None, media: str | None
) -> LegPrice:
    what = f"exit at {head.from_stop} without entry"
    if data.settings.exit_without_entry is ExitWithoutEntry.MAXIMUM_FARE:
        row = data.index.maximum_fare_row(head.network_id, head.from_stop)
        if row is not None:
            return _maximum_fare(data, row, category, media, what)
        reason = f"NO_MAXIMUM_FARE: {what} and no maximum fare applies"
    else:
        reason = f"EXIT_WITHOUT_ENTRY: {what}, not charged (exit_without_entry=ignore)"
    return LegPrice(0, None, None, None, None, False, reason, reason)


def _maximum_fare(
    data: FareData, row: MaximumFare, category: str | None, media: str | None, what: str
) -> LegPrice:
    product = choose_product(data, row.fare_product_id, category, media)
    if product is None:
        reason = (
            f"NO_PRODUCT: {what}; maximum fare {row.fare_product_id} is not sold to rider"
            f" category {category or '-'} on fare media {media or '-'}"
        )
        return LegPrice(0, None, None, None, None, True, reason, reason)
    note = f"{what}: maximum fare {row.row_id} -> {product.fare_product_id} {product.amount_minor}"
    return LegPrice(
        product.amount_minor, product.fare_product_id, None, row.row_id, None, True, None, note
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
) -> list[FareLegRule]:
    """fare_leg_rules rows that apply to a leg, following the GTFS matching semantics.

    With a rule_priority column, an empty field matches anything and only the rows of the
    highest priority are kept. Without it, an empty field matches only when no row names the
    leg's value for that field ("all values except those listed").
    """
    checks: tuple[tuple[Callable[[FareLegRule], str | None], frozenset[str]], ...] = (
        (_rule_from_area, from_areas),
        (_rule_to_area, to_areas),
        (_rule_from_timeframe, from_timeframes),
        (_rule_to_timeframe, to_timeframes),
    )
    # The network field is matched by the index; the other fields on what is left.
    candidates = list(data.index.leg_rules_for_network(network_id))
    if data.leg_rules_use_priority:
        matched = [
            r
            for r in candidates
            if all((v := get(r)) is None or v in values for get, values in checks)
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


# --- fare legs -> journeys (fare_transfer_rules) --------------------------------------------


@dataclass(slots=True)
class _Journey:
    legs: list[_FareLeg]
    transfers_by_rule: dict[str, int] = field(default_factory=dict)


def _link(fare_legs: list[_FareLeg]) -> list[_Journey]:
    journeys: list[_Journey] = []
    for leg in fare_legs:
        current = journeys[-1] if journeys else None
        if current is not None and _try_transfer(current, leg):
            current.legs.append(leg)
        else:
            journeys.append(_Journey([leg]))
    return journeys


def _try_transfer(journey: _Journey, nxt: _FareLeg) -> bool:
    prev = journey.legs[-1]
    data = prev.data
    if not data.transfer_rules or not prev.linkable or not nxt.linkable or nxt.data is not data:
        return False
    if (prev.category, prev.media) != (nxt.category, nxt.media):
        return False
    best = _best_transfer(journey, prev, nxt)
    if best is None:
        return False
    _, rule, product = best
    cost = product.amount_minor if product else 0
    if rule.fare_transfer_type is FareTransferType.A_AB:
        nxt.charge = cost
    elif rule.fare_transfer_type is FareTransferType.A_AB_B:
        nxt.charge = nxt.price.fare + cost
    else:  # AB: the transfer product replaces the from-leg's fare too
        prev.charge = 0
        nxt.charge = cost
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
    journey: _Journey, prev: _FareLeg, nxt: _FareLeg
) -> tuple[int, FareTransferRule, FareProduct | None] | None:
    """The applicable transfer rule with the cheapest outcome for the next leg."""
    data = prev.data
    best: tuple[int, FareTransferRule, FareProduct | None] | None = None
    for rule in data.index.transfer_rules_between(prev.price.leg_group_id, nxt.price.leg_group_id):
        if not _within_duration(rule, journey, prev, nxt):
            continue
        count = rule.transfer_count
        if count not in (None, -1) and journey.transfers_by_rule.get(rule.rule_id, 0) >= count:
            continue
        product = None
        if rule.fare_product_id is not None:
            product = data.index.transfer_product(rule.fare_product_id, nxt.category, nxt.media)
            if product is None:
                continue
        cost = product.amount_minor if product else 0
        outcome = _transfer_outcome(rule, cost, prev, nxt)
        if best is None or outcome < best[0]:
            best = (outcome, rule, product)
    return best


def _transfer_outcome(rule: FareTransferRule, cost: int, prev: _FareLeg, nxt: _FareLeg) -> int:
    if rule.fare_transfer_type is FareTransferType.A_AB:
        return cost
    if rule.fare_transfer_type is FareTransferType.A_AB_B:
        return nxt.price.fare + cost
    return cost - prev.charge


def _within_duration(
    rule: FareTransferRule, journey: _Journey, prev: _FareLeg, nxt: _FareLeg
) -> bool:
    if rule.duration_limit is None:
        return True
    kind = rule.duration_limit_type or 0
    # Departure-based limits run from the journey's first validation (a ticket's validity,
    # e.g. TfL's Hopper); arrival-based limits from the previous leg's exit.
    start = journey.legs[0].departure if kind in (0, 1) else prev.arrival
    end = nxt.arrival if kind in (0, 3) else nxt.departure
    return (end - start).total_seconds() <= rule.duration_limit


# --- caps and output ------------------------------------------------------------------------


def _cap_periods(
    data: FareData, fare_leg: _FareLeg, day: date, week: date
) -> tuple[tuple[str, int, tuple[str, date]], ...]:
    """(cap id, cap amount, spend key) of each cap counting `fare_leg` on service day `day`
    of the week starting `week`; the spend key names the cap's period (the day or week)."""
    caps = data.index.caps_counting(
        fare_leg.price.product_id, fare_leg.transfer_product_id, fare_leg.category, fare_leg.media
    )
    return tuple(
        (cap.cap_id, cap.amount_minor, (cap.cap_id, day if cap.period is CapPeriod.DAY else week))
        for cap in caps
    )


def _apply_caps(
    card: str, journeys: list[_Journey], spent: CapSpent, snapshots: list[CapSpent] | None
) -> list[PricedJourney]:
    spend = _CapSpend(card, {(cap_id, day): amount for cap_id, day, amount in spent})
    if snapshots is None:
        return [_finish(card, journey, spend) for journey in journeys]
    priced = []
    for journey in journeys:
        snapshots.append(tuple(sorted((c, d, a) for (c, d), a in spend.spent.items() if a)))
        priced.append(_finish(card, journey, spend))
    return priced


@dataclass(slots=True)
class _CapSpend:
    """Running spend per (cap, period) of one card, and the savings of the current journey."""

    card: str
    spent: dict[tuple[str, date], int] = field(default_factory=dict)
    saved_by_cap: dict[str, int] = field(default_factory=dict)


def _finish(card: str, journey: _Journey, spend: _CapSpend) -> PricedJourney:
    head = journey.legs[0]
    data = head.data
    money = data.index.money
    day = head.service_day
    week = day - timedelta(days=day.weekday())
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
        parts = fare_leg.parts
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
        if len(parts) == 1:
            rows: Iterable[tuple[_Part, int, int, int]] = (
                (parts[0], fare_leg.charge, standalone, reference),
            )
        else:
            rows = zip(
                parts,
                _split(fare_leg, fare_leg.charge),
                _split(fare_leg, standalone),
                _split(fare_leg, reference),
                strict=True,
            )
        for part, fare, alone, ref in rows:
            leg_charge = _cap_charge(data, fare_leg, fare, (day, week), spend)
            legs.append(_priced_leg(part, fare_leg, (fare, leg_charge, alone, ref)))
            before += fare
            charge += leg_charge
            incomplete = incomplete or part.incomplete
    caps: tuple[CapApplied, ...] = ()
    if saved_by_cap:
        caps = tuple(
            CapApplied(cap_id, money(saved))
            for cap_id, saved in sorted(saved_by_cap.items())
            if saved
        )
        for cap in caps:
            explanation.append(f"cap {cap.cap_id} saved {cap.saved.amount_minor}")
    # Positional (order of PricedJourney fields): measurably cheaper on the hot path.
    return PricedJourney(
        "j-" + head.parts[0].first.tap_id,  # journey_id
        card,  # card_token
        day,  # service_day
        tuple(legs),  # legs
        money(before),  # amount_before_caps
        caps,  # caps
        money(charge),  # charge
        incomplete,  # incomplete
        data.fare_version,  # fare_version
        head.category or "",  # rider_category_id
        head.media or "",  # fare_media_id
        tuple(explanation),  # explanation
        "; ".join(reasons) if reasons else None,  # no_fare_reason
    )


def _split(fare_leg: _FareLeg, amount: int) -> list[int]:
    """Share an amount of a joined fare leg (its charge, its standalone or reference fare)
    between its physical legs: by distance, else equally, to the penny."""
    if len(fare_leg.parts) == 1:
        return [amount]
    data = fare_leg.data
    weights = [
        (data.index.distance_m(p.from_stop, p.to_stop) or 0) if p.to_stop else 0
        for p in fare_leg.parts
    ]
    if sum(weights) == 0:
        weights = [1] * len(fare_leg.parts)
    return [m.amount_minor for m in Money(amount, data.currency).allocate(weights)]


def _reference_fare(fare_leg: _FareLeg, default_category: str | None) -> int:
    """The fare leg priced alone for the fare data's default rider category, on the
    traveller's fare media (memoised with every standalone price)."""
    return _standalone_price(fare_leg.data, fare_leg.parts, default_category, fare_leg.media).fare


def _cap_charge(
    data: FareData,
    fare_leg: _FareLeg,
    fare: int,
    period: tuple[date, date],
    spend: _CapSpend,
) -> int:
    """min(fare, headroom of every cap counting it) on (service day, its week's Monday);
    records spend and savings."""
    if not data.index.has_caps:
        return fare
    price = fare_leg.price
    if price.maximum_fare and not data.settings.maximum_fares_count_to_caps:
        return fare
    periods = _cap_periods(data, fare_leg, *period)
    if not periods:
        return fare
    spent = spend.spent
    tightest: tuple[int, str] | None = None
    for cap_id, amount, key in periods:
        headroom = max(amount - spent.get(key, 0), 0)
        if tightest is None or (headroom, cap_id) < tightest:
            tightest = (headroom, cap_id)
    charge = fare
    if tightest is not None and fare > tightest[0]:
        charge = tightest[0]
        saved = spend.saved_by_cap
        saved[tightest[1]] = saved.get(tightest[1], 0) + fare - charge
    for _, _, key in periods:
        spent[key] = spent.get(key, 0) + charge
    return charge


def _priced_leg(part: _Part, fare_leg: _FareLeg, amounts: tuple[int, int, int, int]) -> PricedLeg:
    """`amounts`: the part's fare, charge, standalone fare and reference fare."""
    fare, charge, standalone, reference = amounts
    money = part.data.index.money
    fare_money = money(fare)
    # Mostly equal amounts: share the Money rather than look it up again.
    alone_money = fare_money if standalone == fare else money(standalone)
    reference_money = alone_money if reference == standalone else money(reference)
    first_part = part is fare_leg.parts[0]
    # Positional (order of PricedLeg fields): measurably cheaper on the hot path.
    return PricedLeg(
        "l-" + part.first.tap_id,  # leg_id
        part.operator_id,  # operator_id
        part.network_id,  # network_id
        part.route_id,  # route_id
        part.from_stop,  # from_stop_id
        part.to_stop,  # to_stop_id
        part.departure,  # entry_at
        part.last.tapped_at if part.last is not None else None,  # exit_at
        fare_money,  # fare
        fare_leg.price.product_id,  # fare_product_id
        part.incomplete,  # incomplete
        part.tap_ids,  # tap_ids
        fare_leg.transfer_rule_id if first_part else None,  # transfer_rule_id
        (  # distance_m
            None
            if part.kind != TRIP or part.to_stop is None
            else fare_leg.price.distance_m
            if len(fare_leg.parts) == 1 and fare_leg.price.distance_m is not None
            else part.data.index.distance_m(part.from_stop, part.to_stop)
        ),
        fare_leg.price.leg_group_id,  # leg_group_id
        fare_leg.transfer_product_id if first_part else None,  # transfer_product_id
        fare_leg.price.maximum_fare,  # maximum_fare
        money(charge),  # charge
        alone_money,  # standalone_fare
        reference_money,  # reference_fare
    )


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
