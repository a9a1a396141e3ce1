"""The network a feed describes: operators, stops, routes, and when services run."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date


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


def great_circle_m(lat1: float, lon1: float, lat2: float, lon2: float) -> int:
    """Haversine distance in whole metres on a 6,371,008.8 m sphere (mean Earth radius)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return round(2 * 6_371_008.8 * math.asin(math.sqrt(h)))
