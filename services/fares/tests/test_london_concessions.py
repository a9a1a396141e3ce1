"""Concessions on examples/feeds/london: senior bus passes (free 09:30-23:00 on weekdays and
all day at weekends, the adult fare otherwise and on rail), youth rail at half the adult
fare; adults pay what they paid before the concessions were written into the feed."""

from __future__ import annotations

import pytest

from clearway.money import Money
from services.fares.domain import FareData, PricedJourney, Tap, load_fare_data, price_card

from .conftest import EXAMPLE_FEEDS
from .taps import bus, tap, trip


@pytest.fixture(scope="module")
def london() -> FareData:
    return load_fare_data(EXAMPLE_FEEDS / "london")


def one_leg(data: FareData, taps: list[Tap]) -> tuple[int, str | None, int, int]:
    """(charge, product, standalone fare, reference fare) of a single-leg journey."""
    [journey] = price_card(data, taps)
    [leg] = journey.legs
    assert leg.standalone_fare is not None and leg.reference_fare is not None
    return (
        journey.charge.amount_minor,
        leg.fare_product_id,
        leg.standalone_fare.amount_minor,
        leg.reference_fare.amount_minor,
    )


# --- adults: unchanged ----------------------------------------------------------------------


def mixed_day(day: str, next_day: str, **kw: object) -> list[Tap]:
    """Early buses (Hopper), peak and off-peak rail, buses across 09:30 and 23:00, a bus after
    midnight: enough to reach both daily caps."""
    return [
        bus(f"{day} 05:10", **kw),
        bus(f"{day} 05:40", "BUS_B1", "BUS_390", **kw),
        *trip(f"{day} 07:30", "CMD", f"{day} 07:55", "OXC", **kw),
        bus(f"{day} 09:29", **kw),
        bus(f"{day} 09:45", "BUS_B1", "BUS_390", **kw),
        bus(f"{day} 10:40", "BUS_B3", "BUS_390", **kw),
        *trip(f"{day} 12:00", "OXC", f"{day} 12:20", "KGX", **kw),
        *trip(f"{day} 17:00", "KGX", f"{day} 17:25", "CMD", **kw),
        bus(f"{day} 22:59", **kw),
        bus(f"{day} 23:10", **kw),
        bus(f"{next_day} 00:30", "BUS_B1", "BUS_390", **kw),
    ]


def summary(journeys: list[PricedJourney]) -> list[tuple[int, int, tuple[tuple[str, int], ...]]]:
    return [
        (
            j.charge.amount_minor,
            j.amount_before_caps.amount_minor,
            tuple((c.cap_id, c.saved.amount_minor) for c in j.caps),
        )
        for j in journeys
    ]


# Computed on the feed before SENIOR and YOUTH were added (one bus product at every hour).
WEEKDAY_DAY = [
    (175, 175, ()),
    (350, 350, ()),
    (175, 175, ()),
    (175, 175, ()),
    (15, 280, (("DAILY_Z12", 265),)),
    (0, 350, (("DAILY_Z12", 350),)),
    (0, 175, (("DAILY_BUS", 175),)),
    (0, 175, (("DAILY_BUS", 175),)),
]
OFF_PEAK_DAY = [
    (175, 175, ()),
    (290, 290, ()),
    (175, 175, ()),
    (175, 175, ()),
    (75, 280, (("DAILY_Z12", 205),)),
    (0, 290, (("DAILY_Z12", 290),)),
    (0, 175, (("DAILY_BUS", 175),)),
    (0, 175, (("DAILY_BUS", 175),)),
]


@pytest.mark.parametrize(
    ("day", "next_day", "media", "expected"),
    [
        ("2025-03-05", "2025-03-06", None, WEEKDAY_DAY),  # Wednesday, contactless
        ("2025-03-05", "2025-03-06", "OYSTER", WEEKDAY_DAY),
        ("2025-03-08", "2025-03-09", None, OFF_PEAK_DAY),  # Saturday
        ("2025-12-25", "2025-12-26", None, OFF_PEAK_DAY),  # a bank holiday
    ],
)
def test_an_adults_day_of_mixed_travel_costs_what_it_did_before_concessions(
    london: FareData,
    day: str,
    next_day: str,
    media: str | None,
    expected: list[tuple[int, int, tuple[tuple[str, int], ...]]],
) -> None:
    journeys = price_card(london, mixed_day(day, next_day, media=media))
    assert summary(journeys) == expected
    assert sum(j.charge.amount_minor for j in journeys) == 890
    # Every adult leg is priced alone at its own fare: the reference is the adult fare.
    assert all(leg.reference_fare == leg.standalone_fare for j in journeys for leg in j.legs)


def test_an_adults_week_of_buses_at_every_hour_reaches_the_same_caps(london: FareData) -> None:
    taps = [bus(f"2025-03-{d:02d} {h:02d}:00") for d in range(3, 10) for h in (6, 8, 10, 12, 23)]
    journeys = price_card(london, taps)
    assert sum(j.charge.amount_minor for j in journeys) == 2470
    assert sum(j.amount_before_caps.amount_minor for j in journeys) == 35 * 175
    assert {c.cap_id for j in journeys for c in j.caps} == {"DAILY_BUS", "WEEKLY_BUS"}


def test_adults_pay_175_for_a_bus_at_any_hour_under_either_bus_product(london: FareData) -> None:
    assert one_leg(london, [bus("2025-03-05 08:00")]) == (175, "BUS_SINGLE_FULLFARE", 175, 175)
    assert one_leg(london, [bus("2025-03-05 10:00")]) == (175, "BUS_SINGLE", 175, 175)


# --- seniors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2025-03-05 10:00", (0, "BUS_SINGLE", 0, 175)),  # Wednesday, after 09:30
        ("2025-03-05 09:30", (0, "BUS_SINGLE", 0, 175)),
        ("2025-03-05 08:00", (175, "BUS_SINGLE_FULLFARE", 175, 175)),  # before 09:30
        ("2025-03-05 09:29", (175, "BUS_SINGLE_FULLFARE", 175, 175)),
        ("2025-03-05 22:59", (0, "BUS_SINGLE", 0, 175)),
        ("2025-03-05 23:00", (175, "BUS_SINGLE_FULLFARE", 175, 175)),  # from 23:00
        ("2025-03-08 07:00", (0, "BUS_SINGLE", 0, 175)),  # Saturday: all day
        ("2025-03-09 23:30", (0, "BUS_SINGLE", 0, 175)),  # Sunday night
        # By calendar date, not service day: 01:00 Saturday is Friday's service day but
        # Saturday's free travel; 00:30 Monday is Sunday's service day but a weekday.
        ("2025-03-08 01:00", (0, "BUS_SINGLE", 0, 175)),
        ("2025-03-10 00:30", (175, "BUS_SINGLE_FULLFARE", 175, 175)),
        # A bank holiday is a weekday for the concession, as the scheme funds it.
        ("2025-12-25 10:00", (0, "BUS_SINGLE", 0, 175)),
        ("2025-12-25 08:00", (175, "BUS_SINGLE_FULLFARE", 175, 175)),
    ],
)
def test_a_senior_bus_pass_is_free_0930_to_2300_on_weekdays_and_all_day_at_weekends(
    london: FareData, when: str, expected: tuple[int, str, int, int]
) -> None:
    assert one_leg(london, [bus(when, category="SENIOR")]) == expected


def test_a_senior_pays_the_adult_rail_fare(london: FareData) -> None:
    peak = trip("2025-03-05 08:00", "CMD", "2025-03-05 08:20", "OXC", category="SENIOR")
    off_peak = trip("2025-03-05 10:00", "OXC", "2025-03-05 10:20", "KGX", category="SENIOR")
    assert one_leg(london, peak) == (350, "Z12_PEAK", 350, 350)
    assert one_leg(london, off_peak) == (280, "Z1_OFFPEAK", 280, 280)
    entry_only = [tap("2025-03-05 10:00", "CMD", "entry", category="SENIOR")]
    assert one_leg(london, entry_only) == (940, "RAIL_MAX", 940, 940)


def test_a_senior_hopper_after_a_paid_early_bus_is_free(
    london: FareData,
) -> None:
    taps = [
        bus("2025-03-05 09:15", category="SENIOR"),
        bus("2025-03-05 09:45", "BUS_B1", "BUS_390", category="SENIOR"),
    ]
    [journey] = price_card(london, taps)
    assert journey.charge == Money(175, "GBP")
    legs = [
        (leg.fare_product_id, leg.fare, leg.standalone_fare, leg.reference_fare)
        for leg in journey.legs
    ]
    fare, free = Money(175, "GBP"), Money(0, "GBP")
    assert legs == [
        ("BUS_SINGLE_FULLFARE", fare, fare, fare),
        ("BUS_SINGLE", free, free, fare),  # the Hopper leg: its own concession fare is 0
    ]


# --- youths ----------------------------------------------------------------------------------


def test_a_youth_pays_half_the_adult_rail_fare(london: FareData) -> None:
    peak = trip("2025-03-05 08:00", "CMD", "2025-03-05 08:20", "OXC", category="YOUTH")
    off_peak = trip("2025-03-05 10:00", "OXC", "2025-03-05 10:20", "KGX", category="YOUTH")
    zone_2 = trip("2025-03-05 17:00", "CMD", "2025-03-05 17:20", "BRX", category="YOUTH")
    assert one_leg(london, peak) == (175, "Z12_PEAK", 175, 350)
    assert one_leg(london, off_peak) == (140, "Z1_OFFPEAK", 140, 280)
    assert one_leg(london, zone_2) == (105, "Z2_PEAK", 105, 210)
    entry_only = [tap("2025-03-05 10:00", "CMD", "entry", category="YOUTH")]
    assert one_leg(london, entry_only) == (470, "RAIL_MAX", 470, 940)


def test_a_youth_pays_the_adult_bus_fare_at_every_hour(london: FareData) -> None:
    assert one_leg(london, [bus("2025-03-05 08:00", category="YOUTH")]) == (
        175,
        "BUS_SINGLE_FULLFARE",
        175,
        175,
    )
    assert one_leg(london, [bus("2025-03-05 10:00", category="YOUTH")]) == (
        175,
        "BUS_SINGLE",
        175,
        175,
    )


def test_every_product_is_sold_to_every_rider_category(london: FareData) -> None:
    for product in london.fare_products:
        sold = {row.rider_category_id for row in london.products(product)}
        assert sold == {"ADULT", "SENIOR", "YOUTH"}, product
    assert london.default_rider_category_id == "ADULT"
