"""The fare data format's newer capabilities on variants of the example feeds: timeframes
read on the service day, the join window, join rules' duration limits, distance bands under
rule_priority, the floor of a leg's charge, how a transfer product counts towards a cap, a
maximum fare row's own incomplete-after limit; and the error for each misuse (file, line,
column). docs/fare-data.md describes each."""

from __future__ import annotations

import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from clearway.money import Money
from services.fares.domain import FeedError, Problem, cap_spend, load_fare_data, price_card

from .conftest import EXAMPLE_FEEDS
from .taps import bus, tap

SYDNEY = ZoneInfo("Australia/Sydney")


def copy_of(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(EXAMPLE_FEEDS / name, target)
    return target


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as out:
        out.write(line + "\n")


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(FeedError) as caught:
        load_fare_data(path)
    return list(caught.value.problems)


def ride(when_in: str, a: str, when_out: str, b: str, card: str = "c1") -> list:  # type: ignore[type-arg]
    return [
        tap(when_in, a, "entry", card=card, tz=SYDNEY),
        tap(when_out, b, "exit", card=card, tz=SYDNEY),
    ]


# --- timeframes on the service day (04:30, London) ---------------------------------------


@pytest.mark.parametrize(
    ("when", "by_calendar_date", "by_service_day"),
    [
        ("2025-03-10 01:00", 175, 0),  # Monday night: Sunday's service day, WEEKEND
        ("2025-03-08 01:00", 0, 175),  # Saturday night: Friday's service day, not WEEKEND
        ("2025-03-08 10:00", 0, 0),  # daytime: both the same
    ],
)
def test_timeframe_date_service_day_reads_day_types_on_the_04_30_service_day(
    tmp_path: Path, when: str, by_calendar_date: int, by_service_day: int
) -> None:
    feed = copy_of("london", tmp_path)
    append(feed / "clearway_fare_settings.txt", "timeframe_date,service_day")
    naive, by_day = load_fare_data(EXAMPLE_FEEDS / "london"), load_fare_data(feed)
    senior_bus = [bus(when, category="SENIOR")]
    [j_naive] = price_card(naive, senior_bus)
    [j_day] = price_card(by_day, senior_bus)
    assert j_naive.charge == Money(by_calendar_date, "GBP")
    assert j_day.charge == Money(by_service_day, "GBP")
    assert j_naive.service_day == j_day.service_day  # the service day itself never changed


# --- the join window and join rules' duration limits (Sydney) ----------------------------


def test_join_window_is_its_own_setting_not_incomplete_after(tmp_path: Path) -> None:
    feed = copy_of("sydney", tmp_path)
    (feed / "fare_leg_join_rules.txt").write_text(
        "from_network_id,to_network_id\nRAIL,RAIL\n", encoding="utf-8"
    )
    default_window = load_fare_data(feed)  # no join_window: the incomplete-after limit (3 h)
    append(feed / "clearway_fare_settings.txt", "join_window,1800")
    half_hour = load_fare_data(feed)
    first = ride("2024-07-01 11:00", "CEN", "2024-07-01 11:20", "STR")
    soon = first + ride("2024-07-01 11:45", "STR", "2024-07-01 12:05", "PAR")
    later = first + ride("2024-07-01 12:00", "STR", "2024-07-01 12:20", "PAR")
    assert [j.charge.amount_minor for j in price_card(half_hour, soon)] == [400]
    assert [j.charge.amount_minor for j in price_card(half_hour, later)] == [347, 347]
    assert [j.charge.amount_minor for j in price_card(default_window, later)] == [400]


def test_join_rule_duration_limit_from_the_first_departure(tmp_path: Path) -> None:
    feed = copy_of("sydney", tmp_path)
    replace(feed / "fare_leg_join_rules.txt", "RAIL,RAIL,3600,2", "RAIL,RAIL,3600,0")
    data = load_fare_data(feed)
    first = ride("2024-07-01 11:00", "CEN", "2024-07-01 11:20", "STR")
    within = first + ride("2024-07-01 11:30", "STR", "2024-07-01 11:55", "PAR")
    beyond = first + ride("2024-07-01 11:30", "STR", "2024-07-01 12:05", "PAR")
    assert [j.charge.amount_minor for j in price_card(data, within)] == [400]
    assert [j.charge.amount_minor for j in price_card(data, beyond)] == [347, 347]


# --- distance bands with rule_priority ---------------------------------------------------


def test_with_rule_priority_a_banded_row_matches_only_inside_its_band(tmp_path: Path) -> None:
    feed = copy_of("sydney", tmp_path)
    (feed / "fare_leg_rules.txt").write_text(
        "leg_group_id,network_id,min_distance,max_distance,distance_type,fare_product_id,"
        "rule_priority\n"
        "RAIL,RAIL,0,10,1,TRAIN_B1_OFFPEAK,1\n"
        "RAIL,RAIL,,,,TRAIN_B5_OFFPEAK,0\n"
        "BUS,BUS,,,,BUS_B1_OFFPEAK,0\n",
        encoding="utf-8",
    )
    data = load_fare_data(feed)
    [short] = price_card(data, ride("2024-07-01 08:00", "CEN", "2024-07-01 08:10", "RED"))
    [long] = price_card(data, ride("2024-07-01 08:00", "CEN", "2024-07-01 08:30", "STR"))
    assert (short.legs[0].fare_product_id, short.charge.amount_minor) == ("TRAIN_B1_OFFPEAK", 280)
    assert (long.legs[0].fare_product_id, long.charge.amount_minor) == ("TRAIN_B5_OFFPEAK", 688)


def test_a_leg_outside_every_band_reports_the_distance(tmp_path: Path) -> None:
    feed = copy_of("sydney", tmp_path)
    replace(feed / "fare_leg_rules.txt", "RAIL,RAIL,,65,,1,TRAIN_B5_OFFPEAK\n", "")
    [j] = price_card(
        load_fare_data(feed), ride("2024-07-06 11:00", "PEN", "2024-07-06 12:40", "CRO")
    )
    assert j.charge.amount_minor == 0
    assert j.no_fare_reason is not None
    assert j.no_fare_reason.startswith("NO_LEG_RULE")
    assert "over 87280 m" in j.no_fare_reason


# --- the floor of a leg's charge, and transfer products in caps ---------------------------


def test_a_negative_transfer_product_never_takes_a_leg_below_zero(tmp_path: Path) -> None:
    feed = copy_of("sydney", tmp_path)
    replace(
        feed / "fare_products.txt", "within 60 minutes,-2.00,AUD", "within 60 minutes,-5.00,AUD"
    )
    taps = [
        *ride("2024-07-01 11:00", "CEN", "2024-07-01 11:15", "BJN"),
        tap("2024-07-01 11:30", "BJ_BUS", "entry", card="c1", tz=SYDNEY, route="BUS_333"),
        tap("2024-07-01 11:40", "BB_BUS", "exit", card="c1", tz=SYDNEY, route="BUS_333"),
    ]
    [journey] = price_card(load_fare_data(feed), taps)
    assert [leg.charge.amount_minor for leg in journey.legs if leg.charge] == [280, 0]
    assert journey.charge.amount_minor == 280


def test_a_transfer_product_listed_in_a_cap_pulls_in_legs_of_other_day_types(
    tmp_path: Path,
) -> None:
    # A cap meant for Monday-Thursday written by products (the peak fares) plus the shared
    # transfer product: Friday's bus leg after a train counts, by its transfer product.
    feed = copy_of("sydney", tmp_path)
    append(
        feed / "clearway_caps.txt",
        "PEAK_BY_PRODUCTS,Monday-Thursday by products,day,18.70,AUD,,,",
    )
    append(feed / "clearway_cap_products.txt", "PEAK_BY_PRODUCTS,TRAIN_B1_PEAK")
    append(feed / "clearway_cap_products.txt", "PEAK_BY_PRODUCTS,MODE_TRANSFER")
    friday = [
        *ride("2024-07-05 11:00", "CEN", "2024-07-05 11:15", "BJN"),
        tap("2024-07-05 11:30", "BJ_BUS", "entry", card="c1", tz=SYDNEY, route="BUS_333"),
        tap("2024-07-05 11:40", "BB_BUS", "exit", card="c1", tz=SYDNEY, route="BUS_333"),
    ]
    spent = {
        cap: amount for cap, _, amount in cap_spend(load_fare_data(feed), "c1", friday, as_of=None)
    }
    assert spent["PEAK_BY_PRODUCTS"] == 24  # the bus leg's 2.24 - 2.00, not the train's 2.80
    assert spent["DAILY_FRI_SUN"] == 304
    assert "DAILY_MON_THU" not in spent


# --- a maximum fare row's own incomplete-after limit, chosen at the entry's instant -------


def test_an_entry_waits_as_long_as_the_maximum_fare_row_of_its_instant(tmp_path: Path) -> None:
    feed = copy_of("sydney", tmp_path)
    replace(
        feed / "clearway_maximum_fares.txt",
        "RAIL,,PEAK,TRAIN_B5_PEAK,",
        "RAIL,,PEAK,TRAIN_B5_PEAK,1800",
    )
    data = load_fare_data(feed)
    at_peak = price_card(data, ride("2024-07-01 08:00", "CEN", "2024-07-01 08:45", "STR"))
    off_peak = price_card(data, ride("2024-07-01 11:00", "CEN", "2024-07-01 11:45", "STR"))
    # The entry waited 30 minutes only: a default fare, then an exit without entry (a
    # default fare too, which the A$18.70 cap trims).
    assert [j.charge.amount_minor for j in at_peak] == [984, 886]
    assert at_peak[0].incomplete
    assert [j.charge.amount_minor for j in off_peak] == [347]


# --- misuse: one clear problem each (file, line, column) ----------------------------------


@pytest.mark.parametrize(
    ("file", "old", "new", "line", "field", "message"),
    [
        (
            "fare_leg_rules.txt",
            "RAIL,RAIL,PEAK,0,10,1,TRAIN_B1_PEAK",
            "RAIL,RAIL,PEAK,0,10,0,TRAIN_B1_PEAK",
            2,
            "distance_type",
            "0 (stops travelled) is not supported",
        ),
        (
            "fare_leg_rules.txt",
            "RAIL,RAIL,,0,10,1,TRAIN_B1_OFFPEAK",
            "RAIL,RAIL,,0,10,,TRAIN_B1_OFFPEAK",
            3,
            "distance_type",
            "required when min_distance or max_distance is given",
        ),
        (
            "fare_leg_rules.txt",
            "RAIL,RAIL,PEAK,10,20,1,TRAIN_B2_PEAK",
            "RAIL,RAIL,PEAK,20,10,1,TRAIN_B2_PEAK",
            4,
            "max_distance",
            "max_distance (10 km) must be greater than min_distance (20 km)",
        ),
        (
            "fare_leg_rules.txt",
            "RAIL,RAIL,,10,20,1,TRAIN_B2_OFFPEAK",
            "RAIL,RAIL,,,,1,TRAIN_B2_OFFPEAK",
            5,
            "min_distance",
            "min_distance or max_distance is required with distance_type",
        ),
        (
            "fare_leg_rules.txt",
            "RAIL,RAIL,PEAK,20,35,1,TRAIN_B3_PEAK",
            "RAIL,RAIL,PEAK,20.0005,35,1,TRAIN_B3_PEAK",
            6,
            "min_distance",
            "more precise than a metre",
        ),
        (
            "fare_leg_rules.txt",
            "RAIL,RAIL,,20,35,1,TRAIN_B3_OFFPEAK",
            "RAIL,RAIL,,-1,35,1,TRAIN_B3_OFFPEAK",
            7,
            "min_distance",
            "is negative",
        ),
        (
            "clearway_caps.txt",
            "day,9.35,AUD,,,FRI_SUN",
            "day,9.35,AUD,,,WEEKENDS",
            3,
            "service_id",
            "unknown service 'WEEKENDS' (not in calendar.txt or calendar_dates.txt)",
        ),
        (
            "clearway_maximum_fares.txt",
            "RAIL,,PEAK,TRAIN_B5_PEAK,",
            "RAIL,,PAEK,TRAIN_B5_PEAK,",
            2,
            "timeframe_group_id",
            "unknown timeframe group 'PAEK'",
        ),
        (
            "fare_leg_join_rules.txt",
            "RAIL,RAIL,3600,2",
            "RAIL,RAIL,3600,",
            2,
            "duration_limit_type",
            "required when duration_limit is given",
        ),
        (
            "clearway_fare_settings.txt",
            "timeframe_date,service_day",
            "timeframe_date,service",
            6,
            "value",
            "'service' is not one of calendar_date, service_day",
        ),
    ],
)
def test_misuse_of_a_new_column_is_refused_naming_file_line_and_column(
    tmp_path: Path, file: str, old: str, new: str, line: int, field: str, message: str
) -> None:
    feed = copy_of("sydney", tmp_path)
    replace(feed / file, old, new)
    [problem] = problems_of(feed)
    assert (problem.file, problem.line, problem.field) == (file, line, field)
    assert message in problem.message


def test_a_join_window_of_zero_is_refused(tmp_path: Path) -> None:
    feed = copy_of("sydney", tmp_path)
    append(feed / "clearway_fare_settings.txt", "join_window,0")
    [problem] = problems_of(feed)
    assert (problem.file, problem.line, problem.field) == ("clearway_fare_settings.txt", 9, "value")
