"""Loader: broken feeds are refused with file, line and field; quirks of real feeds load."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from clearway.money import Money
from services.fares.domain import FareCatalog, FeedError, load_fare_data, price_card

from .conftest import EXAMPLE_FEEDS
from .taps import trip


@pytest.fixture
def feed(tmp_path: Path) -> Path:
    target = tmp_path / "london"
    shutil.copytree(EXAMPLE_FEEDS / "london", target)
    return target


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def problems_of(path: Path) -> list[tuple[str, int, str]]:
    with pytest.raises(FeedError) as caught:
        load_fare_data(path)
    assert caught.value.code == "FEED_INVALID"
    return [(p.file, p.line, p.field) for p in caught.value.problems]


def test_unknown_fare_product_in_leg_rule_names_file_line_and_field(feed: Path) -> None:
    replace(feed / "fare_leg_rules.txt", "RAIL,RAIL,Z1,Z1,,Z1_OFFPEAK", "RAIL,RAIL,Z1,Z1,,NOPE")
    assert problems_of(feed) == [("fare_leg_rules.txt", 3, "fare_product_id")]


def test_unknown_area_and_timeframe_are_both_reported(feed: Path) -> None:
    replace(
        feed / "fare_leg_rules.txt", "RAIL,RAIL,Z2,Z2,PEAK,Z2_PEAK", "RAIL,RAIL,Z9,Z2,NIGHT,Z2_PEAK"
    )
    assert problems_of(feed) == [
        ("fare_leg_rules.txt", 8, "from_area_id"),
        ("fare_leg_rules.txt", 8, "from_timeframe_group_id"),
    ]


def test_amount_with_too_many_decimals_is_refused(feed: Path) -> None:
    replace(feed / "fare_products.txt", "(peak),ADULT,,2.90,GBP", "(peak),ADULT,,2.905,GBP")
    assert problems_of(feed) == [("fare_products.txt", 2, "amount")]


def test_bad_timezone_and_missing_stops_file(feed: Path) -> None:
    replace(
        feed / "agency.txt",
        "BUSCO,Local bus company (example),https://tfl.gov.uk,Europe/London",
        "BUSCO,Local bus company (example),https://tfl.gov.uk,Mars/Olympus",
    )
    (feed / "stops.txt").unlink()
    found = problems_of(feed)
    assert ("agency.txt", 5, "agency_timezone") in found
    assert ("stops.txt", 0, "") in found


def test_timeframe_after_24h_is_refused(feed: Path) -> None:
    replace(feed / "timeframes.txt", "PEAK,16:00:00,19:00:00", "PEAK,16:00:00,25:00:00")
    assert problems_of(feed) == [("timeframes.txt", 3, "end_time")]


def test_transfer_rule_within_a_group_needs_a_transfer_count(feed: Path) -> None:
    replace(feed / "fare_transfer_rules.txt", "BUS,BUS,-1,3600", "BUS,BUS,,3600")
    assert problems_of(feed) == [("fare_transfer_rules.txt", 2, "transfer_count")]


def test_duration_limit_needs_its_type(feed: Path) -> None:
    replace(feed / "fare_transfer_rules.txt", "BUS,BUS,-1,3600,1,0,", "BUS,BUS,-1,3600,,0,")
    assert problems_of(feed) == [("fare_transfer_rules.txt", 2, "duration_limit_type")]


def test_cap_counting_an_unknown_product_is_refused(feed: Path) -> None:
    with (feed / "clearway_cap_products.txt").open("a", encoding="utf-8") as f:
        f.write("DAILY_BUS,TRAM_SINGLE\n")
    assert problems_of(feed) == [("clearway_cap_products.txt", 22, "fare_product_id")]


def test_unknown_setting_is_refused(feed: Path) -> None:
    with (feed / "clearway_fare_settings.txt").open("a", encoding="utf-8") as f:
        f.write("day_boundary,04:30:00\n")
    assert problems_of(feed) == [("clearway_fare_settings.txt", 10, "setting")]


def test_stop_area_with_unknown_stop(feed: Path) -> None:
    with (feed / "stop_areas.txt").open("a", encoding="utf-8") as f:
        f.write("Z1,PADDINGTON\n")
    assert problems_of(feed) == [("stop_areas.txt", 12, "stop_id")]


def test_byte_order_mark_short_hours_and_unknown_files_are_fine(feed: Path) -> None:
    text = (feed / "timeframes.txt").read_text(encoding="utf-8").replace("06:30:00", "6:30:00")
    (feed / "timeframes.txt").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (feed / "fare_capping.txt").write_text("garbage,\n1,2,3\n", encoding="utf-8")
    data = load_fare_data(feed)
    [j] = price_card(data, trip("2025-03-03 06:30", "OXC", "2025-03-03 06:50", "KGX"))
    assert j.charge == Money(290, "GBP")


def test_feed_loads_from_a_zip(feed: Path, tmp_path: Path) -> None:
    archive = tmp_path / "london.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for file in feed.iterdir():
            z.write(file, f"gtfs/{file.name}")
    data = load_fare_data(archive)
    assert data.fare_version == "london@2025-03-02"


def test_fare_versions_price_each_journey_by_the_version_in_force(
    feed: Path, tmp_path: Path
) -> None:
    replace(
        feed / "clearway_fare_settings.txt", "fare_version,2025-03-02", "fare_version,2026-03-01"
    )
    replace(
        feed / "clearway_fare_settings.txt", "effective_from,20250302", "effective_from,20260301"
    )
    replace(feed / "fare_products.txt", "(peak),ADULT,,2.90,GBP", "(peak),ADULT,,3.00,GBP")
    catalog = FareCatalog.of([load_fare_data(feed), load_fare_data(EXAMPLE_FEEDS / "london")])
    taps = trip("2026-02-27 08:00", "OXC", "2026-02-27 08:20", "KGX") + trip(
        "2026-03-02 08:00", "OXC", "2026-03-02 08:20", "KGX"
    )
    old, new = price_card(catalog, taps)
    assert (old.charge.amount_minor, old.fare_version) == (290, "london@2025-03-02")
    assert (new.charge.amount_minor, new.fare_version) == (300, "london@2026-03-01")
