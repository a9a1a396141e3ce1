"""Assembly of a feed into FareData: every table, cross-checked, in one pass.

Pure: the feed's files come through the FeedTables port (services/fares/adapters/
gtfs_reader.py reads a directory or a zip); every defect is collected as a Problem (file,
line, field, message), and if there is any the feed is refused as a whole (FeedError).
The FareData made here builds its FareIndex, so a loaded feed is ready to price.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from services.fares.domain.errors import FeedError, Problem
from services.fares.domain.model import FareData
from services.fares.domain.network import Stop

from .feed_cells import FeedRow
from .feed_fares import (
    caps_from,
    distance_fares_from,
    distances_from,
    fare_media_from,
    fare_products_from,
    join_rules_from,
    leg_rules_from,
    maximum_fares_from,
    rider_categories_from,
    settings_from,
    transfer_rules_from,
)
from .feed_network import (
    agencies_from,
    area_ids_from,
    calendar_from,
    feed_version_from,
    report,
    routes_from,
    stop_areas_from,
    stop_routes_from,
    stops_from,
    timeframes_from,
)


class FeedTables(Protocol):
    """The files of one feed, as rows: the port a reader adapter implements."""

    @property
    def name(self) -> str:
        """The feed's folder name (without `.zip`): its feed_id unless the feed sets one."""
        ...

    @property
    def problems(self) -> list[Problem]:
        """Where the reader and the assembly report the feed's defects, in order."""
        ...

    def rows(
        self, name: str, *, required: bool = False, columns: tuple[str, ...] = ()
    ) -> Iterator[FeedRow]:
        """Rows of file `name`; reports a missing required file or missing required columns
        (then yields nothing)."""
        ...

    def pairs(self, name: str, first: str, second: str) -> Iterator[tuple[str, str]]:
        """(first, second) column values of every row of `name`, stripped (for large files)."""
        ...


def assemble_fare_data(tables: FeedTables) -> FareData:
    """The feed's FareData, cross-checked; FeedError listing every problem if any."""
    if tables.problems:
        raise FeedError(tables.problems)
    data = _assemble(tables)
    if tables.problems or data is None:
        raise FeedError(tables.problems)
    return data


def _assemble(tables: FeedTables) -> FareData | None:
    settings = settings_from(tables)
    agencies, timezone = agencies_from(tables)
    stops = stops_from(tables)
    networks, routes = routes_from(tables, agencies)
    areas = stop_areas_from(tables, stops)
    stops = {
        sid: Stop(s.stop_id, s.name, s.lat, s.lon, s.parent_station, frozenset(areas.get(sid, ())))
        for sid, s in stops.items()
    }
    stops = {
        sid: Stop(
            s.stop_id,
            s.name,
            s.lat,
            s.lon,
            s.parent_station,
            s.area_ids
            | (stops[s.parent_station].area_ids if s.parent_station in stops else frozenset()),
        )
        for sid, s in stops.items()
    }
    area_ids = area_ids_from(tables)
    calendar = calendar_from(tables)
    timeframes = timeframes_from(tables, calendar)
    media = fare_media_from(tables)
    categories = rider_categories_from(tables)
    currency, products = fare_products_from(tables, media, categories)
    leg_rules, use_priority = leg_rules_from(tables, networks, area_ids, timeframes, products)
    join_rules = join_rules_from(tables, networks, stops)
    transfer_rules = transfer_rules_from(tables, leg_rules, products)
    caps = caps_from(tables, products, media, categories, currency, calendar=calendar)
    maximum_fares = maximum_fares_from(tables, networks, area_ids, products, timeframes)
    distance_fares = distance_fares_from(tables, products, currency)
    distances = distances_from(tables, stops)
    stop_routes = stop_routes_from(tables, routes, stops)
    if settings.default_fare_media_id is not None and settings.default_fare_media_id not in media:
        report(
            tables,
            "clearway_fare_settings.txt",
            0,
            "default_fare_media_id",
            "unknown fare_media_id",
        )
    if tables.problems or timezone is None:
        return None
    return FareData(
        feed_id=settings.feed_id or tables.name,
        version=settings.fare_version or feed_version_from(tables) or "unversioned",
        currency=currency,
        timezone=timezone,
        settings=settings,
        agencies=agencies,
        stops=stops,
        routes=routes,
        network_ids=frozenset(networks),
        area_ids=frozenset(area_ids),
        fare_media=media,
        rider_categories=categories,
        fare_products=products,
        leg_rules=tuple(leg_rules),
        leg_rules_use_priority=use_priority,
        join_rules=tuple(join_rules),
        transfer_rules=tuple(transfer_rules),
        timeframes=tuple(t for group in timeframes.values() for t in group),
        calendar=calendar,
        caps=tuple(caps),
        maximum_fares=tuple(maximum_fares),
        distance_fares=distance_fares,
        distances=distances,
        stop_routes=stop_routes,
    )
