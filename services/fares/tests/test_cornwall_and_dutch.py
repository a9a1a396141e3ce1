"""Cross-operator caps (examples/feeds/cornwall) and Dutch-style distance fares (dutch)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import pytest

from clearway.money import Money
from services.fares.domain import FareData, load_fare_data, price_card, revise
from services.fares.domain.model import great_circle_m

from .conftest import EXAMPLE_FEEDS
from .taps import bus, tap

AMS = ZoneInfo("Europe/Amsterdam")


@pytest.fixture(scope="module")
def cornwall() -> FareData:
    return load_fare_data(EXAMPLE_FEEDS / "cornwall")


@pytest.fixture(scope="module")
def dutch() -> FareData:
    return load_fare_data(EXAMPLE_FEEDS / "dutch")


def eur(cents: int) -> Money:
    return Money(cents, "EUR")


def test_daily_cap_is_shared_across_operators(cornwall: FareData) -> None:
    taps = [
        bus("2025-06-02 08:00", "TRURO", "GOCK_U1"),
        bus("2025-06-02 10:00", "FALMOUTH", "FKRN_17"),
        bus("2025-06-02 13:00", "TRURO", "GOCK_U1"),
        bus("2025-06-02 17:00", "PENZANCE", "FKRN_17"),
    ]
    journeys = price_card(cornwall, taps)
    assert [j.legs[0].operator_id for j in journeys] == ["GOCK", "FKRN", "GOCK", "FKRN"]
    assert [j.charge.amount_minor for j in journeys] == [300, 300, 300, 0]
    assert sum(j.charge.amount_minor for j in journeys) == 900
    assert journeys[3].caps[0].cap_id == "DAY_ANY_BUS"
    assert journeys[3].caps[0].saved == Money(300, "GBP")


def test_cap_resets_on_the_next_service_day(cornwall: FareData) -> None:
    taps = [bus(f"2025-06-02 {h:02d}:00", "TRURO", "GOCK_U1") for h in (8, 10, 12, 14)]
    taps.append(bus("2025-06-03 08:00", "STIVES", "FKRN_17"))
    assert [j.charge.amount_minor for j in price_card(cornwall, taps)] == [300, 300, 300, 0, 300]


def dtrip(t_in: str, a: str, t_out: str, b: str, route: str) -> list:  # type: ignore[type-arg]
    return [tap(t_in, a, "entry", tz=AMS, route=route), tap(t_out, b, "exit", tz=AMS, route=route)]


def test_completed_leg_costs_base_plus_per_km_from_the_distance_table(dutch: FareData) -> None:
    [j] = price_card(dutch, dtrip("2025-06-02 08:00", "UT", "2025-06-02 08:15", "AMF", "SPR_UT_ZL"))
    # 1.08 + 22.3 km x 0.201 = 5.5623 -> 5.56
    assert j.charge == eur(556)
    assert j.legs[0].distance_m == 22300
    assert j.legs[0].operator_id == "TRAINNL"


def test_distance_falls_back_to_great_circle(dutch: FareData) -> None:
    [j] = price_card(
        dutch, dtrip("2025-06-02 09:00", "UT_NEUDE", "2025-06-02 09:10", "UT_UITHOF", "BUS_28")
    )
    a, b = dutch.stops["UT_NEUDE"], dutch.stops["UT_UITHOF"]
    assert a.lat and a.lon and b.lat and b.lon
    meters = great_circle_m(a.lat, a.lon, b.lat, b.lon)
    assert j.legs[0].distance_m == meters
    cents = (Decimal(108) + Decimal("20.1") * meters / 1000).quantize(Decimal(1), ROUND_HALF_UP)
    assert j.charge == eur(int(cents))


def test_no_check_out_keeps_the_check_in_deposit(dutch: FareData) -> None:
    [j] = price_card(dutch, [tap("2025-06-02 08:00", "UT", "entry", tz=AMS, route="SPR_UT_ZL")])
    assert j.incomplete and j.charge == eur(400)


def test_checking_in_again_without_checking_out_keeps_the_deposit(dutch: FareData) -> None:
    taps = [
        tap("2025-06-02 08:00", "UT", "entry", tz=AMS, route="SPR_UT_ZL"),
        *dtrip("2025-06-02 09:00", "UT", "2025-06-02 09:12", "UT_WKZ", "TRAM_22"),
    ]
    first, second = price_card(dutch, taps)
    assert first.charge == eur(400) and first.incomplete
    assert not second.incomplete and second.legs[0].transfer_rule_id is None


def test_no_second_base_fare_within_35_minutes_of_check_out(dutch: FareData) -> None:
    taps = [
        *dtrip("2025-06-02 08:00", "ZL", "2025-06-02 08:50", "AMF", "SPR_UT_ZL"),
        *dtrip("2025-06-02 09:25", "AMF", "2025-06-02 09:40", "UT", "SPR_UT_ZL"),
    ]
    [j] = price_card(dutch, taps)
    # 1.08 + 66.1 x 0.201 = 14.3661 -> 14.37; then 22.3 x 0.201 = 4.48 without base.
    assert [leg.fare.amount_minor for leg in j.legs] == [1437, 556 - 108]
    assert j.legs[1].transfer_product_id == "NO_SECOND_BASE"


def test_base_fare_is_charged_again_after_35_minutes(dutch: FareData) -> None:
    taps = [
        *dtrip("2025-06-02 08:00", "ZL", "2025-06-02 08:50", "AMF", "SPR_UT_ZL"),
        *dtrip("2025-06-02 09:26", "AMF", "2025-06-02 09:40", "UT", "SPR_UT_ZL"),
    ]
    assert [j.charge.amount_minor for j in price_card(dutch, taps)] == [1437, 556]


def test_check_out_without_check_in_is_reported_and_not_charged(dutch: FareData) -> None:
    [j] = price_card(dutch, [tap("2025-06-02 08:00", "UT", "exit", tz=AMS)])
    assert j.charge == eur(0) and j.incomplete
    assert j.no_fare_reason is not None and j.no_fare_reason.startswith("EXIT_WITHOUT_ENTRY")


def test_late_check_out_turns_the_deposit_into_the_fare(dutch: FareData) -> None:
    entry = tap("2025-06-02 08:00", "UT", "entry", tz=AMS, tap_id="d-in", route="SPR_UT_ZL")
    before = price_card(dutch, [entry])
    published = {r.journey_id: (r.revision, r.charge) for r in revise({}, before)}
    after = price_card(
        dutch, [entry, tap("2025-06-02 08:15", "AMF", "exit", tz=AMS, tap_id="d-out")]
    )
    [rev] = revise(published, after)
    assert (rev.revision, rev.charge, rev.delta) == (2, eur(556), eur(556 - 400))
