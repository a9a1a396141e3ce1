"""Usage reports against a hand-counted small day (no Kafka)."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

from services.reports.adapters.journeys import journey_from_event, write_reports
from services.reports.domain.usage import build_reports, standing_journeys
from services.reports.entrypoints.cli import _stop_areas_and_timezone, main
from services.reports.tests.day import (
    EXPECTED_CONCESSIONS,
    EXPECTED_OD_AREAS,
    EXPECTED_RIDERSHIP,
    PERIOD,
    hand_counted_day,
    identifiers,
)

LONDON_FEED = Path(__file__).resolve().parents[3] / "examples" / "feeds" / "london"


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_feed_maps_stops_to_fare_areas() -> None:
    areas, tz = _stop_areas_and_timezone(LONDON_FEED)
    assert areas["KGX"] == "Z1" and areas["BRX"] == "Z2"
    assert "BUS_A1" not in areas
    assert str(tz) == "Europe/London"


def test_latest_revision_counts_and_withdrawn_drop_out() -> None:
    day = [journey_from_event(e) for e in hand_counted_day()]
    random.Random(7).shuffle(day)  # arrival order does not matter, the revision does
    standing = {j.journey_id: j for j in standing_journeys(day, PERIOD)}
    assert "jrnWDR01" not in standing
    assert "jrnLUL02n" not in standing
    assert standing["jrnLUL01b"].revision == 2
    assert standing["jrnLUL01b"].legs[0].to_stop_id == "BRX"
    assert len(standing) == 12 + 1 + 9


def test_hand_counted_day_with_suppression(tmp_path: Path) -> None:
    areas, tz = _stop_areas_and_timezone(LONDON_FEED)
    events = hand_counted_day()
    reports = build_reports([journey_from_event(e) for e in events], PERIOD, tz, areas)
    paths = write_reports(reports, tmp_path)
    assert sorted(p.name for p in paths) == [
        "concession_take_up.csv",
        "origin_destination.csv",
        "ridership_by_operator_hour.csv",
        "ridership_by_operator_hour.svg",
    ]
    assert read_csv(tmp_path / "ridership_by_operator_hour.csv") == EXPECTED_RIDERSHIP
    assert read_csv(tmp_path / "origin_destination.csv") == EXPECTED_OD_AREAS
    assert read_csv(tmp_path / "concession_take_up.csv") == EXPECTED_CONCESSIONS

    svg = (tmp_path / "ridership_by_operator_hour.svg").read_text(encoding="utf-8")
    root = ElementTree.fromstring(svg)  # well-formed
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.find("{http://www.w3.org/2000/svg}title") is not None
    assert "Hour of entry (local time)" in svg and ">Boardings<" in svg
    assert "LUL 08:00: 13 boardings" in svg
    assert "BUSCO" not in svg  # the 9-card cell is not drawn either

    for path in paths:
        text = path.read_text(encoding="utf-8")
        for ident in identifiers(events):
            assert ident not in text, f"{ident} leaked into {path.name}"


def test_without_feed_od_is_by_stop_in_london_time() -> None:
    reports = build_reports(
        [journey_from_event(e) for e in hand_counted_day()], PERIOD, ZoneInfo("Europe/London")
    )
    assert reports.origin_destination.columns[:2] == ("origin_stop", "destination_stop")
    assert reports.origin_destination.rows == (
        ("BUS_A1", "BUS_A3", "<10", "<10"),
        ("KGX", "BRX", "13", "12"),
    )
    assert [r[:2] for r in reports.ridership.rows] == [("BUSCO", "09"), ("LUL", "08")]


def test_cell_of_exactly_ten_cards_is_shown() -> None:
    day = [journey_from_event(e) for e in hand_counted_day()]
    # drop two LUL cards (both their journeys for tokLUL01): 10 cards remain
    kept = [j for j in day if j.card_token not in {"tokLUL01", "tokLUL12"}]
    reports = build_reports(kept, PERIOD, ZoneInfo("Europe/London"))
    assert ("LUL", "08", "10", "10") in reports.ridership.rows
    kept9 = [j for j in kept if j.card_token != "tokLUL11"]
    reports9 = build_reports(kept9, PERIOD, ZoneInfo("Europe/London"))
    assert ("LUL", "08", "<10", "<10") in reports9.ridership.rows


def test_cli_rejects_a_bad_period(tmp_path: Path) -> None:
    assert main(["usage", "--period", "15/06/2026", "--out", str(tmp_path)]) == 2


def test_a_leg_without_exit_goes_to_no_exit() -> None:
    events = [e for e in hand_counted_day() if e.journey_id.startswith("jrnLUL")]
    for e in events:
        for leg in e.legs:
            leg.to_stop_id = ""
    reports = build_reports(
        [journey_from_event(e) for e in events], PERIOD, ZoneInfo("Europe/London")
    )
    assert reports.origin_destination.rows == (("KGX", "(no exit)", "13", "12"),)
