"""TfL-style pay as you go on examples/feeds/london (fares from 2 March 2025)."""

from __future__ import annotations

import pytest

from clearway.money import Money
from services.fares.domain import FareData, load_fare_data, price_card, revise

from .conftest import EXAMPLE_FEEDS
from .taps import bus, tap, trip


def gbp(pence: int) -> Money:
    return Money(pence, "GBP")


@pytest.fixture(scope="module")
def london() -> FareData:
    return load_fare_data(EXAMPLE_FEEDS / "london")


def total(journeys: list) -> Money:  # type: ignore[type-arg]
    return Money(sum(j.charge.amount_minor for j in journeys), "GBP")


def test_zone_1_single_is_290_in_the_weekday_morning_peak(london: FareData) -> None:
    [j] = price_card(london, trip("2025-03-03 08:00", "OXC", "2025-03-03 08:20", "KGX"))
    assert j.charge == gbp(290)
    assert j.legs[0].fare_product_id == "Z1_PEAK"


def test_zone_1_single_is_280_off_peak(london: FareData) -> None:
    [j] = price_card(london, trip("2025-03-03 10:00", "OXC", "2025-03-03 10:20", "KGX"))
    assert j.charge == gbp(280)


def test_evening_peak_starts_at_1600_and_ends_at_1900(london: FareData) -> None:
    assert price_card(london, trip("2025-03-03 16:00", "OXC", "2025-03-03 16:20", "KGX"))[
        0
    ].charge == gbp(290)
    assert price_card(london, trip("2025-03-03 19:00", "OXC", "2025-03-03 19:20", "KGX"))[
        0
    ].charge == gbp(280)


def test_weekend_and_bank_holidays_are_off_peak(london: FareData) -> None:
    assert price_card(london, trip("2025-03-08 08:00", "OXC", "2025-03-08 08:20", "KGX"))[
        0
    ].charge == gbp(280)
    assert price_card(london, trip("2025-05-05 08:00", "OXC", "2025-05-05 08:20", "KGX"))[
        0
    ].charge == gbp(280)


def test_zones_1_2_single_is_priced_by_entry_and_exit_zone(london: FareData) -> None:
    [j] = price_card(london, trip("2025-03-03 08:00", "CMD", "2025-03-03 08:20", "OXC"))
    assert j.charge == gbp(350)
    assert j.legs[0].operator_id == "LUL"


def test_bus_fare_is_175(london: FareData) -> None:
    [j] = price_card(london, [bus("2025-03-03 10:00")])
    assert j.charge == gbp(175)
    assert j.legs[0].operator_id == "BUSCO"


def test_hopper_makes_bus_journeys_within_60_minutes_of_first_tap_free(london: FareData) -> None:
    taps = [
        bus("2025-03-03 10:00"),
        bus("2025-03-03 10:30", "BUS_B1", "BUS_390"),
        bus("2025-03-03 11:00"),
    ]
    journeys = price_card(london, taps)
    assert len(journeys) == 1
    assert journeys[0].charge == gbp(175)
    assert [leg.fare for leg in journeys[0].legs] == [gbp(175), gbp(0), gbp(0)]
    assert journeys[0].legs[1].transfer_rule_id == "fare_transfer_rules.txt:2"


def test_hopper_ends_60_minutes_after_the_first_tap(london: FareData) -> None:
    taps = [bus("2025-03-03 10:00"), bus("2025-03-03 10:45"), bus("2025-03-03 11:01")]
    journeys = price_card(london, taps)
    assert [j.charge for j in journeys] == [gbp(175), gbp(175)]


def test_bus_only_daily_cap_is_525(london: FareData) -> None:
    taps = [bus(f"2025-03-03 {h:02d}:00") for h in (7, 9, 11, 13, 15)]
    journeys = price_card(london, taps)
    assert total(journeys) == gbp(525)
    assert journeys[3].caps[0].cap_id == "DAILY_BUS"


def test_zones_1_2_daily_cap_is_890_and_counts_bus_fares(london: FareData) -> None:
    taps = [
        *trip("2025-03-03 08:00", "CMD", "2025-03-03 08:20", "OXC"),  # 3.50
        *trip("2025-03-03 12:00", "OXC", "2025-03-03 12:20", "KGX"),  # 2.80
        bus("2025-03-03 14:00"),  # 1.75 -> 8.05
        *trip("2025-03-03 17:00", "KGX", "2025-03-03 17:20", "CMD"),  # 3.50 -> capped at 0.85
        bus("2025-03-03 20:00"),  # free
    ]
    journeys = price_card(london, taps)
    assert [j.charge for j in journeys] == [gbp(350), gbp(280), gbp(175), gbp(85), gbp(0)]
    assert journeys[3].caps[0].cap_id == "DAILY_Z12"
    assert journeys[3].caps[0].saved == gbp(265)


def test_service_day_boundary_is_0430(london: FareData) -> None:
    taps = [
        *trip("2025-03-03 23:00", "CMD", "2025-03-03 23:20", "OXC"),
        *trip("2025-03-04 04:00", "OXC", "2025-03-04 04:20", "CMD"),
        *trip("2025-03-04 04:40", "CMD", "2025-03-04 05:00", "OXC"),
    ]
    days = [j.service_day.isoformat() for j in price_card(london, taps)]
    assert days == ["2025-03-03", "2025-03-03", "2025-03-04"]


def test_weekly_cap_monday_to_sunday_is_4470_on_contactless(london: FareData) -> None:
    taps = []
    for day in range(3, 10):  # Mon 3 .. Sun 9 March 2025
        for hour in (8, 12, 17, 20):
            taps += trip(
                f"2025-03-{day:02d} {hour:02d}:00", "CMD", f"2025-03-{day:02d} {hour:02d}:30", "OXC"
            )
    journeys = price_card(london, taps)
    assert total(journeys) == gbp(4470)
    # Monday of the next week starts afresh.
    nxt = price_card(london, taps + trip("2025-03-10 10:00", "CMD", "2025-03-10 10:30", "OXC"))
    assert total(nxt) == gbp(4470 + 290)


def test_weekly_cap_does_not_apply_to_oyster(london: FareData) -> None:
    taps = []
    for day in range(3, 10):
        for hour in (8, 12, 17, 20):
            taps += trip(
                f"2025-03-{day:02d} {hour:02d}:00",
                "CMD",
                f"2025-03-{day:02d} {hour:02d}:30",
                "OXC",
                media="OYSTER",
            )
    assert total(price_card(london, taps)) == gbp(7 * 890)


def test_entry_without_exit_charges_maximum_fare_that_does_not_count_to_caps(
    london: FareData,
) -> None:
    taps = [
        tap("2025-03-03 07:00", "CMD", "entry"),  # no exit: maximum fare
        *trip("2025-03-03 12:00", "CMD", "2025-03-03 12:20", "OXC"),
        *trip("2025-03-03 13:00", "OXC", "2025-03-03 13:20", "CMD"),
        *trip("2025-03-03 14:00", "CMD", "2025-03-03 14:20", "OXC"),
        *trip("2025-03-03 15:00", "OXC", "2025-03-03 15:20", "CMD"),
    ]
    journeys = price_card(london, taps)
    assert journeys[0].incomplete and journeys[0].charge == gbp(940)
    assert journeys[0].legs[0].maximum_fare
    # The four off-peak 2.90 journeys reach the 8.90 cap on their own.
    assert total(journeys[1:]) == gbp(890)


def test_entry_followed_by_entry_makes_the_first_incomplete(london: FareData) -> None:
    taps = [
        tap("2025-03-03 10:00", "CMD", "entry"),
        *trip("2025-03-03 10:30", "KGX", "2025-03-03 10:50", "OXC"),
    ]
    journeys = price_card(london, taps)
    assert [j.charge for j in journeys] == [gbp(940), gbp(280)]


def test_exit_without_entry_is_charged_the_maximum_fare(london: FareData) -> None:
    [j] = price_card(london, [tap("2025-03-03 10:00", "OXC", "exit")])
    assert j.incomplete and j.charge == gbp(940)


def test_late_exit_refunds_the_difference_as_an_adjustment(london: FareData) -> None:
    entry = tap("2025-03-03 10:00", "CMD", "entry", tap_id="in-1")
    first = price_card(london, [entry])
    published = {
        j.journey_id: (r.revision, r.charge) for j, r in zip(first, revise({}, first), strict=True)
    }
    assert first[0].charge == gbp(940)
    late_exit = tap("2025-03-03 10:25", "OXC", "exit", tap_id="out-1")
    second = price_card(london, [late_exit, entry])
    [adjustment] = revise(published, second)
    assert adjustment.journey_id == "j-in-1"
    assert adjustment.revision == 2
    assert adjustment.charge == gbp(290)
    assert adjustment.delta == gbp(290 - 940)


def test_open_entry_is_pending_until_the_exit_limit_passes(london: FareData) -> None:
    entry = tap("2025-03-03 10:00", "CMD", "entry")
    assert price_card(london, [entry], as_of=entry.tapped_at.replace(hour=11)) == []
    [j] = price_card(london, [entry], as_of=entry.tapped_at.replace(hour=12, minute=1))
    assert j.incomplete


def test_unknown_stop_is_reported_not_priced(london: FareData) -> None:
    [j] = price_card(london, trip("2025-03-03 10:00", "NOPE", "2025-03-03 10:20", "KGX"))
    assert j.charge == gbp(0)
    assert j.no_fare_reason is not None and j.no_fare_reason.startswith("UNKNOWN_STOP")


def test_operator_comes_from_the_tap_then_the_route(london: FareData) -> None:
    [j] = price_card(
        london, trip("2025-03-03 10:00", "KGX", "2025-03-03 10:20", "FAR", route="THAMESLINK")
    )
    assert j.legs[0].operator_id == "NATRAIL"
    [j] = price_card(
        london, trip("2025-03-03 10:00", "KGX", "2025-03-03 10:20", "FAR", operator="ELIZ")
    )
    assert j.legs[0].operator_id == "ELIZ"
