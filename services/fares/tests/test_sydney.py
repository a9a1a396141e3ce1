"""Opal (examples/feeds/sydney) against its published figures: distance bands, caps by
day type with public holidays, the 04:00 Opal day, peak and off-peak default (maximum)
fares, a join window of its own, and the discount between modes (see the feed's README)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearway.events.v1 import events_pb2
from clearway.money import Money
from services.fares.domain import (
    FareCatalog,
    FareData,
    Tap,
    TapKind,
    caps_progress,
    load_fare_data,
    price_card,
)
from services.fares.service_layer.repricing import BatchPricing, CardState

from .conftest import EXAMPLE_FEEDS
from .taps import tap

SYDNEY = ZoneInfo("Australia/Sydney")


@pytest.fixture(scope="module")
def opal() -> FareData:
    return load_fare_data(EXAMPLE_FEEDS / "sydney")


def ride(when_in: str, a: str, when_out: str, b: str, card: str = "opal-1") -> list[Tap]:
    """A gate-to-gate train trip (no route: the stations say RAIL)."""
    return [
        tap(when_in, a, "entry", card=card, tz=SYDNEY),
        tap(when_out, b, "exit", card=card, tz=SYDNEY),
    ]


def bus(when_in: str, a: str, when_out: str, b: str, route: str = "BUS_333") -> list[Tap]:
    """A bus trip: tap on and tap off with the route."""
    return [
        tap(when_in, a, "entry", card="opal-1", tz=SYDNEY, route=route),
        tap(when_out, b, "exit", card="opal-1", tz=SYDNEY, route=route),
    ]


def aud(cents: int) -> Money:
    return Money(cents, "AUD")


@pytest.mark.parametrize(
    ("a", "b", "km", "peak", "off_peak"),
    [
        ("CEN", "RED", 1310, 400, 280),  # 0-10 km
        ("CEN", "STR", 11730, 497, 347),  # 10-20 km
        ("CEN", "PAR", 23200, 572, 400),  # 20-35 km
        ("TWH", "CRO", 38010, 765, 535),  # 35-65 km: Cronulla to the CBD, as published
        ("PEN", "CRO", 87280, 984, 688),  # 65+ km
    ],
)
def test_train_fare_is_the_band_of_the_track_distance_peak_or_off_peak(
    opal: FareData, a: str, b: str, km: int, peak: int, off_peak: int
) -> None:
    # Monday 1 July 2024: 08:00 is peak, 11:00 is off-peak.
    [at_peak] = price_card(opal, ride("2024-07-01 08:00", a, "2024-07-01 08:50", b))
    [later] = price_card(opal, ride("2024-07-01 11:00", a, "2024-07-01 11:50", b))
    assert at_peak.legs[0].distance_m == km
    assert at_peak.charge == aud(peak)
    assert later.charge == aud(off_peak)
    assert at_peak.legs[0].fare_product_id is not None
    assert at_peak.legs[0].fare_product_id.endswith("_PEAK")


def test_a_band_holds_its_lower_bound(opal: FareData) -> None:
    # Exactly 10.42 km (Redfern-Strathfield) is 10-20 km; 4.52 km (Town Hall-Redfern) 0-10.
    [j10] = price_card(opal, ride("2024-07-01 11:00", "RED", "2024-07-01 11:20", "STR"))
    [j4] = price_card(opal, ride("2024-07-01 11:00", "TWH", "2024-07-01 11:20", "RED"))
    assert (j10.charge, j4.charge) == (aud(347), aud(280))


def test_bus_bands_use_the_straight_line_between_the_stops(opal: FareData) -> None:
    near = price_card(opal, bus("2024-07-01 08:00", "BJ_BUS", "2024-07-01 08:10", "BB_BUS"))
    mid = price_card(opal, bus("2024-07-01 08:00", "CQ_BUS", "2024-07-01 08:30", "BB_BUS"))
    far = price_card(
        opal, bus("2024-07-01 11:00", "PAR_BUS", "2024-07-01 11:25", "CH_BUS", "BUS_PARRA_CH")
    )
    assert [j.legs[0].fare_product_id for j in (*near, *mid, *far)] == [
        "BUS_B1_PEAK",
        "BUS_B2_PEAK",
        "BUS_B3_OFFPEAK",
    ]
    assert [j.charge for j in (*near, *mid, *far)] == [aud(320), aud(415), aud(373)]


def test_friday_and_public_holidays_are_off_peak_all_day(opal: FareData) -> None:
    friday = price_card(opal, ride("2024-07-05 08:00", "TWH", "2024-07-05 08:50", "CRO"))
    labour_day = price_card(opal, ride("2024-10-07 08:00", "TWH", "2024-10-07 08:50", "CRO"))
    monday_after = price_card(opal, ride("2024-10-14 08:00", "TWH", "2024-10-14 08:50", "CRO"))
    assert [j.charge for j in (*friday, *labour_day, *monday_after)] == [
        aud(535),
        aud(535),
        aud(765),
    ]


def test_daily_cap_is_18_70_monday_to_thursday(opal: FareData) -> None:
    taps = [
        *ride("2024-07-04 07:00", "PEN", "2024-07-04 08:40", "CRO"),
        *ride("2024-07-04 16:00", "CRO", "2024-07-04 17:40", "PEN"),
        *ride("2024-07-04 19:30", "PEN", "2024-07-04 20:10", "PAR"),
    ]
    journeys = price_card(opal, taps)
    assert [j.charge for j in journeys] == [aud(984), aud(886), aud(0)]
    assert [c.cap_id for c in journeys[1].caps] == ["DAILY_MON_THU"]
    assert journeys[1].caps[0].saved == aud(98)
    assert sum(j.charge.amount_minor for j in journeys) == 1870


def test_daily_cap_is_9_35_friday_to_sunday(opal: FareData) -> None:
    taps = [
        *ride("2024-07-05 08:00", "PEN", "2024-07-05 09:40", "CRO"),
        *ride("2024-07-05 16:00", "CRO", "2024-07-05 17:40", "PEN"),
    ]
    journeys = price_card(opal, taps)
    assert [j.charge for j in journeys] == [aud(688), aud(247)]
    assert [c.cap_id for c in journeys[1].caps] == ["DAILY_FRI_SUN"]


def test_a_monday_to_thursday_public_holiday_takes_the_friday_to_sunday_cap(
    opal: FareData,
) -> None:
    taps = [
        *ride("2024-10-07 08:00", "PEN", "2024-10-07 09:40", "CRO"),  # Labour Day
        *ride("2024-10-07 16:00", "CRO", "2024-10-07 17:40", "PEN"),
        *ride("2024-10-08 08:00", "PEN", "2024-10-08 09:40", "CRO"),  # an ordinary Tuesday
        *ride("2024-10-08 16:00", "CRO", "2024-10-08 17:40", "PEN"),
    ]
    journeys = price_card(opal, taps)
    assert [j.charge for j in journeys] == [aud(688), aud(247), aud(984), aud(886)]
    assert [c.cap_id for j in journeys for c in j.caps] == ["DAILY_FRI_SUN", "DAILY_MON_THU"]


def test_a_trip_after_midnight_counts_on_the_opal_day_it_belongs_to(opal: FareData) -> None:
    # Sunday 7 July 2024, 20:00, then 01:00 on Monday 8 July: still Sunday's Opal day (until
    # 04:00), so Sunday's A$9.35 cap; the Monday 08:00 trip starts Monday's A$18.70 cap.
    taps = [
        *ride("2024-07-07 20:00", "PEN", "2024-07-07 21:40", "CRO"),
        *ride("2024-07-08 01:00", "CRO", "2024-07-08 02:40", "PEN"),
        *ride("2024-07-08 08:00", "PEN", "2024-07-08 09:40", "CRO"),
    ]
    journeys = price_card(opal, taps)
    assert [j.service_day for j in journeys] == [
        date(2024, 7, 7),
        date(2024, 7, 7),
        date(2024, 7, 8),
    ]
    assert [j.charge for j in journeys] == [aud(688), aud(247), aud(984)]
    assert [c.cap_id for c in journeys[1].caps] == ["DAILY_FRI_SUN"]


def test_weekly_cap_of_50_counts_both_day_types(opal: FareData) -> None:
    # Monday to Thursday at the A$18.70 cap: 74.80 > 50, so Wednesday stops at 50.00.
    taps = [
        t
        for day in ("2024-07-01", "2024-07-02", "2024-07-03", "2024-07-04")
        for t in (
            *ride(f"{day} 07:00", "PEN", f"{day} 08:40", "CRO"),
            *ride(f"{day} 16:00", "CRO", f"{day} 17:40", "PEN"),
        )
    ]
    journeys = price_card(opal, taps)
    by_day: dict[date, int] = {}
    for j in journeys:
        by_day[j.service_day] = by_day.get(j.service_day, 0) + j.charge.amount_minor
    assert list(by_day.values()) == [1870, 1870, 1260, 0]
    assert sum(by_day.values()) == 5000


def test_default_fare_is_the_highest_fare_peak_or_off_peak(opal: FareData) -> None:
    peak = price_card(opal, [tap("2024-07-01 08:00", "CEN", "entry", tz=SYDNEY)])
    off_peak = price_card(opal, [tap("2024-07-01 11:00", "CEN", "entry", tz=SYDNEY)])
    saturday = price_card(opal, [tap("2024-07-06 08:00", "CEN", "entry", tz=SYDNEY)])
    bus_peak = price_card(
        opal, [tap("2024-07-01 08:00", "CQ_BUS", "entry", tz=SYDNEY, route="BUS_333")]
    )
    assert [j.charge for j in (*peak, *off_peak, *saturday, *bus_peak)] == [
        aud(984),
        aud(688),
        aud(688),
        aud(533),
    ]
    assert all(j.legs[0].maximum_fare for j in (*peak, *off_peak, *saturday, *bus_peak))
    assert [j.legs[0].fare_product_id for j in (*peak, *off_peak)] == [
        "TRAIN_B5_PEAK",
        "TRAIN_B5_OFFPEAK",
    ]


def test_a_tap_off_without_tap_on_pays_the_default_fare_of_its_time(opal: FareData) -> None:
    [j] = price_card(opal, [tap("2024-07-01 17:00", "PAR", "exit", tz=SYDNEY)])
    assert (j.charge, j.legs[0].fare_product_id) == (aud(984), "TRAIN_B5_PEAK")


def test_default_fares_never_take_a_day_past_its_cap(opal: FareData) -> None:
    taps = [
        *ride("2024-07-05 08:00", "PEN", "2024-07-05 09:40", "CRO"),
        tap("2024-07-05 12:00", "CRO", "entry", card="opal-1", tz=SYDNEY),
    ]
    journeys = price_card(opal, taps)
    assert [j.charge for j in journeys] == [aud(688), aud(247)]
    assert journeys[1].legs[0].maximum_fare
    assert [c.cap_id for c in journeys[1].caps] == ["DAILY_FRI_SUN"]


def test_train_to_train_within_60_minutes_is_one_fare_on_the_whole_distance(
    opal: FareData,
) -> None:
    within = price_card(
        opal,
        [
            *ride("2024-07-01 08:00", "CEN", "2024-07-01 08:20", "STR"),
            *ride("2024-07-01 08:40", "STR", "2024-07-01 09:00", "PAR"),
        ],
    )
    apart = price_card(
        opal,
        [
            *ride("2024-07-01 08:00", "CEN", "2024-07-01 08:20", "STR", card="opal-2"),
            *ride("2024-07-01 09:30", "STR", "2024-07-01 09:50", "PAR", card="opal-2"),
        ],
    )
    [joined] = within
    assert joined.charge == aud(572)  # Central-Parramatta 23.20 km at peak, not 4.97 + 4.97
    assert [leg.charge for leg in joined.legs] == [aud(289), aud(283)]  # shared by distance
    assert [j.charge for j in apart] == [aud(497), aud(497)]  # 70 min apart: two fares


def test_changing_mode_within_60_minutes_takes_2_dollars_off_never_below_zero(
    opal: FareData,
) -> None:
    taps = [
        *ride("2024-07-01 11:00", "CEN", "2024-07-01 11:15", "BJN"),
        *bus("2024-07-01 11:30", "BJ_BUS", "2024-07-01 11:40", "BB_BUS"),
    ]
    [journey] = price_card(opal, taps)
    rail, bus_leg = journey.legs
    assert (rail.charge, bus_leg.charge) == (aud(280), aud(24))  # 2.24 - 2.00
    assert bus_leg.transfer_product_id == "MODE_TRANSFER"
    assert bus_leg.standalone_fare == aud(224)
    assert journey.charge == aud(304)


def test_caps_progress_lists_only_the_day_cap_of_the_day_type(opal: FareData) -> None:
    taps = ride("2024-07-05 08:00", "PEN", "2024-07-05 09:40", "CRO")
    friday = caps_progress(opal, "opal-1", taps, datetime(2024, 7, 5, 20, tzinfo=SYDNEY))
    thursday = caps_progress(opal, "opal-1", [], datetime(2024, 7, 4, 20, tzinfo=SYDNEY))
    assert [(c.cap_id, c.spent, c.remaining) for c in friday.caps] == [
        ("DAILY_FRI_SUN", aud(688), aud(247)),
        ("WEEKLY", aud(688), aud(4312)),
    ]
    assert [c.cap_id for c in thursday.caps] == ["DAILY_MON_THU", "WEEKLY"]


SYDNEY_CATALOG = FareCatalog.of([load_fare_data(EXAMPLE_FEEDS / "sydney")])
LABOUR_DAY = datetime(2024, 10, 7, 4, 0, tzinfo=SYDNEY)  # a Monday public holiday


@st.composite
def opal_week(draw: st.DrawFn) -> list[Tap]:
    """Taps of up to three cards in the week of Labour Day, day and night (across the 04:00
    Opal day), rail and bus, with missing taps, in a random arrival order."""
    taps = []
    rail = ["CEN", "TWH", "STR", "PAR", "PEN", "CRO", "BJN"]
    buses = [("BJ_BUS", "BUS_333"), ("BB_BUS", "BUS_333"), ("CQ_BUS", "BUS_333")]
    for i in range(draw(st.integers(min_value=1, max_value=40))):
        card = draw(st.sampled_from(["card-a", "card-b", "card-c"]))
        minute = draw(st.integers(min_value=0, max_value=7 * 24 * 60 - 1))
        kind = draw(st.sampled_from([TapKind.ENTRY, TapKind.EXIT]))
        if draw(st.booleans()):
            stop, route = draw(st.sampled_from(rail)), None
        else:
            stop, route = draw(st.sampled_from(buses))
        at = LABOUR_DAY + timedelta(minutes=minute)
        taps.append(Tap(f"t{i:03d}", card, at, stop, kind, route_id=route))
    return draw(st.permutations(taps))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(taps=opal_week())
def test_resuming_publishes_what_repricing_the_whole_opal_week_publishes(
    taps: list[Tap],
) -> None:
    def run(resume: bool) -> list[tuple[str, bytes]]:
        cards = {t.card_token: CardState(t.card_token, 0) for t in taps}
        pricing = BatchPricing(SYDNEY_CATALOG, 0, None, None, cards, [], resume=resume)
        for tap_ in taps:
            pricing.record(tap_, new=True)
        pricing.closed_through = LABOUR_DAY + timedelta(days=8)
        pricing.sweep()
        return [(q.journey_id, q.body) for q in pricing.queued]

    resumed = run(True)
    assert resumed == run(False)
    latest = {jid: events_pb2.PricedJourney.FromString(body) for jid, body in resumed}
    live = {jid: j.charge.amount_minor for jid, j in latest.items() if j.legs}
    expected = {j.journey_id: j.charge.amount_minor for j in price_card(SYDNEY_CATALOG, taps)}
    assert live == expected
