"""Assembly of the fare tables of a feed: Fares v2 (media, rider categories, products,
leg, join and transfer rules) and the Clearway extensions (settings, caps, maximum fares,
distance fares and distances), each checked against the tables it refers to.

Pure: rows come from a FeedTables (an adapter reads the files); every defect is reported
as a Problem on the tables.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from services.fares.domain.fare_rules import (
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
from services.fares.domain.network import ServiceCalendar, Stop, Timeframe

from .feed_cells import MINOR_DIGITS, FeedRow, enum_cell
from .feed_network import report

if TYPE_CHECKING:
    from .feed_assembly import FeedTables


def fare_media_from(tables: FeedTables) -> dict[str, FareMedia]:
    media: dict[str, FareMedia] = {}
    for row in tables.rows("fare_media.txt", columns=("fare_media_id", "fare_media_type")):
        media_id = row.require("fare_media_id")
        media_type = row.integer("fare_media_type", allowed={0, 1, 2, 3, 4})
        if media_id in media:
            row.problem("fare_media_id", f"duplicate fare_media_id {media_id!r}")
        elif media_type is None and row.get("fare_media_type") is None:
            row.problem("fare_media_type", "required value is missing")
        else:
            media[media_id] = FareMedia(media_id, row.get("fare_media_name") or "", media_type or 0)
    return media


def rider_categories_from(tables: FeedTables) -> dict[str, RiderCategory]:
    categories: dict[str, RiderCategory] = {}
    for row in tables.rows("rider_categories.txt", columns=("rider_category_id",)):
        category_id = row.require("rider_category_id")
        default = row.integer("is_default_fare_category", allowed={0, 1}) == 1
        if category_id in categories:
            row.problem("rider_category_id", f"duplicate rider_category_id {category_id!r}")
            continue
        categories[category_id] = RiderCategory(
            category_id, row.get("rider_category_name") or "", default
        )
    if sum(c.is_default for c in categories.values()) > 1:
        report(
            tables, "rider_categories.txt", 0, "is_default_fare_category", "more than one default"
        )
    return categories


def fare_products_from(
    tables: FeedTables, media: dict[str, FareMedia], categories: dict[str, RiderCategory]
) -> tuple[str, dict[str, tuple[FareProduct, ...]]]:
    rows: dict[str, list[FareProduct]] = {}
    currencies: set[str] = set()
    seen: set[tuple[str, str | None, str | None]] = set()
    for row in tables.rows(
        "fare_products.txt", required=True, columns=("fare_product_id", "amount", "currency")
    ):
        product_id = row.require("fare_product_id")
        currency = row.require("currency")
        if currency and (len(currency) != 3 or not currency.isalpha() or not currency.isupper()):
            row.problem("currency", f"not an ISO 4217 code: {currency!r}")
            continue
        amount = row.money("amount", currency)
        media_id, category_id = _media_and_category(row, media, categories)
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
        report(
            tables, "fare_products.txt", 0, "currency", f"several currencies {sorted(currencies)}"
        )
    if not rows and not any(p.file == "fare_products.txt" for p in tables.problems):
        report(tables, "fare_products.txt", 0, "", "no fare products")
    currency = min(currencies) if currencies else "XXX"
    return currency, {k: tuple(v) for k, v in rows.items()}


def leg_rules_from(
    tables: FeedTables,
    networks: set[str],
    areas: set[str],
    timeframes: dict[str, list[Timeframe]],
    products: dict[str, tuple[FareProduct, ...]],
) -> tuple[list[FareLegRule], bool]:
    rules: list[FareLegRule] = []
    has_priority = False
    source = tables.rows("fare_leg_rules.txt", required=True, columns=("fare_product_id",))
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
        band = _distance_band(row)
        if not ok or not product_id or band is None:
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
                min_distance_m=band[0],
                max_distance_m=band[1],
            )
        )
    return rules, has_priority


def _distance_band(row: FeedRow) -> tuple[int | None, int | None] | None:
    """A leg rule's distance band [min, max) in metres, from min_distance, max_distance and
    distance_type (GTFS Fares v2 working draft; 1 = kilometres); (None, None) when the row
    has none; None after reporting a misuse."""
    low_text, high_text = row.get("min_distance"), row.get("max_distance")
    if row.get("distance_type") is None and low_text is None and high_text is None:
        return None, None
    if not _distance_type_usable(row):
        return None
    low, high = _metres(row, "min_distance"), _metres(row, "max_distance")
    if (low_text is not None and low is None) or (high_text is not None and high is None):
        return None
    if low is not None and high is not None and high <= low:
        row.problem(
            "max_distance",
            f"max_distance ({high_text} km) must be greater than min_distance ({low_text} km)",
        )
        return None
    return low, high


def _distance_type_usable(row: FeedRow) -> bool:
    """distance_type is given, is 1 (kilometres), and comes with a min or max distance;
    reports and returns False otherwise."""
    if row.get("distance_type") is None:
        row.problem("distance_type", "required when min_distance or max_distance is given")
        return False
    kind = row.integer("distance_type", allowed={0, 1})
    if kind == 0:
        row.problem(
            "distance_type",
            "0 (stops travelled) is not supported: taps do not say which stops a leg passed;"
            " use 1 (kilometres)",
        )
    elif kind == 1 and row.get("min_distance") is None and row.get("max_distance") is None:
        row.problem("min_distance", "min_distance or max_distance is required with distance_type")
        return False
    return kind == 1


def _metres(row: FeedRow, name: str) -> int | None:
    """A distance in kilometres (decimal, >= 0, at most metre precision) as whole metres."""
    km = row.decimal(name)
    if km is None:
        return None
    if km < 0:
        row.problem(name, f"{row.get(name)} km is negative")
        return None
    metres = km * 1000
    if metres != metres.to_integral_value():
        row.problem(name, f"{row.get(name)} km is more precise than a metre")
        return None
    return int(metres)


def join_rules_from(
    tables: FeedTables, networks: set[str], stops: dict[str, Stop]
) -> list[FareLegJoinRule]:
    rules: list[FareLegJoinRule] = []
    for row in tables.rows("fare_leg_join_rules.txt", columns=("from_network_id", "to_network_id")):
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
        limit = row.integer("duration_limit", minimum=1)
        limit_type = row.integer("duration_limit_type", allowed={0, 1, 2, 3})
        ok = _duration_fields_consistent(row) and ok
        bad_limit = row.get("duration_limit") is not None and limit is None
        bad_type = row.get("duration_limit_type") is not None and limit_type is None
        if ok and not bad_limit and not bad_type:
            rules.append(
                FareLegJoinRule(
                    row.require("from_network_id"),
                    row.require("to_network_id"),
                    row.get("from_stop_id"),
                    row.get("to_stop_id"),
                    limit,
                    limit_type,
                )
            )
    return rules


def transfer_rules_from(
    tables: FeedTables, leg_rules: list[FareLegRule], products: dict[str, tuple[FareProduct, ...]]
) -> list[FareTransferRule]:
    groups = {r.leg_group_id for r in leg_rules if r.leg_group_id is not None}
    rules: list[FareTransferRule] = []
    for row in tables.rows("fare_transfer_rules.txt", columns=("fare_transfer_type",)):
        ok = True
        from_group, to_group = row.get("from_leg_group_id"), row.get("to_leg_group_id")
        for name, value in (("from_leg_group_id", from_group), ("to_leg_group_id", to_group)):
            if value is not None and value not in groups:
                row.problem(name, f"unknown leg group {value!r} (no fare_leg_rules.leg_group_id)")
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


def settings_from(tables: FeedTables) -> Settings:
    """clearway_fare_settings.txt, over the documented defaults."""
    settings = Settings()
    for row in tables.rows("clearway_fare_settings.txt", columns=("setting", "value")):
        name = row.require("setting")
        if name not in _SETTINGS:
            row.problem("setting", f"unknown setting {name!r}")
            continue
        if row.get("value") is None:
            row.problem("value", "required value is missing")
            continue
        settings = _with_setting(settings, name, row)
    return settings


_SETTINGS = frozenset(
    {
        "service_day_start",
        "incomplete_after",
        "maximum_fares_count_to_caps",
        "exit_without_entry",
        "default_fare_media_id",
        "feed_id",
        "fare_version",
        "effective_from",
        "join_window",
        "timeframe_date",
    }
)


def _with_setting(settings: Settings, name: str, row: FeedRow) -> Settings:
    """`settings` with setting `name` set from `row` (unchanged when the value is bad)."""
    match name:
        case "service_day_start":
            seconds = row.seconds("value", maximum=86399)
            if seconds is not None:
                settings = replace(settings, service_day_start_s=seconds)
        case "incomplete_after":
            after = row.integer("value", minimum=1)
            if after is not None:
                settings = replace(settings, incomplete_after_s=after)
        case "maximum_fares_count_to_caps":
            flag = row.integer("value", allowed={0, 1})
            if flag is not None:
                settings = replace(settings, maximum_fares_count_to_caps=flag == 1)
        case "exit_without_entry":
            policy = enum_cell(row, "value", ExitWithoutEntry)
            if policy is not None:
                settings = replace(settings, exit_without_entry=policy)
        case "effective_from":
            day = row.gtfs_date("value")
            if day is not None:
                settings = replace(settings, effective_from=day)
        case "join_window" | "timeframe_date":
            settings = _with_day_and_join(settings, name, row)
        case _:
            settings = _with_label(settings, name, row.get("value"))
    return settings


def _with_day_and_join(settings: Settings, name: str, row: FeedRow) -> Settings:
    """`settings` with join_window (seconds) or timeframe_date set from `row`."""
    if name == "join_window":
        window = row.integer("value", minimum=1)
        return settings if window is None else replace(settings, join_window_s=window)
    dates = enum_cell(row, "value", TimeframeDate)
    return settings if dates is None else replace(settings, timeframe_date=dates)


def _with_label(settings: Settings, name: str, value: str | None) -> Settings:
    """`settings` with a text setting (default_fare_media_id, feed_id, fare_version) set."""
    if name == "default_fare_media_id":
        return replace(settings, default_fare_media_id=value)
    if name == "feed_id":
        return replace(settings, feed_id=value)
    return replace(settings, fare_version=value)


def caps_from(
    tables: FeedTables,
    products: dict[str, tuple[FareProduct, ...]],
    media: dict[str, FareMedia],
    categories: dict[str, RiderCategory],
    currency: str,
    *,
    calendar: ServiceCalendar,
) -> list[Cap]:
    counted: dict[str, set[str]] = {}
    cap_lines: dict[str, int] = {}
    caps: list[Cap] = []
    pending: list[tuple[str, str, CapPeriod, int, str | None, str | None, str | None]] = []
    for row in tables.rows(
        "clearway_caps.txt", columns=("cap_id", "cap_period", "amount", "currency")
    ):
        cap_id = row.require("cap_id")
        if cap_id in cap_lines:
            row.problem("cap_id", f"duplicate cap_id {cap_id!r}")
            continue
        cap_lines[cap_id] = row.line
        period = enum_cell(row, "cap_period", CapPeriod)
        cap_currency = row.require("currency")
        if cap_currency and cap_currency != currency:
            row.problem("currency", f"{cap_currency} differs from the fare products' {currency}")
        amount = row.money("amount", currency)
        media_id, category_id = _media_and_category(row, media, categories)
        service_id = row.get("service_id")
        if service_id is not None and not calendar.knows(service_id):
            row.problem(
                "service_id",
                f"unknown service {service_id!r} (not in calendar.txt or calendar_dates.txt)",
            )
            continue
        if period is None or amount is None:
            continue
        name = row.get("cap_name") or cap_id
        pending.append((cap_id, name, period, amount, media_id, category_id, service_id))
    for row in tables.rows("clearway_cap_products.txt", columns=("cap_id", "fare_product_id")):
        cap_id, product_id = row.require("cap_id"), row.require("fare_product_id")
        if cap_id not in cap_lines:
            row.problem("cap_id", f"unknown cap {cap_id!r}")
        elif product_id not in products:
            row.problem("fare_product_id", f"unknown fare product {product_id!r}")
        else:
            counted.setdefault(cap_id, set()).add(product_id)
    for cap_id, name, period, amount, media_id, category_id, service_id in pending:
        if not counted.get(cap_id):
            report(
                tables, "clearway_caps.txt", cap_lines[cap_id], "cap_id", "cap counts no product"
            )
            continue
        products_counted = frozenset(counted[cap_id])
        caps.append(
            Cap(cap_id, name, period, amount, media_id, category_id, products_counted, service_id)
        )
    return caps


def maximum_fares_from(
    tables: FeedTables,
    networks: set[str],
    areas: set[str],
    products: dict[str, tuple[FareProduct, ...]],
    timeframes: dict[str, list[Timeframe]],
) -> list[MaximumFare]:
    rows: list[MaximumFare] = []
    for row in tables.rows("clearway_maximum_fares.txt", columns=("fare_product_id",)):
        network_id, area_id = row.get("network_id"), row.get("area_id")
        product_id = row.require("fare_product_id")
        group = row.get("timeframe_group_id")
        ok = True
        if group is not None and group not in timeframes:
            row.problem("timeframe_group_id", f"unknown timeframe group {group!r}")
            ok = False
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
                    group,
                )
            )
    return rows


def distance_fares_from(
    tables: FeedTables, products: dict[str, tuple[FareProduct, ...]], currency: str
) -> dict[str, DistanceFare]:
    fares: dict[str, DistanceFare] = {}
    scale = MINOR_DIGITS.get(currency, 2)
    for row in tables.rows(
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
        rounding = enum_cell(row, "rounding", Rounding)
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


def distances_from(tables: FeedTables, stops: dict[str, Stop]) -> dict[tuple[str, str], int]:
    table: dict[tuple[str, str], int] = {}
    for row in tables.rows(
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


def _media_and_category(
    row: FeedRow, media: dict[str, FareMedia], categories: dict[str, RiderCategory]
) -> tuple[str | None, str | None]:
    """A row's fare_media_id and rider_category_id, each reported when the feed does not
    declare it."""
    media_id, category_id = row.get("fare_media_id"), row.get("rider_category_id")
    if media_id is not None and media_id not in media:
        row.problem("fare_media_id", f"unknown fare media {media_id!r}")
    if category_id is not None and category_id not in categories:
        row.problem("rider_category_id", f"unknown rider category {category_id!r}")
    return media_id, category_id


def _transfer_fields_consistent(
    row: FeedRow, from_group: str | None, to_group: str | None, count: int | None
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
    return _duration_fields_consistent(row) and ok


def _duration_fields_consistent(row: FeedRow) -> bool:
    """duration_limit_type is required exactly when duration_limit is given (transfer and
    join rules); reports and returns False."""
    has_limit, has_type = (
        row.get("duration_limit") is not None,
        row.get("duration_limit_type") is not None,
    )
    if has_limit and not has_type:
        row.problem("duration_limit_type", "required when duration_limit is given")
        return False
    if has_type and not has_limit:
        row.problem("duration_limit_type", "forbidden when duration_limit is empty")
        return False
    return True
