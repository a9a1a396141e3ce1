"""FareIndex: every lookup pricing needs, computed once when a fare data version loads.

Pricing asks the same questions for every tap (which networks serve this stop, which
timeframe groups contain this instant, which transfer rules join these leg groups, which
caps count this product): the index answers each with a dictionary lookup instead of a
scan of the feed's tables. Everything here is derived from one `FareData` and never
changes afterwards, except two bounded caches (standalone leg prices and Money values).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Final, final

from .bounded_cache import BoundedCache, MoneyCache
from .fare_rules import (
    Cap,
    CapPeriod,
    FareLegRule,
    FareProduct,
    FareTransferRule,
    MaximumFare,
    TimeframeDate,
)
from .network import ServiceCalendar, Timeframe

if TYPE_CHECKING:
    from .leg_rules import LegPrice, LegPriceKey
    from .model import FareData

NO_GROUPS: frozenset[str] = frozenset()

LEG_PRICES_BOUND = 32_768
"""Standalone leg prices remembered per fare data version (then the oldest is forgotten).
A price is keyed by stops, timeframe groups, rider category and fare media, never by date,
so the working set of a network is its travelled stop pairs, and it stops growing."""

MONEY_BOUND = 4_096
"""Money values remembered per fare data version (amounts recur: fares, caps, shares)."""

_ONE_DAY = timedelta(days=1)
_OTHER_MEDIUM = "\x00other"  # a fare medium the feed does not know (not None: "any medium")


@dataclass(frozen=True, slots=True)
class DaySchedule:
    """The timeframe groups by time of day on the dates where the same services run:
    `groups[i]` holds from `starts[i]` seconds after local midnight to the next start."""

    starts: tuple[int, ...]
    groups: tuple[frozenset[str], ...]

    def groups_at(self, seconds: int) -> frozenset[str]:
        """Timeframe groups containing local time of day `seconds` (0-86399)."""
        return self.groups[bisect_right(self.starts, seconds) - 1]


@dataclass(frozen=True, slots=True)
class CapTerms:
    """What charging needs of a cap: its id, amount, whether it counts a service day (else
    a Monday-Sunday week), and the service days it counts (None = every day)."""

    cap_id: str
    amount_minor: int
    daily: bool
    days: frozenset[date] | None = None


@final
class FareIndex:
    """Lookups by stop, route, network, timeframe, leg group, product and cap, built once
    from one fare data version. Read-only after construction, except two BoundedCaches:
    `leg_prices` and the Money values (results of pure functions: never another answer)."""

    def __init__(self, data: FareData) -> None:
        settings = data.settings
        self.timezone: Final = data.timezone
        self.currency: Final = data.currency
        self.fare_version: Final = data.fare_version  # one string, shared by every journey
        self.day_start_s: Final = settings.service_day_start_s
        # The instant this version comes into force: its first service day's boundary.
        self.in_force_from: Final = (
            None
            if settings.effective_from is None
            else datetime.combine(settings.effective_from, time(0), data.timezone)
            + timedelta(seconds=settings.service_day_start_s)
        )
        self.default_rider_category_id: Final = next(
            (c.rider_category_id for c in data.rider_categories.values() if c.is_default), None
        )
        self.incomplete_after: Final = timedelta(seconds=settings.incomplete_after_s)
        # The exit-to-entry gap within which join rules without a duration limit join legs.
        self.join_gap: Final = timedelta(
            seconds=settings.join_window_s or settings.incomplete_after_s
        )
        self.only_network_id: Final = (
            next(iter(data.network_ids)) if len(data.network_ids) == 1 else None
        )
        self.first_agency_id: Final = min(data.agencies) if data.agencies else ""
        # Timeframes: one schedule per distinct set of running services.
        self.has_timeframes: Final = bool(data.timeframes)
        self.uses_from_timeframes: Final = any(
            r.from_timeframe_group_id is not None for r in data.leg_rules
        )
        self.uses_to_timeframes: Final = any(
            r.to_timeframe_group_id is not None for r in data.leg_rules
        )
        self._schedules, self._schedule_off_calendar = _day_schedules(
            data.timeframes, data.calendar
        )
        # Which date picks the schedule: the local calendar date, or the service day.
        self.timeframes_by_service_day: Final = settings.timeframe_date is TimeframeDate.SERVICE_DAY
        # Distance bands (fare_leg_rules min_distance/max_distance): matched only if used.
        self.uses_distance_bands: Final = any(r.has_distance_band for r in data.leg_rules)
        # Stops: networks and operator of the routes serving a stop (or its parent).
        routes_at = {stop_id: _routes_at(data, stop_id) for stop_id in data.stops}
        self._stop_networks: Final[Mapping[str, tuple[str, ...]]] = {
            stop_id: tuple(
                sorted({n for r in routes if (n := data.routes[r].network_id) is not None})
            )
            for stop_id, routes in routes_at.items()
        }
        self._stop_operators: Final[Mapping[str, str]] = {
            stop_id: min((data.routes[r].agency_id for r in routes), default=self.first_agency_id)
            for stop_id, routes in routes_at.items()
        }
        # The network and operator of a tap at a known stop with no route (see below).
        self._stop_network_operator: Final[Mapping[str, tuple[str | None, str]]] = {
            stop_id: (
                networks[0] if networks else self.only_network_id,
                self._stop_operators[stop_id],
            )
            for stop_id, networks in self._stop_networks.items()
        }
        self._stop_areas: Final[Mapping[str, frozenset[str]]] = {
            stop_id: stop.area_ids for stop_id, stop in data.stops.items()
        }
        self._parents: Final[Mapping[str, str]] = {
            stop_id: stop.parent_station
            for stop_id, stop in data.stops.items()
            if stop.parent_station
        }
        self._coordinates: Final = _coordinates(data)
        self._distances: Final = {(b, a): m for (a, b), m in data.distances.items()} | dict(
            data.distances
        )
        # Rules.
        self._leg_rules: Final = data.leg_rules
        self.leg_rules_use_priority: Final = data.leg_rules_use_priority
        self._leg_rules_by_network: Final = _leg_rules_by_network(
            data.leg_rules, data.network_ids, priority=data.leg_rules_use_priority
        )
        self._transfer_rules: Final = data.transfer_rules
        groups = {r.leg_group_id for r in data.leg_rules}
        self._transfer_rules_between: Final[
            Mapping[tuple[str | None, str | None], tuple[FareTransferRule, ...]]
        ] = {
            (a, b): _matching_transfer_rules(data.transfer_rules, a, b)
            for a in groups | {None}
            for b in groups | {None}
        }
        self._maximum_fares: Final = data.maximum_fares
        # Timeframe groups that maximum fare rows name: only these can change the row.
        self.maximum_fare_groups: Final = frozenset(
            m.timeframe_group_id for m in data.maximum_fares if m.timeframe_group_id is not None
        )
        self.maximum_fares_use_timeframes: Final = bool(self.maximum_fare_groups)
        # Whether a leg's price depends on the timeframe groups at its departure at all, and
        # whether an incomplete leg's does (leg rules' to-timeframes, maximum fare rows).
        self.prices_by_departure_groups, self.incomplete_prices_by_groups = (
            self.uses_from_timeframes
            or self.uses_to_timeframes
            or self.maximum_fares_use_timeframes,
            self.uses_to_timeframes or self.maximum_fares_use_timeframes,
        )
        self._maximum_fare_rows: Final = _maximum_fare_rows(
            data, self._group_sets(self.maximum_fare_groups)
        )
        self._known_networks: Final = frozenset({*data.network_ids, None})
        # How long an entry waits for its exit, where a maximum fare row (one that does not
        # depend on the time) says another limit than the feed's.
        self._waits: Final = (
            {} if self.maximum_fares_use_timeframes else self._waits_by_stop(data.stops)
        )
        # Products: rows by id; transfer products chosen per rider category and medium.
        self._products: Final = data.fare_products
        self._categories: Final = frozenset(data.rider_categories)
        self._media: Final = frozenset(data.fare_media)
        transfer_products = frozenset(
            r.fare_product_id for r in data.transfer_rules if r.fare_product_id is not None
        )
        self._transfer_products: Final[
            Mapping[tuple[str | None, str | None, str | None], FareProduct | None]
        ] = {
            (product_id, category, medium): choose_product_row(
                data.fare_products.get(product_id, ()), category, medium
            )
            for product_id in transfer_products
            for category in (*self._categories, None)
            for medium in (*self._media, None, _OTHER_MEDIUM)
        }
        # Caps: those counting each (product, transfer product, category, medium).
        self.has_caps: Final = bool(data.caps)
        self.maximum_fares_count_to_caps: Final = settings.maximum_fares_count_to_caps
        self._counted_products: Final = frozenset(
            p for cap in data.caps for p in cap.fare_product_ids
        )
        self._counted_transfer_products: Final = self._counted_products & transfer_products
        self._counting_caps: Final = _counting_caps(
            data.caps,
            self._counted_products,
            self._counted_transfer_products,
            self._categories,
            self._media,
            calendar=data.calendar,
        )
        self.leg_prices: Final[BoundedCache[LegPriceKey, LegPrice]] = BoundedCache(LEG_PRICES_BOUND)
        self.money: Final = MoneyCache(MONEY_BOUND, data.currency)

    # --- time -------------------------------------------------------------------------
    def local_facts(self, at: datetime) -> tuple[date, frozenset[str]]:
        """The service day of instant `at` and the timeframe groups containing it (local
        time of day, on the local calendar date, or on the service day when the feed sets
        timeframe_date = service_day)."""
        local = at.astimezone(self.timezone)
        on = local.date()
        seconds = local.hour * 3600 + local.minute * 60 + local.second
        # Before the day boundary, the instant belongs to the previous service day.
        day = on - _ONE_DAY if seconds < self.day_start_s else on
        if not self.has_timeframes:
            return day, NO_GROUPS
        schedule = self._schedules.get(
            day if self.timeframes_by_service_day else on, self._schedule_off_calendar
        )
        # DaySchedule.groups_at, inline: this runs for every fare leg.
        return day, schedule.groups[bisect_right(schedule.starts, seconds) - 1]

    def _group_sets(self, relevant: frozenset[str]) -> frozenset[frozenset[str]]:
        """Every distinct set of `relevant` timeframe groups an instant can be in."""
        schedules = (*self._schedules.values(), self._schedule_off_calendar)
        return frozenset(g & relevant for s in schedules for g in s.groups) | {NO_GROUPS}

    def service_day(self, at: datetime) -> date:
        """The service day of an instant: local date, shifted back by the day boundary."""
        local = at.astimezone(self.timezone)
        on = local.date()
        seconds = local.hour * 3600 + local.minute * 60 + local.second
        return on - _ONE_DAY if seconds < self.day_start_s else on

    # --- stops and routes -------------------------------------------------------------
    def networks_for_stop(self, stop_id: str) -> tuple[str, ...]:
        """Fare networks of the routes serving `stop_id` or its parent station, sorted."""
        return self._stop_networks.get(stop_id, ())

    def operator_for_stop(self, stop_id: str) -> str:
        """The lowest agency id among routes serving a known stop, else the feed's first."""
        return self._stop_operators[stop_id]

    def network_at_stop(self, stop_id: str) -> str | None:
        """The network of a one-tap leg at `stop_id` with no known route: the first network
        serving the stop, else the feed's only network."""
        found = self._stop_network_operator.get(stop_id)
        return found[0] if found is not None else self.only_network_id

    def operator_at_stop(self, stop_id: str) -> str:
        """The operator of a tap at `stop_id` with no operator and no known route: the
        stop's, else (an unknown stop) the feed's first agency."""
        return self._stop_operators.get(stop_id, self.first_agency_id)

    def network_and_operator_at_stop(self, stop_id: str) -> tuple[str | None, str]:
        """`network_at_stop` and `operator_at_stop` at once (asked for every tap)."""
        found = self._stop_network_operator.get(stop_id)
        if found is None:
            return self.network_at_stop(stop_id), self.operator_at_stop(stop_id)
        return found

    def areas(self, stop_id: str | None) -> frozenset[str]:
        """A stop's fare areas (its own and its parent station's); none if unknown."""
        if stop_id is None:
            return NO_GROUPS
        return self._stop_areas.get(stop_id, NO_GROUPS)

    def parent_station(self, stop_id: str) -> str | None:
        """The parent station of a known stop, if it has one."""
        return self._parents.get(stop_id)

    def distance_m(self, from_stop_id: str, to_stop_id: str) -> int | None:
        """Distance table value (either direction), else great-circle, else None."""
        table = self._distances.get((from_stop_id, to_stop_id))
        if table is not None:
            return table
        a, b = self._coordinates.get(from_stop_id), self._coordinates.get(to_stop_id)
        if a is None or b is None:
            return None
        # great_circle_m with each stop's radians and cosine computed once.
        p1, cos1, lon1 = a
        p2, cos2, lon2 = b
        dp, dl = p2 - p1, math.radians(lon2 - lon1)
        h = math.sin(dp / 2) ** 2 + cos1 * cos2 * math.sin(dl / 2) ** 2
        return round(2 * 6_371_008.8 * math.asin(math.sqrt(h)))

    # --- rules ------------------------------------------------------------------------
    def leg_rules_for_network(self, network_id: str | None) -> tuple[FareLegRule, ...]:
        """The leg rules left after matching the network field (see `matching_leg_rules`)."""
        rules = self._leg_rules_by_network.get(network_id)
        if rules is None:  # a network no route declares: match it like any other
            assert network_id is not None
            found = _leg_rules_by_network(
                self._leg_rules, (network_id,), priority=self.leg_rules_use_priority
            )
            return found[network_id]
        return rules

    def transfer_rules_between(
        self, from_group: str | None, to_group: str | None
    ) -> tuple[FareTransferRule, ...]:
        """Transfer rules from one leg group to another: exact matches, else empty fields."""
        rules = self._transfer_rules_between.get((from_group, to_group))
        if rules is None:
            return _matching_transfer_rules(self._transfer_rules, from_group, to_group)
        return rules

    def transfer_product(
        self, fare_product_id: str, category: str | None, medium: str | None
    ) -> FareProduct | None:
        """The row of a transfer product sold to `category` on `medium` (see choose_product)."""
        key = (
            fare_product_id,
            category if category in self._categories else None,
            medium if medium is None or medium in self._media else _OTHER_MEDIUM,
        )
        if key in self._transfer_products:
            return self._transfer_products[key]
        return self.choose_product(fare_product_id, category, medium)

    def choose_product(
        self, fare_product_id: str, category: str | None, medium: str | None
    ) -> FareProduct | None:
        """The row of a product sold to `category` on `medium` (None = any medium)."""
        return choose_product_row(self._products.get(fare_product_id, ()), category, medium)

    def maximum_fare_row(
        self, network_id: str | None, stop_id: str, groups: frozenset[str] = NO_GROUPS
    ) -> MaximumFare | None:
        """The most specific maximum fare row for an entry at `stop_id` on `network_id` at
        an instant in timeframe `groups`."""
        if not self._maximum_fares:
            return None
        relevant = NO_GROUPS
        if self.maximum_fares_use_timeframes:
            relevant = groups & self.maximum_fare_groups
        if network_id in self._known_networks and stop_id in self._stop_areas:
            return self._maximum_fare_rows.get((network_id, stop_id, relevant))
        return _most_specific(self._maximum_fares, network_id, self.areas(stop_id), relevant)

    def incomplete_after_entry(
        self, network_id: str | None, stop_id: str, at: datetime
    ) -> timedelta:
        """How long an entry at `stop_id` on `network_id` at instant `at` waits for its exit."""
        if not self._maximum_fares:
            return self.incomplete_after
        if (
            not self.maximum_fares_use_timeframes
            and network_id in self._known_networks
            and stop_id in self._stop_areas
        ):
            return self._waits.get((network_id, stop_id), self.incomplete_after)
        groups = self.local_facts(at)[1] if self.maximum_fares_use_timeframes else NO_GROUPS
        return self._wait_of(self.maximum_fare_row(network_id, stop_id, groups))

    def _waits_by_stop(self, stops: Iterable[str]) -> dict[tuple[str | None, str], timedelta]:
        """How long an entry waits at (network or None, known stop) when its maximum fare
        row says another limit than the feed's (rows that do not depend on the time)."""
        found = {}
        for (network_id, stop_id, _), row in self._maximum_fare_rows.items():
            if row.incomplete_after_s and stop_id in stops:
                found[(network_id, stop_id)] = timedelta(seconds=row.incomplete_after_s)
        return found

    def _wait_of(self, row: MaximumFare | None) -> timedelta:
        """An entry's wait under maximum fare row `row` (None: the feed's)."""
        if row is None or not row.incomplete_after_s:
            return self.incomplete_after
        return timedelta(seconds=row.incomplete_after_s)

    def caps_counting(
        self,
        product_id: str | None,
        transfer_product_id: str | None,
        category: str | None,
        medium: str | None,
    ) -> tuple[CapTerms, ...]:
        """Caps, in feed order, that count a leg of these products for this rider category
        and fare medium."""
        found = self._counting_caps.get((product_id, transfer_product_id, category, medium))
        if found is not None:  # the ids as they are: the common case
            return found
        key = (
            product_id if product_id in self._counted_products else None,
            transfer_product_id if transfer_product_id in self._counted_transfer_products else None,
            category if category in self._categories else None,
            medium if medium in self._media else None,
        )
        return self._counting_caps.get(key, ())


def choose_product_row(
    rows: Iterable[FareProduct], category: str | None, medium: str | None
) -> FareProduct | None:
    """The row sold to `category` on `medium` (None = any medium), cheapest first; rows
    naming the rider category win over rows open to every category."""
    usable = [r for r in rows if medium is None or r.fare_media_id in (None, medium)]
    exact = [
        r for r in usable if r.rider_category_id is not None and r.rider_category_id == category
    ]
    pool = exact or [r for r in usable if r.rider_category_id is None]
    if not pool:
        return None
    return min(pool, key=lambda r: (r.amount_minor, r.fare_media_id or ""))


def _routes_at(data: FareData, stop_id: str) -> tuple[str, ...]:
    stop = data.stops.get(stop_id)
    routes = set(data.stop_routes.get(stop_id, ()))
    if stop is not None and stop.parent_station:
        routes.update(data.stop_routes.get(stop.parent_station, ()))
    return tuple(sorted(routes))


def _coordinates(data: FareData) -> dict[str, tuple[float, float, float]]:
    """Per stop with coordinates: latitude in radians, its cosine, longitude in degrees."""
    found: dict[str, tuple[float, float, float]] = {}
    for stop_id, stop in data.stops.items():
        if stop.lat is not None and stop.lon is not None:
            p = math.radians(stop.lat)
            found[stop_id] = (p, math.cos(p), stop.lon)
    return found


def _day_schedules(
    timeframes: tuple[Timeframe, ...], calendar: ServiceCalendar
) -> tuple[dict[date, DaySchedule], DaySchedule]:
    """The schedule of every date on which a service named by a timeframe runs, and the
    schedule of every other date (only timeframes without a service)."""
    services = sorted({tf.service_id for tf in timeframes if tf.service_id is not None})
    running: dict[date, list[str]] = {}
    for service_id in services:
        for day in dates_of(calendar, service_id):
            running.setdefault(day, []).append(service_id)
    shared: dict[frozenset[str], frozenset[str]] = {}
    by_services: dict[tuple[str, ...], DaySchedule] = {}

    def schedule(active: tuple[str, ...]) -> DaySchedule:
        found = by_services.get(active)
        if found is None:
            windows = [tf for tf in timeframes if tf.service_id is None or tf.service_id in active]
            found = by_services[active] = _schedule_of(windows, shared)
        return found

    off_calendar = schedule(())
    return {day: schedule(tuple(active)) for day, active in running.items()}, off_calendar


def dates_of(calendar: ServiceCalendar, service_id: str) -> set[date]:
    """Every date `service_id` runs on (calendar.txt pattern plus calendar_dates.txt)."""
    dates = {on for s, on in calendar.added if s == service_id}
    pattern = calendar.weekly.get(service_id)
    if pattern is not None:
        days, start, end = pattern
        on = start
        while on <= end:
            if days[on.weekday()]:
                dates.add(on)
            on += timedelta(days=1)
    return {on for on in dates if calendar.is_active(service_id, on)}


def _schedule_of(
    windows: list[Timeframe], shared: dict[frozenset[str], frozenset[str]]
) -> DaySchedule:
    bounds = sorted({0, *(tf.start_s for tf in windows), *(tf.end_s for tf in windows)})
    starts = tuple(b for b in bounds if b < 86400)
    groups = []
    for start in starts:
        found = frozenset(tf.timeframe_group_id for tf in windows if tf.start_s <= start < tf.end_s)
        groups.append(shared.setdefault(found, found))  # one object per distinct set
    return DaySchedule(starts, tuple(groups))


def _leg_rules_by_network(
    rules: tuple[FareLegRule, ...], network_ids: Iterable[str], *, priority: bool
) -> dict[str | None, tuple[FareLegRule, ...]]:
    """For each network (and None), the leg rules whose network field matches it: with
    rule_priority, empty or equal; without, equal if any row names it, else empty."""
    found: dict[str | None, tuple[FareLegRule, ...]] = {}
    for network_id in (*network_ids, None):
        if priority:
            found[network_id] = tuple(
                r for r in rules if r.network_id is None or r.network_id == network_id
            )
            continue
        exact = tuple(r for r in rules if r.network_id is not None and r.network_id == network_id)
        found[network_id] = exact or tuple(r for r in rules if r.network_id is None)
    return found


def _matching_transfer_rules(
    rules: tuple[FareTransferRule, ...], from_group: str | None, to_group: str | None
) -> tuple[FareTransferRule, ...]:
    exact = [
        r for r in rules if r.from_leg_group_id is not None and r.from_leg_group_id == from_group
    ]
    found = exact or [r for r in rules if r.from_leg_group_id is None]
    exact = [r for r in found if r.to_leg_group_id is not None and r.to_leg_group_id == to_group]
    return tuple(exact or [r for r in found if r.to_leg_group_id is None])


def _most_specific(
    rows: tuple[MaximumFare, ...],
    network_id: str | None,
    areas: frozenset[str],
    groups: frozenset[str] = NO_GROUPS,
) -> MaximumFare | None:
    """Most specific first: network and area, network, area, neither; within each, a row
    naming a timeframe (containing the entry) before one that does not; then file order."""
    candidates = [
        row
        for row in rows
        if (row.network_id is None or row.network_id == network_id)
        and (row.area_id is None or row.area_id in areas)
        and (row.timeframe_group_id is None or row.timeframe_group_id in groups)
    ]
    candidates.sort(
        key=lambda r: (r.network_id is None, r.area_id is None, r.timeframe_group_id is None)
    )
    return candidates[0] if candidates else None


def _maximum_fare_rows(
    data: FareData, group_sets: frozenset[frozenset[str]]
) -> dict[tuple[str | None, str, frozenset[str]], MaximumFare]:
    """The maximum fare row of every (network or None, known stop, set of the timeframe
    groups maximum fares name) that has one."""
    found: dict[tuple[str | None, str, frozenset[str]], MaximumFare] = {}
    if not data.maximum_fares:
        return found
    for stop_id, stop in data.stops.items():
        for network_id in (*data.network_ids, None):
            for groups in group_sets:
                row = _most_specific(data.maximum_fares, network_id, stop.area_ids, groups)
                if row is not None:
                    found[(network_id, stop_id, groups)] = row
    return found


def _counting_caps(
    caps: tuple[Cap, ...],
    counted: frozenset[str],
    counted_transfer_products: frozenset[str],
    categories: frozenset[str],
    media: frozenset[str],
    *,
    calendar: ServiceCalendar,
) -> dict[tuple[str | None, str | None, str | None, str | None], tuple[CapTerms, ...]]:
    """For every (counted product or None, counted transfer product or None, rider category
    or None, medium or None): the caps counting such a leg, in feed order (only non-empty).
    Any other product, category or medium is counted by exactly the caps of None."""
    found: dict[tuple[str | None, str | None, str | None, str | None], tuple[CapTerms, ...]] = {}
    if not caps:
        return found
    terms = {
        cap.cap_id: CapTerms(
            cap.cap_id,
            cap.amount_minor,
            cap.period is CapPeriod.DAY,
            None if cap.service_id is None else frozenset(dates_of(calendar, cap.service_id)),
        )
        for cap in caps
    }
    for product_id in (*counted, None):
        for transfer_product_id in (*counted_transfer_products, None):
            products = {product_id, transfer_product_id} - {None}
            for category in (*categories, None):
                for medium in (*media, None):
                    chosen = tuple(
                        terms[cap.cap_id]
                        for cap in caps
                        if cap.applies_to(category, medium) and cap.fare_product_ids & products
                    )
                    if chosen:
                        found[(product_id, transfer_product_id, category, medium)] = chosen
    return found
