"""Assembly of the network tables of a feed: agencies, stops, routes and networks, fare
areas, service calendars, timeframes, and which routes serve each stop.

Pure: rows come from a FeedTables (an adapter reads the files); every defect is reported
as a Problem on the tables, and assembly goes on so that all of them are found at once.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.fares.domain.errors import Problem
from services.fares.domain.network import Agency, Route, ServiceCalendar, Stop, Timeframe

from .feed_cells import FeedRow

if TYPE_CHECKING:
    from .feed_assembly import FeedTables


def report(tables: FeedTables, file: str, line: int, name: str, message: str) -> None:
    """Report a defect of the feed (line 0: the whole file)."""
    tables.problems.append(Problem(file, line, name, message))


def feed_version_from(tables: FeedTables) -> str | None:
    for row in tables.rows("feed_info.txt"):
        return row.get("feed_version")
    return None


def agencies_from(tables: FeedTables) -> tuple[dict[str, Agency], ZoneInfo | None]:
    agencies: dict[str, Agency] = {}
    timezone: ZoneInfo | None = None
    for row in tables.rows("agency.txt", required=True, columns=("agency_timezone",)):
        agency_id = row.get("agency_id") or ""
        if agency_id in agencies:
            row.problem("agency_id", f"duplicate agency_id {agency_id!r}")
            continue
        tz_name = row.require("agency_timezone")
        try:
            tz = ZoneInfo(tz_name) if tz_name else None
        except (ZoneInfoNotFoundError, ValueError):
            row.problem("agency_timezone", f"unknown timezone {tz_name!r}")
            tz = None
        if tz is not None:
            if timezone is not None and str(tz) != str(timezone):
                row.problem("agency_timezone", "all agencies must share one timezone")
            timezone = timezone or tz
        agencies[agency_id] = Agency(agency_id, row.get("agency_name") or agency_id, tz_name)
    if not agencies and not any(p.file == "agency.txt" for p in tables.problems):
        report(tables, "agency.txt", 0, "", "no agency")
    return agencies, timezone


def stops_from(tables: FeedTables) -> dict[str, Stop]:
    stops: dict[str, Stop] = {}
    parents: list[tuple[int, str, str]] = []
    for row in tables.rows("stops.txt", required=True, columns=("stop_id",)):
        stop_id = row.require("stop_id")
        if not stop_id:
            continue
        if stop_id in stops:
            row.problem("stop_id", f"duplicate stop_id {stop_id!r}")
            continue
        lat = _coordinate(row, "stop_lat", 90)
        lon = _coordinate(row, "stop_lon", 180)
        parent = row.get("parent_station")
        if parent:
            parents.append((row.line, stop_id, parent))
        stops[stop_id] = Stop(stop_id, row.get("stop_name") or "", lat, lon, parent, frozenset())
    for line, stop_id, parent in parents:
        if parent not in stops:
            report(
                tables,
                "stops.txt",
                line,
                "parent_station",
                f"unknown stop {parent!r} (for {stop_id})",
            )
    return stops


def _coordinate(row: FeedRow, name: str, bound: int) -> float | None:
    value = row.decimal(name)
    if value is None:
        return None
    if abs(value) > bound:
        row.problem(name, f"{value} is out of range")
        return None
    return float(value)


def routes_from(
    tables: FeedTables, agencies: dict[str, Agency]
) -> tuple[set[str], dict[str, Route]]:
    networks: set[str] = set()
    declared_networks: dict[str, int] = {}
    for row in tables.rows("networks.txt", columns=("network_id",)):
        network_id = row.require("network_id")
        if network_id in declared_networks:
            row.problem("network_id", f"duplicate network_id {network_id!r}")
        declared_networks[network_id] = row.line
    networks.update(declared_networks)
    routes: dict[str, Route] = {}
    for row in tables.rows("routes.txt", required=True, columns=("route_id",)):
        route_id = row.require("route_id")
        if not route_id:
            continue
        if route_id in routes:
            row.problem("route_id", f"duplicate route_id {route_id!r}")
            continue
        agency_id = row.get("agency_id")
        if agency_id is None:
            if len(agencies) == 1:
                agency_id = next(iter(agencies))
            else:
                row.problem("agency_id", "required when the feed has several agencies")
                agency_id = ""
        elif agency_id not in agencies:
            if len(agencies) == 1 and "" in agencies:
                agency_id = ""
            else:
                row.problem("agency_id", f"unknown agency {agency_id!r}")
        route_network = row.get("network_id")
        if route_network is not None:
            networks.add(route_network)
        routes[route_id] = Route(route_id, agency_id, route_network)
    _route_networks(tables, declared_networks, routes)
    return networks, routes


def _route_networks(
    tables: FeedTables, declared_networks: dict[str, int], routes: dict[str, Route]
) -> None:
    for row in tables.rows("route_networks.txt", columns=("network_id", "route_id")):
        network_id, route_id = row.require("network_id"), row.require("route_id")
        if network_id not in declared_networks:
            row.problem("network_id", f"unknown network {network_id!r} (not in networks.txt)")
            continue
        route = routes.get(route_id)
        if route is None:
            row.problem("route_id", f"unknown route {route_id!r}")
        elif route.network_id is not None:
            row.problem("route_id", f"route {route_id!r} already has a network")
        else:
            routes[route_id] = Route(route.route_id, route.agency_id, network_id)


def area_ids_from(tables: FeedTables) -> set[str]:
    return {row.require("area_id") for row in tables.rows("areas.txt", columns=("area_id",))}


def stop_areas_from(tables: FeedTables, stops: dict[str, Stop]) -> dict[str, set[str]]:
    known = area_ids_from(tables)
    by_stop: dict[str, set[str]] = {}
    for row in tables.rows("stop_areas.txt", columns=("area_id", "stop_id")):
        area_id, stop_id = row.require("area_id"), row.require("stop_id")
        if area_id not in known:
            row.problem("area_id", f"unknown area {area_id!r}")
        elif stop_id not in stops:
            row.problem("stop_id", f"unknown stop {stop_id!r}")
        else:
            by_stop.setdefault(stop_id, set()).add(area_id)
    return by_stop


def calendar_from(tables: FeedTables) -> ServiceCalendar:
    weekly: dict[str, tuple[tuple[bool, ...], date, date]] = {}
    days = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    for row in tables.rows("calendar.txt", columns=("service_id", *days, "start_date", "end_date")):
        service_id = row.require("service_id")
        flags = tuple(row.integer(d, allowed={0, 1}) == 1 for d in days)
        start, end = row.gtfs_date("start_date"), row.gtfs_date("end_date")
        if start is None or end is None:
            row.problem("start_date" if start is None else "end_date", "required date is missing")
            continue
        weekly[service_id] = (flags, start, end)
    added: set[tuple[str, date]] = set()
    removed: set[tuple[str, date]] = set()
    for row in tables.rows("calendar_dates.txt", columns=("service_id", "date", "exception_type")):
        service_id, on = row.require("service_id"), row.gtfs_date("date")
        kind = row.integer("exception_type", allowed={1, 2})
        if on is None or kind is None:
            continue
        (added if kind == 1 else removed).add((service_id, on))
    return ServiceCalendar(weekly, frozenset(added), frozenset(removed))


def timeframes_from(tables: FeedTables, calendar: ServiceCalendar) -> dict[str, list[Timeframe]]:
    groups: dict[str, list[Timeframe]] = {}
    services = set(calendar.weekly) | {s for s, _ in calendar.added | calendar.removed}
    for row in tables.rows("timeframes.txt", columns=("timeframe_group_id",)):
        group = row.require("timeframe_group_id")
        start = row.seconds("start_time", maximum=86400)
        end = row.seconds("end_time", maximum=86400)
        if (start is None) != (end is None) and row.get("start_time") and row.get("end_time"):
            continue  # a malformed time was already reported
        if (row.get("start_time") is None) != (row.get("end_time") is None):
            row.problem("end_time", "start_time and end_time must both be given or both be empty")
            continue
        start_s, end_s = (0 if start is None else start), (86400 if end is None else end)
        if start_s >= end_s:
            row.problem("end_time", "end_time must be after start_time")
            continue
        service_id = row.get("service_id")
        if service_id is not None and service_id not in services:
            row.problem("service_id", f"unknown service {service_id!r} (not in calendar files)")
            continue
        groups.setdefault(group, []).append(Timeframe(group, start_s, end_s, service_id))
    return groups


# --- Fares v2 --------------------------------------------------------------------


def stop_routes_from(
    tables: FeedTables, routes: dict[str, Route], stops: dict[str, Stop]
) -> dict[str, tuple[str, ...]]:
    """stop_id -> routes serving it, from trips.txt + stop_times.txt when present."""
    trip_route: dict[str, str] = {}
    for row in tables.rows("trips.txt", columns=("route_id", "trip_id")):
        route_id, trip_id = row.get("route_id"), row.get("trip_id")
        if route_id is None or trip_id is None:
            continue
        if route_id not in routes:
            row.problem("route_id", f"unknown route {route_id!r}")
            continue
        trip_route[trip_id] = route_id
    by_stop: dict[str, set[str]] = {}
    if trip_route:
        # stop_times.txt can hold millions of rows: read only two columns, no row objects.
        for trip_id, stop_id in tables.pairs("stop_times.txt", "trip_id", "stop_id"):
            route_id = trip_route.get(trip_id)
            if route_id is not None and stop_id in stops:
                by_stop.setdefault(stop_id, set()).add(route_id)
    return {k: tuple(sorted(v)) for k, v in by_stop.items()}


# --- Clearway extensions (docs/fare-data.md) ----------------------------------------
