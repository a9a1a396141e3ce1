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
from .model import (
    Cap,
    CapPeriod,
    ExitWithoutEntry,
    FareCatalog,
    FareData,
    FareLegRule,
    FareProduct,
    FareTransferRule,
    FareTransferType,
    MaximumFare,
    Tap,
    TapKind,
    as_catalog,
)
from .priced import CapApplied, PricedJourney, PricedLeg

# A memo of immutable values (no state that could change a result).
_MONEY: dict[tuple[int, str], Money] = {}


def _money(amount_minor: int, currency: str) -> Money:
    """A shared Money instance (immutable, so safe to reuse; saves re-validation)."""
    key = (amount_minor, currency)
    money = _MONEY.get(key)
    if money is None:
        if len(_MONEY) > 100_000:
            _MONEY.clear()
        money = _MONEY[key] = Money(amount_minor, currency)
    return money


_UNKNOWN = object()  # a memo miss, where None is a remembered value

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


@dataclass(frozen=True, slots=True)
class _LegPrice:
    """The standalone price of a fare leg (cached per fare data version)."""

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
    price: _LegPrice
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
    fare_data: FareData | FareCatalog, taps: Sequence[Tap], *, as_of: datetime | None = None
) -> list[PricedJourney]:
    """Price the taps of one or more cards in a period into journeys, caps applied.

    Same taps in any order give the same result. With `as_of=None` the period is closed and
    an entry without exit is incomplete; with `as_of=t` a last entry whose exit may still
    come is left pending (not returned). Unknown stops and unmatched rules are reported per
    journey (`no_fare_reason`), never raised; NaiveTimeError and NoFareVersionError are.
    """
    catalog = as_catalog(fare_data)
    by_card: dict[str, dict[str, Tap]] = {}
    for tap in taps:
        if tap.tapped_at.utcoffset() is None:
            raise NaiveTimeError(tap.tap_id)
        by_card.setdefault(tap.card_token, {}).setdefault(tap.tap_id, tap)
    journeys: list[PricedJourney] = []
    for card in sorted(by_card):
        ordered = sorted(by_card[card].values(), key=_TAP_ORDER)
        start = PricingStart.of(ordered)
        journeys.extend(_price_one_card(catalog, card, ordered, as_of, start, snapshots=None))
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
    fare_data: FareData | FareCatalog,
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
    catalog = as_catalog(fare_data)
    unique: dict[str, Tap] = {}
    for tap in taps:
        if tap.tapped_at.utcoffset() is None:
            raise NaiveTimeError(tap.tap_id)
        unique.setdefault(tap.tap_id, tap)
    ordered = sorted(unique.values(), key=_TAP_ORDER)
    snapshots: list[CapSpent] = []
    journeys = _price_one_card(catalog, card_token, ordered, as_of, start, snapshots=snapshots)
    return ResumedPricing(journeys, snapshots)


def cap_spend(
    fare_data: FareData | FareCatalog,
    card_token: str,
    taps: Sequence[Tap],
    *,
    as_of: datetime | None,
    start: PricingStart | None = None,
) -> CapSpent:
    """What the caps have counted once one card's taps are priced as `price_card_from`
    prices them (from `start`, default the taps' own): (cap id, period start, amount)."""
    catalog = as_catalog(fare_data)
    unique: dict[str, Tap] = {}
    for tap in taps:
        if tap.tapped_at.utcoffset() is None:
            raise NaiveTimeError(tap.tap_id)
        unique.setdefault(tap.tap_id, tap)
    ordered = sorted(unique.values(), key=_TAP_ORDER)
    start = start or PricingStart.of(ordered)
    parts = _pair_taps(catalog, ordered, as_of)
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
    catalog: FareCatalog,
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


def _pair_taps(catalog: FareCatalog, taps: list[Tap], as_of: datetime | None) -> list[_Part]:
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
    # Network and operator depend only on the tap's stop, route and operator: remembered.
    key = ("part", tap.stop_id, tap.route_id, tap.operator_id)
    known = data._memo.get(key)
    if known is None:
        known = data._memo[key] = (_network(data, tap, None), _operator(data, tap))
    network: str | None
    operator: str
    network, operator = known  # type: ignore[misc]
    return _Part(kind, tap, None, data, network, operator_id=operator, route_id=tap.route_id)


def _complete(entry: _Part, exit_tap: Tap) -> _Part:
    first = entry.first
    key = ("trip_network", first.stop_id, first.route_id, exit_tap.stop_id, exit_tap.route_id)
    network = entry.data._memo.get(key, _UNKNOWN)
    if network is _UNKNOWN:
        network = entry.data._memo[key] = _network(entry.data, first, exit_tap)
    assert network is None or isinstance(network, str)
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
    if route_id is not None and route_id in data.routes:
        return data.routes[route_id].network_id
    candidates = data.networks_for_stop(tap.stop_id)
    if exit_tap is not None:
        both = [n for n in candidates if n in data.networks_for_stop(exit_tap.stop_id)]
        candidates = tuple(both) or candidates
    if candidates:
        return candidates[0]
    if len(data.network_ids) == 1:
        return next(iter(data.network_ids))
    return None


def _operator(data: FareData, tap: Tap) -> str:
    if tap.operator_id:
        return tap.operator_id
    if tap.route_id is not None and tap.route_id in data.routes:
        return data.routes[tap.route_id].agency_id
    if tap.stop_id in data.stops:
        return data.operator_for_stop(tap.stop_id)
    return sorted(data.agencies)[0]


def _incomplete_after(entry: _Part) -> timedelta:
    key = ("incomplete_after", entry.network_id, entry.from_stop)
    limit = entry.data._memo.get(key)
    if limit is None:
        row = _maximum_fare_row(entry.data, entry.network_id, entry.from_stop)
        seconds = row.incomplete_after_s if row and row.incomplete_after_s else None
        limit = entry.data._memo[key] = timedelta(
            seconds=seconds or entry.data.settings.incomplete_after_s
        )
    assert isinstance(limit, timedelta)
    return limit


def _maximum_fare_row(data: FareData, network_id: str | None, stop_id: str) -> MaximumFare | None:
    key = ("maxfare", network_id, stop_id)
    if key in data._memo:
        return data._memo[key]  # type: ignore[return-value]
    stop = data.stops.get(stop_id)
    areas = stop.area_ids if stop else frozenset()
    candidates = [
        row
        for row in data.maximum_fares
        if (row.network_id is None or row.network_id == network_id)
        and (row.area_id is None or row.area_id in areas)
    ]
    # Most specific first: network and area, network, area, neither; then file order.
    candidates.sort(key=lambda r: (r.network_id is None, r.area_id is None))
    chosen = candidates[0] if candidates else None
    data._memo[key] = chosen
    return chosen


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
    if nxt.departure - prev.arrival > timedelta(seconds=data.settings.incomplete_after_s):
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
    stop = data.stops.get(stop_id)
    return rule_stop == stop_id or (stop is not None and stop.parent_station == rule_stop)


# --- pricing one fare leg -------------------------------------------------------------------


def _price_fare_leg(
    parts: list[_Part], fallback_category: str | None, fallback_media: str | None
) -> _FareLeg:
    data = parts[0].data
    first = parts[0].first
    category = first.rider_category_id or fallback_category or data.default_rider_category_id
    media = first.fare_media_id or fallback_media or data.settings.default_fare_media_id
    price = _standalone_price(data, parts, category, media)
    # Right after the timeframe lookup of the same instant (FareData.local remembers it).
    day = data.service_day(parts[0].departure)
    leg = _FareLeg(parts, category, media, price, day, charge=price.fare)
    leg.notes.append(price.note)
    return leg


def _standalone_price(
    data: FareData, parts: list[_Part], category: str | None, media: str | None
) -> _LegPrice:
    head, tail = parts[0], parts[-1]
    uses_from, uses_to = _timeframe_fields_used(data)
    # A timeframe field no rule uses cannot change the match: leave it out (and cache better).
    from_tfs = data.timeframe_groups_at(head.departure) if uses_from else _NONE
    if not uses_to:
        to_tfs = _NONE
    elif tail.kind == TRIP:
        to_tfs = data.timeframe_groups_at(tail.arrival)
    else:
        to_tfs = data.timeframe_groups_at(head.departure)
    key = (
        "price",
        head.kind,
        head.network_id,
        head.from_stop,
        tail.to_stop,
        from_tfs,
        to_tfs,
        category,
        media,
    )
    cached = data._memo.get(key)
    if cached is None:
        unknown = [
            s for s in (head.from_stop, tail.to_stop) if s is not None and s not in data.stops
        ]
        if unknown:
            reason = f"UNKNOWN_STOP: stop {unknown[0]!r} is not in the fare data"
            cached = _LegPrice(0, None, None, None, None, False, reason, reason)
        elif head.kind == EXIT_ONLY:
            cached = _price_exit_only(data, head, category, media)
        elif head.kind == ENTRY_ONLY:
            cached = _price_entry_only(data, head, from_tfs, category, media)
        else:
            cached = _price_by_rules(
                data, head, tail, from_tfs, to_tfs, category=category, media=media
            )
        data._memo[key] = cached
    assert isinstance(cached, _LegPrice)
    return cached


_NONE: frozenset[str] = frozenset()


def _timeframe_fields_used(data: FareData) -> tuple[bool, bool]:
    """Whether any leg rule (or maximum fare fallback) uses from/to timeframes."""
    cached = data._memo.get("timeframe_fields")
    if cached is None:
        cached = data._memo["timeframe_fields"] = (
            any(r.from_timeframe_group_id is not None for r in data.leg_rules),
            any(r.to_timeframe_group_id is not None for r in data.leg_rules),
        )
    return cached  # type: ignore[return-value]


def _areas(data: FareData, stop_id: str | None) -> frozenset[str]:
    stop = data.stops.get(stop_id) if stop_id is not None else None
    return stop.area_ids if stop is not None else frozenset()


def _price_by_rules(
    data: FareData,
    head: _Part,
    tail: _Part,
    from_tfs: frozenset[str],
    to_tfs: frozenset[str],
    *,
    category: str | None,
    media: str | None,
) -> _LegPrice:
    to_stop = tail.to_stop
    rules = matching_leg_rules(
        data,
        head.network_id,
        from_areas=_areas(data, head.from_stop),
        to_areas=_areas(data, to_stop),
        from_timeframes=from_tfs,
        to_timeframes=to_tfs,
    )
    where = f"network {head.network_id or '-'} from {head.from_stop} to {to_stop or '-'}"
    if from_tfs or to_tfs:
        where += f" in timeframes {sorted(from_tfs)}->{sorted(to_tfs)}"
    if not rules:
        reason = f"NO_LEG_RULE: no fare_leg_rules row matches {where}"
        return _LegPrice(0, None, None, None, None, False, reason, reason)
    distance = data.distance_m(head.from_stop, to_stop) if to_stop is not None else None
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
        return _LegPrice(0, None, None, None, distance, False, reason, reason)
    amount, product_id, rule = best
    note = (
        f"{rule.rule_id} ({where}, leg group {rule.leg_group_id or '-'}) -> {product_id} {amount}"
    )
    if product_id in data.distance_fares:
        note += f" (distance fare over {distance} m)"
    return _LegPrice(
        amount, product_id, rule.leg_group_id, rule.rule_id, distance, False, None, note
    )


def _price_entry_only(
    data: FareData, head: _Part, from_tfs: frozenset[str], category: str | None, media: str | None
) -> _LegPrice:
    row = _maximum_fare_row(data, head.network_id, head.from_stop)
    if row is not None:
        return _maximum_fare(data, row, category, media, f"entry at {head.from_stop} without exit")
    # No maximum fare declared: a flat fare that needs no exit may still apply.
    price = _price_by_rules(data, head, head, from_tfs, from_tfs, category=category, media=media)
    if price.no_fare_reason is None:
        return price
    reason = f"NO_MAXIMUM_FARE: entry at {head.from_stop} without exit and no maximum fare applies"
    return _LegPrice(0, None, None, None, None, False, reason, reason)


def _price_exit_only(
    data: FareData, head: _Part, category: str | None, media: str | None
) -> _LegPrice:
    what = f"exit at {head.from_stop} without entry"
    if data.settings.exit_without_entry is ExitWithoutEntry.MAXIMUM_FARE:
        row = _maximum_fare_row(data, head.network_id, head.from_stop)
        if row is not None:
            return _maximum_fare(data, row, category, media, what)
        reason = f"NO_MAXIMUM_FARE: {what} and no maximum fare applies"
    else:
        reason = f"EXIT_WITHOUT_ENTRY: {what}, not charged (exit_without_entry=ignore)"
    return _LegPrice(0, None, None, None, None, False, reason, reason)


def _maximum_fare(
    data: FareData, row: MaximumFare, category: str | None, media: str | None, what: str
) -> _LegPrice:
    product = choose_product(data, row.fare_product_id, category, media)
    if product is None:
        reason = (
            f"NO_PRODUCT: {what}; maximum fare {row.fare_product_id} is not sold to rider"
            f" category {category or '-'} on fare media {media or '-'}"
        )
        return _LegPrice(0, None, None, None, None, True, reason, reason)
    note = f"{what}: maximum fare {row.row_id} -> {product.fare_product_id} {product.amount_minor}"
    return _LegPrice(
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
    networks = frozenset((network_id,)) if network_id is not None else frozenset()
    checks: tuple[tuple[Callable[[FareLegRule], str | None], frozenset[str]], ...] = (
        (_rule_network, networks),
        (_rule_from_area, from_areas),
        (_rule_to_area, to_areas),
        (_rule_from_timeframe, from_timeframes),
        (_rule_to_timeframe, to_timeframes),
    )
    if data.leg_rules_use_priority:
        matched = [
            r
            for r in data.leg_rules
            if all((v := get(r)) is None or v in values for get, values in checks)
        ]
        if not matched:
            return []
        top = max(r.rule_priority for r in matched)
        return [r for r in matched if r.rule_priority == top]
    candidates = list(data.leg_rules)
    for get, values in checks:
        exact = [r for r in candidates if (v := get(r)) is not None and v in values]
        candidates = exact or [r for r in candidates if get(r) is None]
        if not candidates:
            return []
    return candidates


def _rule_network(rule: FareLegRule) -> str | None:
    return rule.network_id


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
    rows = data.products(fare_product_id)
    usable = [r for r in rows if media is None or r.fare_media_id in (None, media)]
    exact = [
        r for r in usable if r.rider_category_id is not None and r.rider_category_id == category
    ]
    pool = exact or [r for r in usable if r.rider_category_id is None]
    if not pool:
        return None
    return min(pool, key=lambda r: (r.amount_minor, r.fare_media_id or ""))


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
    for rule in _matching_transfer_rules(data, prev.price.leg_group_id, nxt.price.leg_group_id):
        if not _within_duration(rule, journey, prev, nxt):
            continue
        count = rule.transfer_count
        if count not in (None, -1) and journey.transfers_by_rule.get(rule.rule_id, 0) >= count:
            continue
        product = None
        if rule.fare_product_id is not None:
            product = choose_product(data, rule.fare_product_id, nxt.category, nxt.media)
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


def _matching_transfer_rules(
    data: FareData, from_group: str | None, to_group: str | None
) -> list[FareTransferRule]:
    key = ("transfer_rules", from_group, to_group)
    cached = data._memo.get(key)
    if cached is None:
        rules = list(data.transfer_rules)
        exact = [
            r
            for r in rules
            if r.from_leg_group_id is not None and r.from_leg_group_id == from_group
        ]
        rules = exact or [r for r in rules if r.from_leg_group_id is None]
        exact = [
            r for r in rules if r.to_leg_group_id is not None and r.to_leg_group_id == to_group
        ]
        rules = exact or [r for r in rules if r.to_leg_group_id is None]
        cached = rules
        data._memo[key] = cached
    return cached  # type: ignore[return-value]


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


def _counting_caps(
    data: FareData,
    product_id: str | None,
    transfer_product_id: str | None,
    category: str | None,
    media: str | None,
) -> tuple[Cap, ...]:
    """Caps that count a leg of these products for this rider category and fare media."""
    key = ("caps", product_id, transfer_product_id, category, media)
    cached = data._memo.get(key)
    if cached is None:
        products = {product_id, transfer_product_id} - {None}
        cached = tuple(
            cap
            for cap in data.caps
            if cap.applies_to(category, media) and cap.fare_product_ids & products
        )
        data._memo[key] = cached
    return cached  # type: ignore[return-value]


def _cap_periods(
    data: FareData, fare_leg: _FareLeg, day: date
) -> tuple[tuple[str, int, tuple[str, date]], ...]:
    """(cap id, cap amount, spend key) of each cap counting `fare_leg` on service day `day`;
    the spend key names the cap's period (that day, or the Monday of its week)."""
    product_id, transfer_product_id = fare_leg.price.product_id, fare_leg.transfer_product_id
    category, media = fare_leg.category, fare_leg.media
    key = ("cap_periods", product_id, transfer_product_id, category, media, day)
    cached = data._memo.get(key)
    if cached is None:
        week = day - timedelta(days=day.weekday())
        cached = data._memo[key] = tuple(
            (
                cap.cap_id,
                cap.amount_minor,
                (cap.cap_id, day if cap.period is CapPeriod.DAY else week),
            )
            for cap in _counting_caps(data, product_id, transfer_product_id, category, media)
        )
    return cached  # type: ignore[return-value]


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
    currency = data.currency
    day = head.service_day
    saved_by_cap: dict[str, int] = {}
    spend.saved_by_cap = saved_by_cap
    legs: list[PricedLeg] = []
    explanation: list[str] = []
    reasons: list[str] = []
    before = charge = 0
    incomplete = False
    default_category = data.default_rider_category_id  # transfers never cross versions
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
            leg_charge = _cap_charge(data, fare_leg, fare, day, spend)
            legs.append(_priced_leg(part, fare_leg, (fare, leg_charge, alone, ref), currency))
            before += fare
            charge += leg_charge
            incomplete = incomplete or part.incomplete
    caps: tuple[CapApplied, ...] = ()
    if saved_by_cap:
        caps = tuple(
            CapApplied(cap_id, _money(saved, currency))
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
        _money(before, currency),  # amount_before_caps
        caps,  # caps
        _money(charge, currency),  # charge
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
        (data.distance_m(p.from_stop, p.to_stop) or 0) if p.to_stop else 0 for p in fare_leg.parts
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
    day: date,
    spend: _CapSpend,
) -> int:
    """min(fare, headroom of every cap counting it); records spend and savings."""
    if not data.caps:
        return fare
    price = fare_leg.price
    if price.maximum_fare and not data.settings.maximum_fares_count_to_caps:
        return fare
    periods = _cap_periods(data, fare_leg, day)
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


def _priced_leg(
    part: _Part, fare_leg: _FareLeg, amounts: tuple[int, int, int, int], currency: str
) -> PricedLeg:
    """`amounts`: the part's fare, charge, standalone fare and reference fare."""
    fare, charge, standalone, reference = amounts
    fare_money = _money(fare, currency)
    # Mostly equal amounts: share the Money rather than look it up again.
    alone_money = fare_money if standalone == fare else _money(standalone, currency)
    reference_money = alone_money if reference == standalone else _money(reference, currency)
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
            else part.data.distance_m(part.from_stop, part.to_stop)
        ),
        fare_leg.price.leg_group_id,  # leg_group_id
        fare_leg.transfer_product_id if first_part else None,  # transfer_product_id
        fare_leg.price.maximum_fare,  # maximum_fare
        _money(charge, currency),  # charge
        alone_money,  # standalone_fare
        reference_money,  # reference_fare
    )


def check_tap(fare_data: FareData | FareCatalog, tap: Tap) -> None:
    """Raise the domain error a tap would meet: NAIVE_TIME, NO_FARE_VERSION, UNKNOWN_STOP or
    UNKNOWN_ROUTE. Pricing itself never raises for these; it reports them per journey."""
    if tap.tapped_at.utcoffset() is None:
        raise NaiveTimeError(tap.tap_id)
    data = as_catalog(fare_data).version_at(tap.tapped_at)
    if tap.stop_id not in data.stops:
        data.stop(tap.stop_id)
    if tap.route_id is not None and tap.route_id not in data.routes:
        data.route(tap.route_id)
