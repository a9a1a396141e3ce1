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
