"""Fare rules as plain values: GTFS Fares v2 rows and the Clearway extensions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from enum import StrEnum


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
    min_distance_m: int | None = None  # the leg's distance band [min, max), in metres
    max_distance_m: int | None = None  # (min_distance/max_distance with distance_type 1)

    @property
    def has_distance_band(self) -> bool:
        """Whether the rule names a distance band (it then matches only legs in the band)."""
        return self.min_distance_m is not None or self.max_distance_m is not None

    def in_distance_band(self, distance_m: int | None) -> bool:
        """True when `distance_m` lies in the rule's band [min, max) (no distance: never)."""
        if distance_m is None:
            return False
        low, high = self.min_distance_m, self.max_distance_m
        return (low is None or distance_m >= low) and (high is None or distance_m < high)


@dataclass(frozen=True, slots=True)
class FareLegJoinRule:
    """One row of fare_leg_join_rules.txt: two consecutive legs priced as one (within the
    row's duration limit, else the feed's join window)."""

    from_network_id: str
    to_network_id: str
    from_stop_id: str | None
    to_stop_id: str | None
    duration_limit: int | None = None  # seconds; None = the feed's join_window
    duration_limit_type: int | None = None  # 0..3, as in fare_transfer_rules


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
    service_id: str | None = None  # only on the service days of this service (None = every day)

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
    timeframe_group_id: str | None = None  # entry in this timeframe group; None = any time


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


class TimeframeDate(StrEnum):
    """Which date a timeframe's service_id is matched against (clearway_fare_settings)."""

    CALENDAR_DATE = "calendar_date"  # the local calendar date of the instant (GTFS default)
    SERVICE_DAY = "service_day"  # the service day of the instant (service_day_start)


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
    join_window_s: int | None = None  # exit-to-entry gap joining legs; None = incomplete_after
    timeframe_date: TimeframeDate = TimeframeDate.CALENDAR_DATE
