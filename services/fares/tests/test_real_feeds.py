"""Conformance against three published GTFS Fares v2 feeds (read from ../shared/feeds)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from clearway.money import Money
from services.fares.domain import Tap, TapKind, load_fare_data, price_card

LA = ZoneInfo("America/Los_Angeles")


@pytest.mark.parametrize("name", ["ctran", "transcollines", "zakroczym"])
def test_real_feed_loads_without_problems(shared_feeds: Path, name: str) -> None:
    data = load_fare_data(shared_feeds / name)
    assert data.leg_rules
    assert data.currency in {"USD", "CAD", "PLN"}


@pytest.mark.parametrize(
    ("category", "expected"),
    [("ADULT", 125), ("HONORED_CITIZEN", 60), ("YOUTH", 0), (None, 125)],
)
def test_ctran_local_sunday_price_depends_on_rider_category(
    shared_feeds: Path, category: str | None, expected: int
) -> None:
    data = load_fare_data(shared_feeds / "ctran")
    tap = Tap(
        "t1",
        "c1",
        datetime(2025, 9, 14, 17, 46, tzinfo=LA),
        "9022",
        TapKind.BOARD,
        route_id="007",
        rider_category_id=category,
    )
    [journey] = price_card(data, [tap])
    assert journey.charge == Money(expected, "USD")
    assert journey.no_fare_reason is None


def _board(when: datetime, stop: str, route: str, **kw: str) -> Tap:
    return Tap(
        f"b-{when.isoformat()}-{stop}", "c1", when, stop, TapKind.BOARD, route_id=route, **kw
    )


def _trip(start: datetime, a: str, end: datetime, b: str, route: str, **kw: str) -> list[Tap]:
    return [
        Tap(f"in-{start.isoformat()}", "c1", start, a, TapKind.ENTRY, route_id=route, **kw),
        Tap(f"out-{end.isoformat()}", "c1", end, b, TapKind.EXIT, route_id=route, **kw),
    ]


def test_ctran_youth_has_no_price_on_a_paper_ticket_and_it_is_reported(shared_feeds: Path) -> None:
    data = load_fare_data(shared_feeds / "ctran")
    tap = _board(
        datetime(2025, 9, 14, 17, 46, tzinfo=LA),
        "9022",
        "007",
        rider_category_id="YOUTH",
        fare_media_id="1",
    )
    [journey] = price_card(data, [tap])
    assert journey.charge == Money(0, "USD")
    assert journey.no_fare_reason is not None and journey.no_fare_reason.startswith("NO_PRODUCT")


def test_ctran_weekday_departure_between_timeframes_matches_no_rule(shared_feeds: Path) -> None:
    # Timeframe end_time is exclusive: 08:59:30 on a weekday is in neither REGULAR nor MIDDAY.
    data = load_fare_data(shared_feeds / "ctran")
    [journey] = price_card(
        data, [_board(datetime(2025, 9, 15, 8, 59, 30, tzinfo=LA), "9022", "007")]
    )
    assert journey.charge == Money(0, "USD")
    assert journey.no_fare_reason is not None and journey.no_fare_reason.startswith("NO_LEG_RULE")


def test_ctran_new_years_eve_evening_is_free_by_service_date(shared_feeds: Path) -> None:
    data = load_fare_data(shared_feeds / "ctran")
    eve = price_card(data, [_board(datetime(2025, 12, 31, 20, 0, tzinfo=LA), "9022", "007")])
    early = price_card(data, [_board(datetime(2026, 1, 1, 2, 0, tzinfo=LA), "9022", "007")])
    afternoon = price_card(data, [_board(datetime(2025, 12, 31, 16, 0, tzinfo=LA), "9022", "007")])
    assert eve[0].legs[0].fare_product_id == "FREE_FARE" and eve[0].charge.amount_minor == 0
    assert early[0].legs[0].fare_product_id == "FREE_FARE"
    assert afternoon[0].charge.amount_minor == 125


def test_ctran_midday_honored_citizen_express_uses_the_leg_rule_product(shared_feeds: Path) -> None:
    data = load_fare_data(shared_feeds / "ctran")
    tap = _board(
        datetime(2025, 9, 15, 10, 0, tzinfo=LA), "9022", "105", rider_category_id="HONORED_CITIZEN"
    )
    [journey] = price_card(data, [tap])
    assert journey.legs[0].fare_product_id == "HC_EXPRESS_SINGLE_RIDE"
    assert journey.charge.amount_minor == 300


def test_ctran_local_to_regional_upgrade_costs_the_transfer_product(shared_feeds: Path) -> None:
    data = load_fare_data(shared_feeds / "ctran")
    taps = [
        _board(datetime(2025, 9, 15, 16, 0, tzinfo=LA), "9022", "007"),
        _board(datetime(2025, 9, 15, 16, 40, tzinfo=LA), "9022", "060"),
    ]
    [journey] = price_card(data, taps)
    assert [leg.fare.amount_minor for leg in journey.legs] == [125, 125]
    assert journey.legs[1].transfer_product_id == "LOCAL_REGIONAL_ADULT_TRANSFER"


def test_ctran_youth_has_no_local_to_regional_transfer_product(shared_feeds: Path) -> None:
    data = load_fare_data(shared_feeds / "ctran")
    taps = [
        _board(datetime(2025, 9, 15, 16, 0, tzinfo=LA), "9022", "007", rider_category_id="YOUTH"),
        _board(datetime(2025, 9, 15, 16, 40, tzinfo=LA), "9022", "060", rider_category_id="YOUTH"),
    ]
    journeys = price_card(data, taps)
    assert [j.charge.amount_minor for j in journeys] == [0, 125]


def test_ctran_local_transfers_are_free_for_9000_seconds(shared_feeds: Path) -> None:
    data = load_fare_data(shared_feeds / "ctran")
    start = datetime(2025, 9, 15, 15, 0, tzinfo=LA)
    taps = [
        _board(start, "9022", "007"),
        _board(start.replace(hour=16), "9022", "002"),
        _board(start.replace(hour=17, minute=30), "9022", "007"),  # 9,000 s after the first
        _board(start.replace(hour=17, minute=31), "9022", "006"),  # too late: pays again
    ]
    journeys = price_card(data, taps)
    assert [j.charge.amount_minor for j in journeys] == [125, 125]
    assert len(journeys[0].legs) == 3


MTL = ZoneInfo("America/Montreal")


@pytest.mark.parametrize(
    ("start", "a", "end", "b", "route", "expected"),
    [
        # Route 910, Mon 2024-05-06, Pontiac -> Gatineau: PS-2000.
        (
            datetime(2024, 5, 6, 5, 17, tzinfo=MTL),
            "910001",
            datetime(2024, 5, 6, 7, 36, tzinfo=MTL),
            "925210",
            "910",
            2000,
        ),
        # Route 924 (own network) on Sat 2024-06-01: timeframe 924-GRT by service date -> free.
        (
            datetime(2024, 6, 1, 8, 13, tzinfo=MTL),
            "921062",
            datetime(2024, 6, 1, 9, 0, tzinfo=MTL),
            "9154",
            "924",
            0,
        ),
        # Sat 2024-05-04: 924-PAY-2 -> PS-500.
        (
            datetime(2024, 5, 4, 8, 0, tzinfo=MTL),
            "921062",
            datetime(2024, 5, 4, 9, 0, tzinfo=MTL),
            "921032",
            "924",
            500,
        ),
        # Sat 2024-11-02: 924-PAY-1 -> PS-500.
        (
            datetime(2024, 11, 2, 8, 0, tzinfo=MTL),
            "921062",
            datetime(2024, 11, 2, 9, 0, tzinfo=MTL),
            "9154",
            "924",
            500,
        ),
    ],
)
def test_transcollines_area_pairs_and_service_date_timeframes(
    shared_feeds: Path, start: datetime, a: str, end: datetime, b: str, route: str, expected: int
) -> None:
    data = load_fare_data(shared_feeds / "transcollines")
    [journey] = price_card(data, _trip(start, a, end, b, route))
    assert journey.no_fare_reason is None
    assert journey.charge == Money(expected, "CAD")


def test_transcollines_route_924_on_a_weekday_has_no_rule_and_says_so(shared_feeds: Path) -> None:
    data = load_fare_data(shared_feeds / "transcollines")
    start = datetime(2024, 6, 4, 8, 0, tzinfo=MTL)
    [journey] = price_card(data, _trip(start, "921062", start.replace(hour=9), "9154", "924"))
    assert journey.charge == Money(0, "CAD")
    assert journey.no_fare_reason is not None and "NO_LEG_RULE" in journey.no_fare_reason


WAW = ZoneInfo("Europe/Warsaw")


@pytest.mark.parametrize(("b", "expected"), [("125", 500), ("113", 0)])
def test_zakroczym_area_pairs(shared_feeds: Path, b: str, expected: int) -> None:
    data = load_fare_data(shared_feeds / "zakroczym")
    start = datetime(2025, 11, 12, 4, 5, tzinfo=WAW)
    [journey] = price_card(data, _trip(start, "100", start.replace(hour=4, minute=56), b, "Z1"))
    assert journey.charge == Money(expected, "PLN")
    assert journey.rider_category_id == "0"


def test_zakroczym_senior_single_ride_is_not_sold_and_is_reported(shared_feeds: Path) -> None:
    data = load_fare_data(shared_feeds / "zakroczym")
    start = datetime(2025, 11, 12, 4, 5, tzinfo=WAW)
    taps = _trip(start, "100", start.replace(minute=56), "125", "Z1", rider_category_id="3")
    [journey] = price_card(data, taps)
    assert journey.charge == Money(0, "PLN")
    assert journey.no_fare_reason is not None and journey.no_fare_reason.startswith("NO_PRODUCT")
