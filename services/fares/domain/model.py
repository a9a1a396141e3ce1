"""The fare data model: one version of a network's fare data (FareData), and the versions
of a network in force over time (FareCatalog).

The plain values FareData is made of live in `taps`, `network` and `fare_rules`, and are
re-exported here; the lookups pricing needs are in its FareIndex (`fare_index`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from .errors import NoFareVersionError, UnknownRouteError, UnknownStopError
from .fare_index import FareIndex
from .fare_rules import (
    Cap,
    CapPeriod,
    DistanceFare,
    ExitWithoutEntry,
    FareLegJoinRule,
    FareLegRule,
    FareMedia,
    FareProduct,
    FareTransferRule,
    FareTransferType,
    MaximumFare,
    RiderCategory,
    Rounding,
    Settings,
    TimeframeDate,
)
from .network import Agency, Route, ServiceCalendar, Stop, Timeframe, great_circle_m
from .taps import Tap, TapKind

__all__ = [
    "Agency",
    "Cap",
    "CapPeriod",
    "DistanceFare",
    "ExitWithoutEntry",
    "FareCatalog",
    "FareData",
    "FareLegJoinRule",
    "FareLegRule",
    "FareMedia",
    "FareProduct",
    "FareTransferRule",
    "FareTransferType",
    "FareVersions",
    "MaximumFare",
    "RiderCategory",
    "Rounding",
    "Route",
    "ServiceCalendar",
    "Settings",
    "Stop",
    "Tap",
    "TapKind",
    "Timeframe",
    "TimeframeDate",
    "as_catalog",
    "great_circle_m",
]


@dataclass(frozen=True, eq=False)
class FareData:
    """One version of a network's fare data, loaded and cross-checked by `load_fare_data`.

    Immutable. Its `index` (lookups by stop, network, timeframe, leg group, product and
    cap) is built from the fields when the FareData is made, and never changes.
    """

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
    index: FareIndex = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Derived from the fields above, once (the way FareCatalog derives `starts`).
        object.__setattr__(self, "index", FareIndex(self))

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
        return self.index.default_rider_category_id

    @property
    def versions(self) -> tuple[FareData, ...]:
        """This version alone (so a FareData prices like a one-version FareCatalog)."""
        return (self,)

    def version_at(self, at: datetime) -> FareData:
        """This version, if it is in force at instant `at`; else NoFareVersionError."""
        start = self.index.in_force_from
        if start is not None and at < start:
            raise NoFareVersionError(f"no fare data version in force at {at.isoformat()}")
        return self

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
        self.stop(stop_id)
        return self.index.operator_for_stop(stop_id)

    def networks_for_stop(self, stop_id: str) -> tuple[str, ...]:
        """Fare networks of the routes serving `stop_id` (or its parent/children), sorted."""
        return self.index.networks_for_stop(stop_id)

    def service_day(self, at: datetime) -> date:
        """The service day of an instant: local date, shifted back by the day boundary."""
        return self.index.service_day(at)

    def local(self, at: datetime) -> datetime:
        """`at` in the network's timezone."""
        return at.astimezone(self.timezone)

    def timeframe_groups_at(self, at: datetime) -> frozenset[str]:
        """Timeframe groups whose window contains `at` (local time and date)."""
        return self.index.local_facts(at)[1]

    def local_facts(self, at: datetime) -> tuple[date, frozenset[str]]:
        """The service day of instant `at` and the timeframe groups containing it."""
        return self.index.local_facts(at)

    def distance_m(self, from_stop_id: str, to_stop_id: str) -> int | None:
        """Distance table value (either direction), else great-circle, else None."""
        return self.index.distance_m(from_stop_id, to_stop_id)

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
        object.__setattr__(self, "starts", tuple(v.index.in_force_from for v in ordered))

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


FareVersions = FareData | FareCatalog
"""What pricing accepts: one fare data version, or a catalog of versions (both answer
`versions` and `version_at`)."""


def as_catalog(data: FareVersions) -> FareCatalog:
    """Wrap a single FareData as a one-version catalog."""
    if isinstance(data, FareCatalog):
        return data
    return FareCatalog((data,))
