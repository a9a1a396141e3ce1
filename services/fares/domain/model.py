"""The fare data model: taps in, GTFS Fares v2 and Clearway extensions as plain values."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from .errors import NoFareVersionError, UnknownRouteError, UnknownStopError


class TapKind(StrEnum):
    """What a validator recorded: entering or leaving a paid area, or boarding a vehicle."""

    ENTRY = "entry"
    EXIT = "exit"
    BOARD = "board"


@dataclass(frozen=True, slots=True)
class Tap:
    """One card presented to one validator at one instant (`tapped_at` is timezone-aware)."""

    tap_id: str
    card_token: str
    tapped_at: datetime
    stop_id: str
    kind: TapKind
    route_id: str | None = None
    operator_id: str | None = None
    rider_category_id: str | None = None
    fare_media_id: str | None = None


@dataclass(frozen=True, slots=True)
class Agency:
    """A GTFS agency: in Clearway terms, an Operator."""

    agency_id: str
    name: str
    timezone: str


@dataclass(frozen=True, slots=True)
class Stop:
    """A stop with the fare areas it belongs to (its own and its parent station's)."""

    stop_id: str
    name: str
    lat: float | None
    lon: float | None
    parent_station: str | None
    area_ids: frozenset[str]


@dataclass(frozen=True, slots=True)
class Route:
    """A route, run by one agency, in at most one fare network."""

    route_id: str
    agency_id: str
    network_id: str | None


@dataclass(frozen=True, slots=True)
class FareMedia:
    """A medium that can hold or validate a fare product (card, bank card, ticket...)."""

    fare_media_id: str
    name: str
    media_type: int


@dataclass(frozen=True, slots=True)
class RiderCategory:
    """A group of riders with its own prices (adult, youth, senior...)."""

    rider_category_id: str
    name: str
    is_default: bool


@dataclass(frozen=True, slots=True)
class FareProduct:
    """One priced row of fare_products.txt (a product id may have several rows)."""

    fare_product_id: str
    name: str
    rider_category_id: str | None
    fare_media_id: str | None
    amount_minor: int


@dataclass(frozen=True, slots=True)
class FareLegRule:
    """One row of fare_leg_rules.txt; empty fields are None."""

    rule_id: str  # "fare_leg_rules.txt:<line>"
    leg_group_id: str | None
    network_id: str | None
    from_area_id: str | None
    to_area_id: str | None
    from_timeframe_group_id: str | None
    to_timeframe_group_id: str | None
    fare_product_id: str
    rule_priority: int


@dataclass(frozen=True, slots=True)
class FareLegJoinRule:
    """One row of fare_leg_join_rules.txt: two consecutive legs priced as one."""

    from_network_id: str
    to_network_id: str
    from_stop_id: str | None
    to_stop_id: str | None


class FareTransferType(StrEnum):
    """How a transfer is costed (fare_transfer_rules.fare_transfer_type)."""

    A_AB = "0"  # from-leg fare + transfer product
    A_AB_B = "1"  # from-leg fare + transfer product + to-leg fare
    AB = "2"  # transfer product only


@dataclass(frozen=True, slots=True)
class FareTransferRule:
    """One row of fare_transfer_rules.txt; empty fields are None."""

    rule_id: str  # "fare_transfer_rules.txt:<line>"
    from_leg_group_id: str | None
    to_leg_group_id: str | None
    transfer_count: int | None  # -1 = unlimited
    duration_limit: int | None  # seconds
    duration_limit_type: int | None  # 0..3
    fare_transfer_type: FareTransferType
    fare_product_id: str | None


@dataclass(frozen=True, slots=True)
class Timeframe:
    """A time-of-day window [start, end) on the dates of `service_id` (all dates if None)."""

    timeframe_group_id: str
    start_s: int
    end_s: int
    service_id: str | None


@dataclass(frozen=True, slots=True)
class ServiceCalendar:
    """calendar.txt and calendar_dates.txt: on which dates a service_id runs."""

    weekly: Mapping[str, tuple[tuple[bool, ...], date, date]]
    added: frozenset[tuple[str, date]]
    removed: frozenset[tuple[str, date]]

    def is_active(self, service_id: str, on: date) -> bool:
        """True when `service_id` runs on `on` (exceptions override the weekly pattern)."""
        if (service_id, on) in self.removed:
            return False
        if (service_id, on) in self.added:
            return True
        pattern = self.weekly.get(service_id)
        if pattern is None:
            return False
        days, start, end = pattern
        return start <= on <= end and days[on.weekday()]

    def knows(self, service_id: str) -> bool:
        """True when `service_id` appears in calendar.txt or calendar_dates.txt."""
        return (
            service_id in self.weekly
            or any(s == service_id for s, _ in self.added)
            or any(s == service_id for s, _ in self.removed)
        )


class CapPeriod(StrEnum):
    """How long a cap's spend accumulates: a service day or a Monday-Sunday week."""

    DAY = "day"
    WEEK = "week"


@dataclass(frozen=True, slots=True)
class Cap:
    """A spend cap (clearway_caps.txt): counts the listed products, across operators."""

    cap_id: str
    name: str
    period: CapPeriod
    amount_minor: int
    fare_media_id: str | None  # None = any medium
    rider_category_id: str | None  # None = any rider category
    fare_product_ids: frozenset[str]

    def applies_to(self, rider_category_id: str | None, fare_media_id: str | None) -> bool:
        """True when a card of this category and medium is subject to the cap."""
        return (self.rider_category_id is None or self.rider_category_id == rider_category_id) and (
            self.fare_media_id is None or self.fare_media_id == fare_media_id
        )


@dataclass(frozen=True, slots=True)
class MaximumFare:
    """What an incomplete journey costs (clearway_maximum_fares.txt)."""

    row_id: str
    network_id: str | None  # None = any network
    area_id: str | None  # entry area; None = any
    fare_product_id: str
    incomplete_after_s: int | None  # None = the feed-wide setting


class Rounding(StrEnum):
    """Declared rounding of a computed distance fare."""

    HALF_UP = "half_up"
    HALF_EVEN = "half_even"
    UP = "up"
    DOWN = "down"


_ROUNDING_MODES = {
    Rounding.HALF_UP: ROUND_HALF_UP,
    Rounding.HALF_EVEN: ROUND_HALF_EVEN,
    Rounding.UP: ROUND_CEILING,
    Rounding.DOWN: ROUND_FLOOR,
}


@dataclass(frozen=True, slots=True)
class DistanceFare:
    """A product priced base + per-km (clearway_distance_fares.txt), in minor units."""

    fare_product_id: str
    base_minor: Decimal
    per_km_minor: Decimal
    rounding: Rounding
    rounding_unit_minor: int
    minimum_minor: int | None
    maximum_minor: int | None

    def amount_for(self, distance_m: int) -> int:
        """Fare in minor units for `distance_m`, rounded as declared, then bounded."""
        raw = self.base_minor + self.per_km_minor * Decimal(distance_m) / Decimal(1000)
        units = (raw / self.rounding_unit_minor).quantize(
            Decimal(1), rounding=_ROUNDING_MODES[self.rounding]
        )
        amount = int(units) * self.rounding_unit_minor
        if self.minimum_minor is not None:
            amount = max(amount, self.minimum_minor)
        if self.maximum_minor is not None:
            amount = min(amount, self.maximum_minor)
        return amount


class ExitWithoutEntry(StrEnum):
    """Policy for an exit tap with no entry to pair with."""

    IGNORE = "ignore"  # reported as a zero-charge journey with a reason
    MAXIMUM_FARE = "maximum_fare"  # charged the maximum fare of the exit's network/area


@dataclass(frozen=True, slots=True)
class Settings:
    """Feed-wide engine settings (clearway_fare_settings.txt), with documented defaults."""

    service_day_start_s: int = 0
    incomplete_after_s: int = 3 * 3600
    maximum_fares_count_to_caps: bool = False
    exit_without_entry: ExitWithoutEntry = ExitWithoutEntry.IGNORE
    default_fare_media_id: str | None = None
    feed_id: str | None = None
    fare_version: str | None = None
    effective_from: date | None = None


_NO_GROUPS: frozenset[str] = frozenset()
_INSTANTS_LIMIT = 200_000  # remembered instants per fare data version (then forgotten)


def great_circle_m(lat1: float, lon1: float, lat2: float, lon2: float) -> int:
    """Haversine distance in whole metres on a 6,371,008.8 m sphere (mean Earth radius)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return round(2 * 6_371_008.8 * math.asin(math.sqrt(h)))


@dataclass(frozen=True, eq=False)
class FareData:
    """One version of a network's fare data, loaded and cross-checked by `load_fare_data`."""

    feed_id: str
    version: str
    currency: str
    timezone: ZoneInfo
    settings: Settings
    agencies: Mapping[str, Agency]
    stops: Mapping[str, Stop]
    routes: Mapping[str, Route]
    network_ids: frozenset[str]
    area_ids: frozenset[str]
    fare_media: Mapping[str, FareMedia]
    rider_categories: Mapping[str, RiderCategory]
    fare_products: Mapping[str, tuple[FareProduct, ...]]
    leg_rules: tuple[FareLegRule, ...]
    leg_rules_use_priority: bool
    join_rules: tuple[FareLegJoinRule, ...]
    transfer_rules: tuple[FareTransferRule, ...]
    timeframes: tuple[Timeframe, ...]
    calendar: ServiceCalendar
    caps: tuple[Cap, ...]
    maximum_fares: tuple[MaximumFare, ...]
    distance_fares: Mapping[str, DistanceFare]
    distances: Mapping[tuple[str, str], int]
    stop_routes: Mapping[str, tuple[str, ...]]
    _memo: dict[object, object] = field(default_factory=dict, repr=False)
    # instant -> (service day, timeframe groups): both depend only on the instant.
    _instants: dict[datetime, tuple[date, frozenset[str]]] = field(default_factory=dict, repr=False)

    @property
    def effective_from(self) -> date | None:
        """First service day this version is in force (None = since forever)."""
        return self.settings.effective_from

    @property
    def fare_version(self) -> str:
        """`<feed_id>@<version>`, stamped on every journey priced with this data."""
        return f"{self.feed_id}@{self.version}"

    @property
    def default_rider_category_id(self) -> str | None:
        """The category with is_default_fare_category=1, if the feed declares one."""
        if "default_category" not in self._memo:
            self._memo["default_category"] = next(
                (c.rider_category_id for c in self.rider_categories.values() if c.is_default), None
            )
        return self._memo["default_category"]  # type: ignore[return-value]

    def stop(self, stop_id: str) -> Stop:
        """The stop, or UnknownStopError."""
        try:
            return self.stops[stop_id]
        except KeyError:
            raise UnknownStopError(stop_id) from None

    def route(self, route_id: str) -> Route:
        """The route, or UnknownRouteError."""
        try:
            return self.routes[route_id]
        except KeyError:
            raise UnknownRouteError(route_id) from None

    def operator_for_route(self, route_id: str) -> str:
        """The operator (GTFS agency_id) running `route_id`."""
        return self.route(route_id).agency_id

    def operator_for_stop(self, stop_id: str) -> str:
        """The operator at a stop: the agency of the routes serving it (lowest id if several),
        else the feed's first agency by id."""
        key = ("operator_for_stop", stop_id)
        cached = self._memo.get(key)
        if cached is None:
            self.stop(stop_id)
            agencies = sorted({self.routes[r].agency_id for r in self._routes_at(stop_id)})
            cached = self._memo[key] = agencies[0] if agencies else sorted(self.agencies)[0]
        return cached  # type: ignore[return-value]

    def networks_for_stop(self, stop_id: str) -> tuple[str, ...]:
        """Fare networks of the routes serving `stop_id` (or its parent/children), sorted."""
        key = ("networks_for_stop", stop_id)
        cached = self._memo.get(key)
        if cached is None:
            nets = {self.routes[r].network_id for r in self._routes_at(stop_id)}
            cached = tuple(sorted(n for n in nets if n is not None))
            self._memo[key] = cached
        return cached  # type: ignore[return-value]

    def _routes_at(self, stop_id: str) -> tuple[str, ...]:
        stop = self.stops.get(stop_id)
        routes = set(self.stop_routes.get(stop_id, ()))
        if stop is not None and stop.parent_station:
            routes.update(self.stop_routes.get(stop.parent_station, ()))
        return tuple(sorted(routes))

    def service_day(self, at: datetime) -> date:
        """The service day of an instant: local date, shifted back by the day boundary."""
        return self.local_facts(at)[0]

    def local(self, at: datetime) -> datetime:
        """`at` in the network's timezone (the last conversion is remembered: pricing asks
        for the same instant several times in a row)."""
        last = self._memo.get("last_local")
        if last is not None and last[0] is at:  # type: ignore[index]
            return last[1]  # type: ignore[index, no-any-return]
        local = at.astimezone(self.timezone)
        self._memo["last_local"] = (at, local)
        return local

    def timeframe_groups_at(self, at: datetime) -> frozenset[str]:
        """Timeframe groups whose window contains `at` (local time and date)."""
        return self.local_facts(at)[1]

    def local_facts(self, at: datetime) -> tuple[date, frozenset[str]]:
        """The service day of instant `at` and the timeframe groups containing it, converted
        to local time once and remembered (equal instants give equal answers)."""
        # fold=1 compares equal to its fold=0 twin in the same zone (PEP 495), yet is
        # another instant: never remembered nor looked up.
        facts = self._instants.get(at) if not at.fold else None
        if facts is None:
            local = self.local(at)
            start = self.settings.service_day_start_s
            day = (local - timedelta(seconds=start)).date() if start else local.date()
            facts = (day, self._groups_at(local))
            if not at.fold:
                if len(self._instants) >= _INSTANTS_LIMIT:
                    self._instants.clear()
                self._instants[at] = facts
        return facts

    def _groups_at(self, local: datetime) -> frozenset[str]:
        if not self.timeframes:
            return _NO_GROUPS
        seconds = local.hour * 3600 + local.minute * 60 + local.second
        windows = self._windows_on(local.date())
        groups = frozenset(group for start, end, group in windows if start <= seconds < end)
        # One shared object per distinct set: cheaper keys for the price memo.
        shared = self._memo.setdefault(("groups", groups), groups)
        return shared  # type: ignore[return-value]

    def _windows_on(self, day: date) -> tuple[tuple[int, int, str], ...]:
        """The (start, end, group) timeframe windows that apply on a local date."""
        key = ("windows", day)
        cached = self._memo.get(key)
        if cached is None:
            cached = self._memo[key] = tuple(
                (tf.start_s, tf.end_s, tf.timeframe_group_id)
                for tf in self.timeframes
                if tf.service_id is None or self.calendar.is_active(tf.service_id, day)
            )
        return cached  # type: ignore[return-value]

    def distance_m(self, from_stop_id: str, to_stop_id: str) -> int | None:
        """Distance table value (either direction), else great-circle, else None."""
        key = ("distance", from_stop_id, to_stop_id)
        if key in self._memo:
            return self._memo[key]  # type: ignore[return-value]
        value = self._distance_m(from_stop_id, to_stop_id)
        self._memo[key] = value
        return value

    def _distance_m(self, from_stop_id: str, to_stop_id: str) -> int | None:
        table = self.distances.get((from_stop_id, to_stop_id))
        if table is None:
            table = self.distances.get((to_stop_id, from_stop_id))
        if table is not None:
            return table
        a, b = self.stops.get(from_stop_id), self.stops.get(to_stop_id)
        if a is None or b is None or None in (a.lat, a.lon, b.lat, b.lon):
            return None
        assert a.lat is not None and a.lon is not None and b.lat is not None and b.lon is not None
        return great_circle_m(a.lat, a.lon, b.lat, b.lon)

    def products(self, fare_product_id: str) -> tuple[FareProduct, ...]:
        """All priced rows of a product id (empty when unknown)."""
        return self.fare_products.get(fare_product_id, ())


@dataclass(frozen=True)
class FareCatalog:
    """Several versions of one network's fare data; a journey uses the version in force
    on the service day of its first tap."""

    versions: tuple[FareData, ...]
    starts: tuple[datetime | None, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.versions, key=lambda v: v.effective_from or date.min))
        object.__setattr__(self, "versions", ordered)
        # The instant each version comes into force: its first service day's boundary.
        starts = tuple(
            None
            if v.effective_from is None
            else datetime.combine(v.effective_from, time(0), v.timezone)
            + timedelta(seconds=v.settings.service_day_start_s)
            for v in ordered
        )
        object.__setattr__(self, "starts", starts)

    @classmethod
    def of(cls, versions: Iterable[FareData]) -> FareCatalog:
        """A catalog of the given versions (any order)."""
        return cls(tuple(versions))

    def version_at(self, at: datetime) -> FareData:
        """The version in force at instant `at` (by its service day)."""
        if len(self.starts) == 1 and (self.starts[0] is None or at >= self.starts[0]):
            return self.versions[0]  # the common case, asked once per tap
        chosen: FareData | None = None
        for version, start in zip(self.versions, self.starts, strict=True):
            if start is None or at >= start:
                chosen = version
        if chosen is None:
            raise NoFareVersionError(f"no fare data version in force at {at.isoformat()}")
        return chosen


def as_catalog(data: FareData | FareCatalog) -> FareCatalog:
    """Wrap a single FareData as a one-version catalog."""
    if isinstance(data, FareCatalog):
        return data
    catalog = data._memo.get("catalog")
    if catalog is None:
        catalog = data._memo["catalog"] = FareCatalog((data,))
    assert isinstance(catalog, FareCatalog)
    return catalog


def parse_gtfs_time(text: str) -> int:
    """`H:MM:SS` or `HH:MM:SS` (hours may exceed 24) to seconds; ValueError if malformed."""
    parts = text.strip().split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a GTFS time (H:MM:SS): {text!r}")
    h, m, s = (int(p) for p in parts)
    if m > 59 or s > 59 or len(parts[1]) != 2 or len(parts[2]) != 2:
        raise ValueError(f"not a GTFS time (H:MM:SS): {text!r}")
    return h * 3600 + m * 60 + s
