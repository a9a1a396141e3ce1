"""Load a GTFS feed with Fares v2 (directory or .zip) into FareData.

The only module of the domain that reads files. Every defect is collected as a
Problem (file, line, field, message); if there is any, the feed is refused.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import FeedError, Problem
from .model import (
    Agency,
    Cap,
    CapPeriod,
    DistanceFare,
    ExitWithoutEntry,
    FareData,
    FareLegJoinRule,
    FareLegRule,
    FareMedia,
    FareProduct,
    FareTransferRule,
    FareTransferType,
    MaximumFare,
    RiderCategory,
    Rounding,
    Route,
    ServiceCalendar,
    Settings,
    Stop,
    Timeframe,
)

_E = TypeVar("_E", CapPeriod, Rounding, ExitWithoutEntry)

# ISO 4217 currencies whose minor unit is not 1/100.
_MINOR_DIGITS = {"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0, "BHD": 3, "KWD": 3, "TND": 3}


def parse_gtfs_time(text: str) -> int:
    """`H:MM:SS` or `HH:MM:SS` (hours may exceed 24) to seconds; ValueError if malformed."""
    parts = text.strip().split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a GTFS time (H:MM:SS): {text!r}")
    h, m, s = (int(p) for p in parts)
    if m > 59 or s > 59 or len(parts[1]) != 2 or len(parts[2]) != 2:
        raise ValueError(f"not a GTFS time (H:MM:SS): {text!r}")
    return h * 3600 + m * 60 + s


@dataclass
class _Row:
    file: str
    line: int
    values: dict[str, str]
    problems: list[Problem]

    def get(self, name: str) -> str | None:
        """The stripped value, None when the column is absent or the cell empty."""
        value = self.values.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            self.problem(name, "required value is missing")
            return ""
        return value

    def problem(self, name: str, message: str) -> None:
        self.problems.append(Problem(self.file, self.line, name, message))

    def integer(
        self, name: str, *, allowed: set[int] | None = None, minimum: int | None = None
    ) -> int | None:
        value = self.get(name)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            self.problem(name, f"not an integer: {value!r}")
            return None
        if (allowed is not None and number not in allowed) or (
            minimum is not None and number < minimum
        ):
            self.problem(name, f"value {number} is not allowed")
            return None
        return number

    def decimal(self, name: str) -> Decimal | None:
        value = self.get(name)
        if value is None:
            return None
        try:
            number = Decimal(value)
        except InvalidOperation:
            self.problem(name, f"not a decimal number: {value!r}")
            return None
        if not number.is_finite():
            self.problem(name, f"not a finite number: {value!r}")
            return None
        return number

    def money(self, name: str, currency: str, *, required: bool = True) -> int | None:
        """A decimal amount in major units, converted exactly to minor units."""
        if self.get(name) is None:
            if required:
                self.problem(name, "required value is missing")
            return None
        number = self.decimal(name)
        if number is None:
            return None
        scaled = number.scaleb(_MINOR_DIGITS.get(currency, 2))
        if scaled != scaled.to_integral_value():
            self.problem(name, f"{number} has more decimals than {currency} allows")
            return None
        return int(scaled)

    def gtfs_date(self, name: str) -> date | None:
        value = self.get(name)
        if value is None:
            return None
        try:
            if len(value) != 8 or not value.isdigit():
                raise ValueError(value)
            return date(int(value[:4]), int(value[4:6]), int(value[6:]))
        except ValueError:
            self.problem(name, f"not a date YYYYMMDD: {value!r}")
            return None

    def seconds(self, name: str, *, maximum: int | None = None) -> int | None:
        value = self.get(name)
        if value is None:
            return None
        try:
            seconds = parse_gtfs_time(value)
        except ValueError as exc:
            self.problem(name, str(exc))
            return None
        if maximum is not None and seconds > maximum:
            self.problem(name, f"{value} is later than allowed")
            return None
        return seconds


@dataclass
class _Source:
    """Reads tables from a directory or a zip, collecting problems."""

    path: Path
    problems: list[Problem] = field(default_factory=list)
    _zip_names: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if self.path.is_file():
            try:
                archive = zipfile.ZipFile(self.path)
            except zipfile.BadZipFile:
                self.problems.append(
                    Problem(self.path.name, 0, "", "not a directory or a zip file")
                )
                return
            with archive:
                # Feeds are sometimes zipped inside a folder: match on the base name.
                self._zip_names = {
                    Path(n).name: n for n in archive.namelist() if not n.endswith("/")
                }
        elif not self.path.is_dir():
            self.problems.append(Problem(str(self.path), 0, "", "no such directory or zip file"))

    def _text(self, name: str) -> str | None:
        if self._zip_names is not None:
            member = self._zip_names.get(name)
            if member is None:
                return None
            with zipfile.ZipFile(self.path) as archive:
                raw = archive.read(member)
        else:
            file = self.path / name
            if not file.is_file():
                return None
            raw = file.read_bytes()
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            self.problems.append(Problem(name, 0, "", f"not UTF-8: {exc}"))
            return None

    def has(self, name: str) -> bool:
        if self._zip_names is not None:
            return name in self._zip_names
        return (self.path / name).is_file()

    def pairs(self, name: str, first: str, second: str) -> Iterator[tuple[str, str]]:
        """(first, second) column values of every row, stripped; nothing if absent."""
        text = self._text(name)
        if text is None:
            return
        reader = csv.reader(io.StringIO(text, newline=""))
        header = [h.strip().lstrip("\ufeff") for h in next(reader, [])]
        if first not in header or second not in header:
            self.problems.append(Problem(name, 1, second, f"needs columns {first} and {second}"))
            return
        a, b = header.index(first), header.index(second)
        width = max(a, b)
        try:
            for record in reader:
                if len(record) > width:
                    yield record[a].strip(), record[b].strip()
        except csv.Error as exc:
            self.problems.append(Problem(name, reader.line_num, "", f"CSV syntax error: {exc}"))

    def rows(
        self, name: str, *, required: bool = False, columns: tuple[str, ...] = ()
    ) -> Iterator[_Row]:
        """Rows of `name`; reports a missing required file or missing required columns."""
        text = self._text(name)
        if text is None:
            if required:
                self.problems.append(Problem(name, 0, "", "required file is missing"))
            return
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = [h.strip().lstrip("\ufeff") for h in next(reader)]
        except StopIteration:
            if required:
                self.problems.append(Problem(name, 0, "", "file is empty"))
            return
        for column in columns:
            if column not in header:
                self.problems.append(Problem(name, 1, column, "required column is missing"))
        if any(column not in header for column in columns):
            return
        try:
            for record in reader:
                if not record or all(not cell.strip() for cell in record):
                    continue
                if len(record) > len(header):
                    self.problems.append(
                        Problem(
                            name,
                            reader.line_num,
                            "",
                            f"{len(record)} values for {len(header)} columns",
                        )
                    )
                    continue
                yield _Row(
                    name, reader.line_num, dict(zip(header, record, strict=False)), self.problems
                )
        except csv.Error as exc:
            self.problems.append(Problem(name, reader.line_num, "", f"CSV syntax error: {exc}"))


def load_fare_data(path: Path) -> FareData:
    """Load and cross-check a GTFS Fares v2 feed (directory or .zip) plus Clearway extensions.

    Raises FeedError (code FEED_INVALID) listing every problem with file, line and field.
    """
    source = _Source(Path(path))
    if source.problems:
        raise FeedError(source.problems)
    loader = _Loader(source)
    data = loader.load()
    if source.problems:
        raise FeedError(source.problems)
    assert data is not None
    return data


class _Loader:
    def __init__(self, source: _Source) -> None:
        self.src = source

    def problem(self, file: str, line: int, name: str, message: str) -> None:
        self.src.problems.append(Problem(file, line, name, message))

    def load(self) -> FareData | None:
        settings = self._settings()
        agencies, timezone = self._agencies()
        stops = self._stops()
        networks, routes = self._routes(agencies)
        areas = self._areas(stops)
        stops = {
            sid: Stop(
                s.stop_id, s.name, s.lat, s.lon, s.parent_station, frozenset(areas.get(sid, ()))
            )
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
        area_ids = self._area_ids()
        calendar = self._calendar()
        timeframes = self._timeframes(calendar)
        media = self._fare_media()
        categories = self._rider_categories()
        currency, products = self._fare_products(media, categories)
        leg_rules, use_priority = self._leg_rules(networks, area_ids, timeframes, products)
        join_rules = self._join_rules(networks, stops)
        transfer_rules = self._transfer_rules(leg_rules, products)
        caps = self._caps(products, media, categories, currency)
        maximum_fares = self._maximum_fares(networks, area_ids, products, settings)
        distance_fares = self._distance_fares(products, currency)
        distances = self._distances(stops)
        stop_routes = self._stop_routes(routes, stops)
        if (
            settings.default_fare_media_id is not None
            and settings.default_fare_media_id not in media
        ):
            self.problem(
                "clearway_fare_settings.txt", 0, "default_fare_media_id", "unknown fare_media_id"
            )
        if self.src.problems or timezone is None:
            return None
        return FareData(
            feed_id=settings.feed_id or self.src.path.name.removesuffix(".zip"),
            version=settings.fare_version or self._feed_version() or "unversioned",
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

    # --- GTFS core -------------------------------------------------------------------
    def _feed_version(self) -> str | None:
        for row in self.src.rows("feed_info.txt"):
            return row.get("feed_version")
        return None

    def _agencies(self) -> tuple[dict[str, Agency], ZoneInfo | None]:
        agencies: dict[str, Agency] = {}
        timezone: ZoneInfo | None = None
        for row in self.src.rows("agency.txt", required=True, columns=("agency_timezone",)):
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
        if not agencies and not any(p.file == "agency.txt" for p in self.src.problems):
            self.problem("agency.txt", 0, "", "no agency")
        return agencies, timezone

    def _stops(self) -> dict[str, Stop]:
        stops: dict[str, Stop] = {}
        parents: list[tuple[int, str, str]] = []
        for row in self.src.rows("stops.txt", required=True, columns=("stop_id",)):
            stop_id = row.require("stop_id")
            if not stop_id:
                continue
            if stop_id in stops:
                row.problem("stop_id", f"duplicate stop_id {stop_id!r}")
                continue
            lat = self._coordinate(row, "stop_lat", 90)
            lon = self._coordinate(row, "stop_lon", 180)
            parent = row.get("parent_station")
            if parent:
                parents.append((row.line, stop_id, parent))
            stops[stop_id] = Stop(
                stop_id, row.get("stop_name") or "", lat, lon, parent, frozenset()
            )
        for line, stop_id, parent in parents:
            if parent not in stops:
                self.problem(
                    "stops.txt", line, "parent_station", f"unknown stop {parent!r} (for {stop_id})"
                )
        return stops

    @staticmethod
    def _coordinate(row: _Row, name: str, bound: int) -> float | None:
        value = row.decimal(name)
        if value is None:
            return None
        if abs(value) > bound:
            row.problem(name, f"{value} is out of range")
            return None
        return float(value)

    def _routes(self, agencies: dict[str, Agency]) -> tuple[set[str], dict[str, Route]]:
        networks: set[str] = set()
        declared_networks: dict[str, int] = {}
        for row in self.src.rows("networks.txt", columns=("network_id",)):
            network_id = row.require("network_id")
            if network_id in declared_networks:
                row.problem("network_id", f"duplicate network_id {network_id!r}")
            declared_networks[network_id] = row.line
        networks.update(declared_networks)
        routes: dict[str, Route] = {}
        for row in self.src.rows("routes.txt", required=True, columns=("route_id",)):
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
        self._route_networks(declared_networks, routes)
        return networks, routes

    def _route_networks(self, declared_networks: dict[str, int], routes: dict[str, Route]) -> None:
        for row in self.src.rows("route_networks.txt", columns=("network_id", "route_id")):
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

    def _area_ids(self) -> set[str]:
        return {row.require("area_id") for row in self.src.rows("areas.txt", columns=("area_id",))}

    def _areas(self, stops: dict[str, Stop]) -> dict[str, set[str]]:
        known = self._area_ids()
        by_stop: dict[str, set[str]] = {}
        for row in self.src.rows("stop_areas.txt", columns=("area_id", "stop_id")):
            area_id, stop_id = row.require("area_id"), row.require("stop_id")
            if area_id not in known:
                row.problem("area_id", f"unknown area {area_id!r}")
            elif stop_id not in stops:
                row.problem("stop_id", f"unknown stop {stop_id!r}")
            else:
                by_stop.setdefault(stop_id, set()).add(area_id)
        return by_stop

    def _calendar(self) -> ServiceCalendar:
        weekly: dict[str, tuple[tuple[bool, ...], date, date]] = {}
        days = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        for row in self.src.rows(
            "calendar.txt", columns=("service_id", *days, "start_date", "end_date")
        ):
            service_id = row.require("service_id")
            flags = tuple(row.integer(d, allowed={0, 1}) == 1 for d in days)
            start, end = row.gtfs_date("start_date"), row.gtfs_date("end_date")
            if start is None or end is None:
                row.problem(
                    "start_date" if start is None else "end_date", "required date is missing"
                )
                continue
            weekly[service_id] = (flags, start, end)
        added: set[tuple[str, date]] = set()
        removed: set[tuple[str, date]] = set()
        for row in self.src.rows(
            "calendar_dates.txt", columns=("service_id", "date", "exception_type")
        ):
            service_id, on = row.require("service_id"), row.gtfs_date("date")
            kind = row.integer("exception_type", allowed={1, 2})
            if on is None or kind is None:
                continue
            (added if kind == 1 else removed).add((service_id, on))
        return ServiceCalendar(weekly, frozenset(added), frozenset(removed))

    def _timeframes(self, calendar: ServiceCalendar) -> dict[str, list[Timeframe]]:
        groups: dict[str, list[Timeframe]] = {}
        services = set(calendar.weekly) | {s for s, _ in calendar.added | calendar.removed}
        for row in self.src.rows("timeframes.txt", columns=("timeframe_group_id",)):
            group = row.require("timeframe_group_id")
            start = row.seconds("start_time", maximum=86400)
            end = row.seconds("end_time", maximum=86400)
            if (start is None) != (end is None) and row.get("start_time") and row.get("end_time"):
                continue  # a malformed time was already reported
            if (row.get("start_time") is None) != (row.get("end_time") is None):
                row.problem(
                    "end_time", "start_time and end_time must both be given or both be empty"
                )
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
    def _fare_media(self) -> dict[str, FareMedia]:
        media: dict[str, FareMedia] = {}
        for row in self.src.rows("fare_media.txt", columns=("fare_media_id", "fare_media_type")):
            media_id = row.require("fare_media_id")
            media_type = row.integer("fare_media_type", allowed={0, 1, 2, 3, 4})
            if media_id in media:
                row.problem("fare_media_id", f"duplicate fare_media_id {media_id!r}")
            elif media_type is None and row.get("fare_media_type") is None:
                row.problem("fare_media_type", "required value is missing")
            else:
                media[media_id] = FareMedia(
                    media_id, row.get("fare_media_name") or "", media_type or 0
                )
        return media

    def _rider_categories(self) -> dict[str, RiderCategory]:
        categories: dict[str, RiderCategory] = {}
        for row in self.src.rows("rider_categories.txt", columns=("rider_category_id",)):
            category_id = row.require("rider_category_id")
            default = row.integer("is_default_fare_category", allowed={0, 1}) == 1
            if category_id in categories:
                row.problem("rider_category_id", f"duplicate rider_category_id {category_id!r}")
                continue
            categories[category_id] = RiderCategory(
                category_id, row.get("rider_category_name") or "", default
            )
        if sum(c.is_default for c in categories.values()) > 1:
            self.problem(
                "rider_categories.txt", 0, "is_default_fare_category", "more than one default"
            )
        return categories

    def _fare_products(
        self, media: dict[str, FareMedia], categories: dict[str, RiderCategory]
    ) -> tuple[str, dict[str, tuple[FareProduct, ...]]]:
        rows: dict[str, list[FareProduct]] = {}
        currencies: set[str] = set()
        seen: set[tuple[str, str | None, str | None]] = set()
        for row in self.src.rows(
            "fare_products.txt", required=True, columns=("fare_product_id", "amount", "currency")
        ):
            product_id = row.require("fare_product_id")
            currency = row.require("currency")
            if currency and (
                len(currency) != 3 or not currency.isalpha() or not currency.isupper()
            ):
                row.problem("currency", f"not an ISO 4217 code: {currency!r}")
                continue
            amount = row.money("amount", currency)
            media_id, category_id = row.get("fare_media_id"), row.get("rider_category_id")
            if media_id is not None and media_id not in media:
                row.problem("fare_media_id", f"unknown fare media {media_id!r}")
            if category_id is not None and category_id not in categories:
                row.problem("rider_category_id", f"unknown rider category {category_id!r}")
            if (product_id, media_id, category_id) in seen:
                row.problem(
                    "fare_product_id",
                    "duplicate (fare_product_id, fare_media_id, rider_category_id)",
                )
            seen.add((product_id, media_id, category_id))
            if not product_id:
                continue
            if amount is None:
                amount = 0  # reported above; keep the id known so references do not cascade
            currencies.add(currency)
            rows.setdefault(product_id, []).append(
                FareProduct(
                    product_id, row.get("fare_product_name") or "", category_id, media_id, amount
                )
            )
        if len(currencies) > 1:
            self.problem(
                "fare_products.txt", 0, "currency", f"several currencies {sorted(currencies)}"
            )
        if not rows and not any(p.file == "fare_products.txt" for p in self.src.problems):
            self.problem("fare_products.txt", 0, "", "no fare products")
        currency = min(currencies) if currencies else "XXX"
        return currency, {k: tuple(v) for k, v in rows.items()}

    def _leg_rules(
        self,
        networks: set[str],
        areas: set[str],
        timeframes: dict[str, list[Timeframe]],
        products: dict[str, tuple[FareProduct, ...]],
    ) -> tuple[list[FareLegRule], bool]:
        rules: list[FareLegRule] = []
        has_priority = False
        source = self.src.rows("fare_leg_rules.txt", required=True, columns=("fare_product_id",))
        for row in source:
            has_priority = has_priority or "rule_priority" in row.values
            refs: list[
                tuple[
                    str,
                    set[str] | dict[str, list[Timeframe]] | dict[str, tuple[FareProduct, ...]],
                    str,
                ]
            ] = [
                ("network_id", networks, "network"),
                ("from_area_id", areas, "area"),
                ("to_area_id", areas, "area"),
                ("from_timeframe_group_id", timeframes, "timeframe group"),
                ("to_timeframe_group_id", timeframes, "timeframe group"),
                ("fare_product_id", products, "fare product"),
            ]
            ok = True
            for name, known, what in refs:
                value = row.get(name)
                if value is not None and value not in known:
                    row.problem(name, f"unknown {what} {value!r}")
                    ok = False
            priority = row.integer("rule_priority", minimum=0)
            product_id = row.require("fare_product_id")
            if not ok or not product_id:
                continue
            rules.append(
                FareLegRule(
                    rule_id=f"fare_leg_rules.txt:{row.line}",
                    leg_group_id=row.get("leg_group_id"),
                    network_id=row.get("network_id"),
                    from_area_id=row.get("from_area_id"),
                    to_area_id=row.get("to_area_id"),
                    from_timeframe_group_id=row.get("from_timeframe_group_id"),
                    to_timeframe_group_id=row.get("to_timeframe_group_id"),
                    fare_product_id=product_id,
                    rule_priority=priority or 0,
                )
            )
        return rules, has_priority

    def _join_rules(self, networks: set[str], stops: dict[str, Stop]) -> list[FareLegJoinRule]:
        rules: list[FareLegJoinRule] = []
        for row in self.src.rows(
            "fare_leg_join_rules.txt", columns=("from_network_id", "to_network_id")
        ):
            ok = True
            for name in ("from_network_id", "to_network_id"):
                value = row.require(name)
                if value and value not in networks:
                    row.problem(name, f"unknown network {value!r}")
                    ok = False
            for name in ("from_stop_id", "to_stop_id"):
                stop_id = row.get(name)
                if stop_id is not None and stop_id not in stops:
                    row.problem(name, f"unknown stop {stop_id!r}")
                    ok = False
            if (row.get("from_stop_id") is None) != (row.get("to_stop_id") is None):
                row.problem(
                    "to_stop_id", "from_stop_id and to_stop_id must both be given or both be empty"
                )
                ok = False
            if ok:
                rules.append(
                    FareLegJoinRule(
                        row.require("from_network_id"),
                        row.require("to_network_id"),
                        row.get("from_stop_id"),
                        row.get("to_stop_id"),
                    )
                )
        return rules

    def _transfer_rules(
        self, leg_rules: list[FareLegRule], products: dict[str, tuple[FareProduct, ...]]
    ) -> list[FareTransferRule]:
        groups = {r.leg_group_id for r in leg_rules if r.leg_group_id is not None}
        rules: list[FareTransferRule] = []
        for row in self.src.rows("fare_transfer_rules.txt", columns=("fare_transfer_type",)):
            ok = True
            from_group, to_group = row.get("from_leg_group_id"), row.get("to_leg_group_id")
            for name, value in (("from_leg_group_id", from_group), ("to_leg_group_id", to_group)):
                if value is not None and value not in groups:
                    row.problem(
                        name, f"unknown leg group {value!r} (no fare_leg_rules.leg_group_id)"
                    )
                    ok = False
            product_id = row.get("fare_product_id")
            if product_id is not None and product_id not in products:
                row.problem("fare_product_id", f"unknown fare product {product_id!r}")
                ok = False
            count = row.integer("transfer_count", minimum=-1)
            limit = row.integer("duration_limit", minimum=1)
            limit_type = row.integer("duration_limit_type", allowed={0, 1, 2, 3})
            ok = _transfer_fields_consistent(row, from_group, to_group, count) and ok
            kind = row.integer("fare_transfer_type", allowed={0, 1, 2})
            if kind is None:
                if row.get("fare_transfer_type") is None:
                    row.problem("fare_transfer_type", "required value is missing")
                ok = False
            if not ok or kind is None:
                continue
            rules.append(
                FareTransferRule(
                    rule_id=f"fare_transfer_rules.txt:{row.line}",
                    from_leg_group_id=from_group,
                    to_leg_group_id=to_group,
                    transfer_count=count,
                    duration_limit=limit,
                    duration_limit_type=limit_type,
                    fare_transfer_type=FareTransferType(str(kind)),
                    fare_product_id=product_id,
                )
            )
        return rules

    def _stop_routes(
        self, routes: dict[str, Route], stops: dict[str, Stop]
    ) -> dict[str, tuple[str, ...]]:
        """stop_id -> routes serving it, from trips.txt + stop_times.txt when present."""
        trip_route: dict[str, str] = {}
        for row in self.src.rows("trips.txt", columns=("route_id", "trip_id")):
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
            for trip_id, stop_id in self.src.pairs("stop_times.txt", "trip_id", "stop_id"):
                route_id = trip_route.get(trip_id)
                if route_id is not None and stop_id in stops:
                    by_stop.setdefault(stop_id, set()).add(route_id)
        return {k: tuple(sorted(v)) for k, v in by_stop.items()}

    # --- Clearway extensions (docs/fare-data.md) ----------------------------------------
    def _settings(self) -> Settings:
        values: dict[str, object] = {}
        parsers: dict[str, Callable[[_Row], object]] = {
            "service_day_start": lambda r: r.seconds("value", maximum=86399),
            "incomplete_after": lambda r: r.integer("value", minimum=1),
            "maximum_fares_count_to_caps": lambda r: (
                None if (v := r.integer("value", allowed={0, 1})) is None else v == 1
            ),
            "exit_without_entry": lambda r: _enum(r, "value", ExitWithoutEntry),
            "default_fare_media_id": lambda r: r.get("value"),
            "feed_id": lambda r: r.get("value"),
            "fare_version": lambda r: r.get("value"),
            "effective_from": lambda r: r.gtfs_date("value"),
        }
        fields = {
            "service_day_start": "service_day_start_s",
            "incomplete_after": "incomplete_after_s",
        }
        for row in self.src.rows("clearway_fare_settings.txt", columns=("setting", "value")):
            name = row.require("setting")
            parser = parsers.get(name)
            if parser is None:
                row.problem("setting", f"unknown setting {name!r}")
                continue
            if row.get("value") is None:
                row.problem("value", "required value is missing")
                continue
            value = parser(row)
            if value is not None:
                values[fields.get(name, name)] = value
        return Settings(**values)  # type: ignore[arg-type]

    def _caps(
        self,
        products: dict[str, tuple[FareProduct, ...]],
        media: dict[str, FareMedia],
        categories: dict[str, RiderCategory],
        currency: str,
    ) -> list[Cap]:
        counted: dict[str, set[str]] = {}
        cap_lines: dict[str, int] = {}
        caps: list[Cap] = []
        pending: list[tuple[str, str, CapPeriod, int, str | None, str | None]] = []
        for row in self.src.rows(
            "clearway_caps.txt", columns=("cap_id", "cap_period", "amount", "currency")
        ):
            cap_id = row.require("cap_id")
            if cap_id in cap_lines:
                row.problem("cap_id", f"duplicate cap_id {cap_id!r}")
                continue
            cap_lines[cap_id] = row.line
            period = _enum(row, "cap_period", CapPeriod)
            cap_currency = row.require("currency")
            if cap_currency and cap_currency != currency:
                row.problem(
                    "currency", f"{cap_currency} differs from the fare products' {currency}"
                )
            amount = row.money("amount", currency)
            media_id, category_id = row.get("fare_media_id"), row.get("rider_category_id")
            if media_id is not None and media_id not in media:
                row.problem("fare_media_id", f"unknown fare media {media_id!r}")
            if category_id is not None and category_id not in categories:
                row.problem("rider_category_id", f"unknown rider category {category_id!r}")
            if period is None or amount is None:
                continue
            pending.append(
                (cap_id, row.get("cap_name") or cap_id, period, amount, media_id, category_id)
            )
        for row in self.src.rows(
            "clearway_cap_products.txt", columns=("cap_id", "fare_product_id")
        ):
            cap_id, product_id = row.require("cap_id"), row.require("fare_product_id")
            if cap_id not in cap_lines:
                row.problem("cap_id", f"unknown cap {cap_id!r}")
            elif product_id not in products:
                row.problem("fare_product_id", f"unknown fare product {product_id!r}")
            else:
                counted.setdefault(cap_id, set()).add(product_id)
        for cap_id, name, period, amount, media_id, category_id in pending:
            if not counted.get(cap_id):
                self.problem(
                    "clearway_caps.txt", cap_lines[cap_id], "cap_id", "cap counts no product"
                )
                continue
            caps.append(
                Cap(cap_id, name, period, amount, media_id, category_id, frozenset(counted[cap_id]))
            )
        return caps

    def _maximum_fares(
        self,
        networks: set[str],
        areas: set[str],
        products: dict[str, tuple[FareProduct, ...]],
        settings: Settings,
    ) -> list[MaximumFare]:
        rows: list[MaximumFare] = []
        for row in self.src.rows("clearway_maximum_fares.txt", columns=("fare_product_id",)):
            network_id, area_id = row.get("network_id"), row.get("area_id")
            product_id = row.require("fare_product_id")
            ok = True
            if network_id is not None and network_id not in networks:
                row.problem("network_id", f"unknown network {network_id!r}")
                ok = False
            if area_id is not None and area_id not in areas:
                row.problem("area_id", f"unknown area {area_id!r}")
                ok = False
            if product_id and product_id not in products:
                row.problem("fare_product_id", f"unknown fare product {product_id!r}")
                ok = False
            after = row.integer("incomplete_after", minimum=1)
            if ok and product_id:
                rows.append(
                    MaximumFare(
                        f"clearway_maximum_fares.txt:{row.line}",
                        network_id,
                        area_id,
                        product_id,
                        after,
                    )
                )
        return rows

    def _distance_fares(
        self, products: dict[str, tuple[FareProduct, ...]], currency: str
    ) -> dict[str, DistanceFare]:
        fares: dict[str, DistanceFare] = {}
        scale = _MINOR_DIGITS.get(currency, 2)
        for row in self.src.rows(
            "clearway_distance_fares.txt",
            columns=("fare_product_id", "base_amount", "amount_per_km", "currency", "rounding"),
        ):
            product_id = row.require("fare_product_id")
            if product_id and product_id not in products:
                row.problem("fare_product_id", f"unknown fare product {product_id!r}")
                continue
            if product_id in fares:
                row.problem("fare_product_id", f"duplicate distance fare for {product_id!r}")
                continue
            if row.require("currency") not in ("", currency):
                row.problem("currency", f"differs from the fare products' {currency}")
            base, per_km = row.decimal("base_amount"), row.decimal("amount_per_km")
            rounding = _enum(row, "rounding", Rounding)
            unit = row.integer("rounding_unit", minimum=1) or 1
            minimum = row.money("minimum_amount", currency, required=False)
            maximum = row.money("maximum_amount", currency, required=False)
            if base is None or per_km is None or rounding is None:
                if base is None and row.get("base_amount") is None:
                    row.problem("base_amount", "required value is missing")
                if per_km is None and row.get("amount_per_km") is None:
                    row.problem("amount_per_km", "required value is missing")
                continue
            fares[product_id] = DistanceFare(
                product_id,
                base.scaleb(scale),
                per_km.scaleb(scale),
                rounding,
                unit,
                minimum,
                maximum,
            )
        return fares

    def _distances(self, stops: dict[str, Stop]) -> dict[tuple[str, str], int]:
        table: dict[tuple[str, str], int] = {}
        for row in self.src.rows(
            "clearway_distances.txt", columns=("from_stop_id", "to_stop_id", "distance_m")
        ):
            a, b = row.require("from_stop_id"), row.require("to_stop_id")
            meters = row.integer("distance_m", minimum=0)
            for name, stop_id in (("from_stop_id", a), ("to_stop_id", b)):
                if stop_id and stop_id not in stops:
                    row.problem(name, f"unknown stop {stop_id!r}")
            if meters is not None and a in stops and b in stops:
                table[(a, b)] = meters
        return table


def _transfer_fields_consistent(
    row: _Row, from_group: str | None, to_group: str | None, count: int | None
) -> bool:
    """Conditional presence rules of fare_transfer_rules.txt; reports and returns False."""
    ok = True
    if count == 0:
        row.problem("transfer_count", "must be -1 or at least 1")
        ok = False
    same = from_group is not None and from_group == to_group
    if same and row.get("transfer_count") is None:
        row.problem("transfer_count", "required when from_leg_group_id equals to_leg_group_id")
        ok = False
    if not same and row.get("transfer_count") is not None:
        row.problem("transfer_count", "forbidden unless from_leg_group_id equals to_leg_group_id")
        ok = False
    has_limit, has_type = (
        row.get("duration_limit") is not None,
        row.get("duration_limit_type") is not None,
    )
    if has_limit and not has_type:
        row.problem("duration_limit_type", "required when duration_limit is given")
        ok = False
    if has_type and not has_limit:
        row.problem("duration_limit_type", "forbidden when duration_limit is empty")
        ok = False
    return ok


def _enum(row: _Row, name: str, kind: type[_E]) -> _E | None:
    value = row.get(name)
    if value is None:
        row.problem(name, "required value is missing")
        return None
    try:
        return kind(value)
    except ValueError:
        row.problem(name, f"{value!r} is not one of {', '.join(k.value for k in kind)}")
        return None
