"""Caps progress on the London example feed, re-priced by the engine itself (pure).

The feed's caps (examples/feeds/london/clearway_caps.txt), for an ADULT card:
DAILY_Z12 8.90 and DAILY_BUS 5.25 (any medium), WEEKLY_Z12 44.70 and WEEKLY_BUS 24.70
(CONTACTLESS, the feed's default medium). Monday 3 March 2025 and Tuesday 4 March 2025:

  Mon 08:00 KGX-OXC  Z1 peak       2.90   day Z12 2.90
  Mon 17:00 OXC-CMD  Z1-2 peak     3.50   day Z12 6.40               week Z12  6.40
  Tue 08:00 KGX-OXC  Z1 peak       2.90   day Z12 2.90
  Tue 09:00 bus 73   bus (full)    1.75   day Z12 4.65, bus 1.75
  Tue 12:00 OXC-VIC  Z1 off-peak   2.80   day Z12 7.45
  Tue 17:00 VIC-BRX  Z1-2 peak     3.50 -> capped at 1.45: day Z12 8.90  week Z12 15.30
  Tue 19:30 KGX      entry, no exit (pending until 21:30, then a maximum fare that
                     counts to no cap)
"""

from __future__ import annotations

import pytest

from services.fares.app import DEFAULT_FEED, load_catalog
from services.fares.domain import (
    CapPeriod,
    FareCatalog,
    PricingStart,
    cap_spend,
    caps_progress,
    price_card,
    price_card_from,
)
from services.fares.tests.taps import at, bus, tap, trip


@pytest.fixture(scope="module")
def london() -> FareCatalog:
    return load_catalog([DEFAULT_FEED])


def two_days(**kw: object) -> list:
    return [
        *trip("2025-03-03 08:00", "KGX", "2025-03-03 08:20", "OXC", **kw),
        *trip("2025-03-03 17:00", "OXC", "2025-03-03 17:30", "CMD", **kw),
        *trip("2025-03-04 08:00", "KGX", "2025-03-04 08:20", "OXC", **kw),
        bus("2025-03-04 09:00", **kw),
        *trip("2025-03-04 12:00", "OXC", "2025-03-04 12:20", "VIC", **kw),
        *trip("2025-03-04 17:00", "VIC", "2025-03-04 17:30", "BRX", **kw),
        tap("2025-03-04 19:30", "KGX", "entry", **kw),  # type: ignore[arg-type]
    ]


def figures(progress) -> list[tuple[str, str, str, int, int, int]]:
    return [
        (
            c.cap_id,
            c.period.value,
            c.period_start.isoformat(),
            c.amount.amount_minor,
            c.spent.amount_minor,
            c.remaining.amount_minor,
        )
        for c in progress.caps
    ]


def test_monday_evening_shows_6_40_of_the_8_90_day_cap(london):
    progress = caps_progress(london, "card-1", two_days(), at("2025-03-03 20:00"))
    assert (progress.service_day.isoformat(), progress.week_start.isoformat()) == (
        "2025-03-03",
        "2025-03-03",
    )
    assert (progress.rider_category_id, progress.fare_media_id) == ("ADULT", "CONTACTLESS")
    assert figures(progress) == [
        ("DAILY_Z12", "day", "2025-03-03", 890, 640, 250),
        ("DAILY_BUS", "day", "2025-03-03", 525, 0, 525),
        ("WEEKLY_Z12", "week", "2025-03-03", 4470, 640, 3830),
        ("WEEKLY_BUS", "week", "2025-03-03", 2470, 0, 2470),
    ]


def test_tuesday_evening_has_reached_the_day_cap_and_the_week_counts_both_days(london):
    progress = caps_progress(london, "card-1", two_days(), at("2025-03-04 20:00"))
    assert figures(progress) == [
        ("DAILY_Z12", "day", "2025-03-04", 890, 890, 0),
        ("DAILY_BUS", "day", "2025-03-04", 525, 175, 350),
        ("WEEKLY_Z12", "week", "2025-03-03", 4470, 1530, 2940),
        ("WEEKLY_BUS", "week", "2025-03-03", 2470, 175, 2295),
    ]


def test_spend_is_what_the_engine_charged(london):
    taps = two_days()
    charged = sum(
        j.charge.amount_minor for j in price_card(london, taps, as_of=at("2025-03-04 20:00"))
    )
    progress = caps_progress(london, "card-1", taps, at("2025-03-04 20:00"))
    week = {c.cap_id: c.spent.amount_minor for c in progress.caps if c.period is CapPeriod.WEEK}
    assert charged == week["WEEKLY_Z12"] == 1530  # every leg here is a Zones 1-2 product


def test_only_taps_up_to_the_instant_count(london):
    progress = caps_progress(london, "card-1", two_days(), at("2025-03-04 10:00"))
    assert figures(progress)[:2] == [
        ("DAILY_Z12", "day", "2025-03-04", 890, 465, 425),
        ("DAILY_BUS", "day", "2025-03-04", 525, 175, 350),
    ]


def test_an_incomplete_journeys_maximum_fare_counts_to_no_cap(london):
    # At 22:00 the 19:30 entry is incomplete (9.40), which London does not count to caps.
    late = caps_progress(london, "card-1", two_days(), at("2025-03-04 22:00"))
    evening = caps_progress(london, "card-1", two_days(), at("2025-03-04 20:00"))
    assert figures(late) == figures(evening)


def test_next_monday_starts_a_new_week_at_zero(london):
    progress = caps_progress(london, "card-1", two_days(), at("2025-03-10 08:00"))
    assert [
        (c.cap_id, c.period_start.isoformat(), c.spent.amount_minor) for c in progress.caps
    ] == [
        ("DAILY_Z12", "2025-03-10", 0),
        ("DAILY_BUS", "2025-03-10", 0),
        ("WEEKLY_Z12", "2025-03-10", 0),
        ("WEEKLY_BUS", "2025-03-10", 0),
    ]


def test_before_the_day_boundary_is_still_the_previous_service_day(london):
    # 02:00 on Wednesday is Tuesday's service day (it starts at 04:30).
    progress = caps_progress(london, "card-1", two_days(), at("2025-03-05 02:00"))
    assert progress.service_day.isoformat() == "2025-03-04"
    assert figures(progress)[0] == ("DAILY_Z12", "day", "2025-03-04", 890, 890, 0)


def test_a_card_with_no_taps_gets_the_default_categorys_caps_at_zero(london):
    progress = caps_progress(london, "card-1", [], at("2025-03-04 20:00"))
    assert (progress.rider_category_id, progress.fare_media_id) == ("ADULT", "CONTACTLESS")
    assert [(c.cap_id, c.spent.amount_minor, c.remaining.amount_minor) for c in progress.caps] == [
        ("DAILY_Z12", 0, 890),
        ("DAILY_BUS", 0, 525),
        ("WEEKLY_Z12", 0, 4470),
        ("WEEKLY_BUS", 0, 2470),
    ]


def test_an_oyster_card_has_no_contactless_weekly_caps(london):
    progress = caps_progress(london, "card-1", two_days(media="OYSTER"), at("2025-03-04 20:00"))
    assert figures(progress) == [
        ("DAILY_Z12", "day", "2025-03-04", 890, 890, 0),
        ("DAILY_BUS", "day", "2025-03-04", 525, 175, 350),
    ]


def test_a_senior_card_has_no_caps(london):
    progress = caps_progress(london, "card-1", two_days(category="SENIOR"), at("2025-03-04 20:00"))
    assert progress.rider_category_id == "SENIOR"
    assert progress.caps == ()


def test_cap_spend_is_what_the_engine_records_before_the_next_journey(london):
    before = two_days()
    wednesday = trip("2025-03-05 08:00", "KGX", "2025-03-05 08:20", "OXC")
    priced = price_card_from(
        london, "card-1", before + wednesday, as_of=None, start=PricingStart.of(before)
    )
    assert priced.journeys[-1].legs[0].entry_at == wednesday[0].tapped_at
    assert cap_spend(london, "card-1", before, as_of=None) == priced.spent_before[-1]
