"""What the reports need from a GTFS feed: each stop's fare areas and the timezone."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

DEFAULT_TIMEZONE = "Europe/London"


@dataclass(frozen=True, slots=True)
class NetworkPlaces:
    """Each stop's fare areas (its own and its parent station's), the feed's area ids and
    the network's timezone."""

    timezone: tzinfo
    stop_areas: dict[str, frozenset[str]] = field(default_factory=dict)
    area_ids: frozenset[str] = frozenset()


def network_places(feed: Path | None) -> NetworkPlaces:
    """The places of GTFS feed `feed`; without a feed, none, in Europe/London time."""
    if feed is None:
        return NetworkPlaces(ZoneInfo(DEFAULT_TIMEZONE))
    from services.fares.domain import load_fare_data  # noqa: PLC0415 - only with a feed

    data = load_fare_data(feed)
    stop_areas = {s.stop_id: s.area_ids for s in data.stops.values() if s.area_ids}
    return NetworkPlaces(data.timezone, stop_areas, frozenset(data.area_ids))
