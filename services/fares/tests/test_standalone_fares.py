"""Every priced leg carries its standalone fare (priced alone for the traveller) and its
reference fare (priced alone for the default rider category): what settlement weighs and
what a concession forgoes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from clearway.money import Money
from services.fares.adapters.convert import journey_pb, leg_pb
from services.fares.domain import FareData, PricedJourney, load_fare_data, price_card
from services.fares.domain.revision import canonical_content, fingerprint
from services.fares.entrypoints.cli import journey_json, journey_record

from .conftest import EXAMPLE_FEEDS
from .taps import bus, tap, trip
from .test_rules import feed


def gbp(pence: int) -> Money:
    return Money(pence, "GBP")


def alone(journeys: list[PricedJourney]) -> list[tuple[int, int, int, int]]:
    """(fare, charge, standalone, reference) of every leg, in minor units."""
    result = []
    for journey in journeys:
        for leg in journey.legs:
            assert leg.charge is not None
            assert leg.standalone_fare is not None and leg.reference_fare is not None
            result.append(
                (
                    leg.fare.amount_minor,
                    leg.charge.amount_minor,
                    leg.standalone_fare.amount_minor,
                    leg.reference_fare.amount_minor,
                )
            )
    return result


@pytest.fixture(scope="module")
def london() -> FareData:
    return load_fare_data(EXAMPLE_FEEDS / "london")


# Adults only (the default category) on a small network with categories, media and joins.
CATEGORIES = (
    "rider_category_id,rider_category_name,is_default_fare_category\n"
    "ADULT,Adult,1\nCHILD,Child,0\nSTAFF,Staff,0\n"
)
MEDIA = "fare_media_id,fare_media_name,fare_media_type\nCARD,Card,2\nPHONE,Phone,4\n"
PRODUCTS = (
    "fare_product_id,rider_category_id,fare_media_id,amount,currency\n"
    "P1,ADULT,CARD,1.00,GBP\nP1,ADULT,PHONE,0.90,GBP\nP1,CHILD,,0.50,GBP\n"
    "P3,ADULT,CARD,3.01,GBP\nP3,ADULT,PHONE,2.81,GBP\nP3,CHILD,,1.51,GBP\n"
)
JOINED = {
    "rider_categories__txt": CATEGORIES,
    "fare_media__txt": MEDIA,
    "fare_products__txt": PRODUCTS,
    "fare_leg_rules__txt": "network_id,from_area_id,to_area_id,fare_product_id\n"
    "N1,ZA,ZA,P1\nN1,ZB,ZB,P1\nN1,ZA,ZB,P3\n",
    "fare_leg_join_rules__txt": "from_network_id,to_network_id\nN1,N1\n",
    "clearway_distances__txt": "from_stop_id,to_stop_id,distance_m\nS1,S2,1000\nS2,S3,2000\n",
}


def joined_trip(**kw: object) -> list:  # type: ignore[type-arg]
    return [
        *trip("2025-06-02 10:00", "S1", "2025-06-02 10:20", "S2", route="R1", **kw),
        *trip("2025-06-02 10:25", "S2", "2025-06-02 10:50", "S3", route="R1", **kw),
    ]


def test_a_default_category_leg_has_its_fare_as_standalone_and_reference(
    london: FareData,
) -> None:
    [j] = price_card(london, trip("2025-03-03 08:00", "CMD", "2025-03-03 08:20", "OXC"))
    assert alone([j]) == [(350, 350, 350, 350)]


def test_transfers_and_caps_lower_the_charge_not_the_standalone_fare(london: FareData) -> None:
    taps = [
        bus("2025-03-03 10:00"),
        bus("2025-03-03 10:30", "BUS_B1", "BUS_390"),  # Hopper: fare 0
        *[bus(f"2025-03-03 {h}:00") for h in (12, 14, 16, 18)],  # capped at 5.25
    ]
    legs = alone(price_card(london, taps))
    assert legs == [
        (175, 175, 175, 175),
        (0, 0, 175, 175),
        (175, 175, 175, 175),
        (175, 175, 175, 175),
        (175, 0, 175, 175),
        (175, 0, 175, 175),
    ]


def test_a_maximum_fare_is_the_standalone_fare_of_an_incomplete_leg(london: FareData) -> None:
    [j] = price_card(london, [tap("2025-03-03 10:00", "CMD", "entry")])
    assert alone([j]) == [(940, 940, 940, 940)]


def test_a_joined_fare_legs_standalone_and_reference_fares_are_split_like_its_charge(
    tmp_path: Path,
) -> None:
    data = load_fare_data(feed(tmp_path, **JOINED))
    [j] = price_card(data, joined_trip(category="CHILD", media="CARD"))
    legs = alone([j])
    # One fare leg S1 -> S3 (P3): child 1.51, adult on the same card 3.01, by distance.
    assert sum(leg[2] for leg in legs) == 151
    assert sum(leg[3] for leg in legs) == 301
    # By distance (1 km, then 2 km), to the penny: 151 -> 50.33 + 100.67, 301 -> 100.33 + 200.67.
    assert [leg.distance_m for leg in j.legs] == [1000, 2000]
    assert [leg[2] for leg in legs] == [50, 101]
    assert [leg[3] for leg in legs] == [100, 201]
    assert [leg[0] for leg in legs] == [50, 101]  # the charge is split the same way


def test_the_reference_fare_is_the_default_categorys_on_the_travellers_fare_media(
    tmp_path: Path,
) -> None:
    data = load_fare_data(feed(tmp_path, **JOINED))
    one = ("2025-06-02 10:00", "S1", "2025-06-02 10:20", "S2")
    child = price_card(data, trip(*one, route="R1", category="CHILD", media="PHONE"))
    assert alone(child) == [(50, 50, 50, 90)]
    adult = price_card(data, trip(*one, route="R1", media="PHONE"))
    assert alone(adult) == [(90, 90, 90, 90)]


def test_a_leg_with_no_fare_reason_has_zero_standalone_and_reference_fares(
    tmp_path: Path,
) -> None:
    data = load_fare_data(feed(tmp_path, **JOINED))
    one = ("2025-06-02 10:00", "S1", "2025-06-02 10:20", "S2")
    [j] = price_card(data, trip(*one, route="R1", category="STAFF"))
    assert j.no_fare_reason is not None and j.no_fare_reason.startswith("NO_PRODUCT")
    assert alone([j]) == [(0, 0, 0, 0)]  # the adult fare exists, but nothing was priced


def test_the_protobuf_leg_carries_both_fares_and_a_leg_built_by_hand_neither(
    london: FareData,
) -> None:
    [j] = price_card(london, [bus("2025-03-03 10:00"), bus("2025-03-03 10:30")])
    message = journey_pb(
        j,
        journey_id=j.journey_id,
        card_token=j.card_token,
        service_day=j.service_day.isoformat(),
        revision=1,
        charge=j.charge,
        delta=j.charge,
    )
    second = message.legs[1]
    assert (second.fare.amount_minor, second.charge.amount_minor) == (0, 0)
    assert (second.standalone_fare.amount_minor, second.standalone_fare.currency) == (175, "GBP")
    assert (second.reference_fare.amount_minor, second.reference_fare.currency) == (175, "GBP")
    bare = leg_pb(replace(j.legs[0], standalone_fare=None, reference_fare=None))
    assert not bare.HasField("standalone_fare") and not bare.HasField("reference_fare")


def test_standalone_and_reference_fares_are_not_in_the_revision_fingerprint(
    london: FareData,
) -> None:
    [j] = price_card(london, [bus("2025-03-03 10:00")])
    other = replace(
        j, legs=tuple(replace(leg, standalone_fare=None, reference_fare=gbp(1)) for leg in j.legs)
    )
    assert canonical_content(other) == canonical_content(j)
    assert fingerprint(other) == fingerprint(j)


def test_simulate_prints_both_fares_after_the_charge(london: FareData) -> None:
    [j] = price_card(london, [bus("2025-03-05 10:00", category="SENIOR")])
    line = journey_json(j)
    assert (
        '"charge":{"amount_minor":0,"currency":"GBP"},'
        '"standalone_fare":{"amount_minor":0,"currency":"GBP"},'
        '"reference_fare":{"amount_minor":175,"currency":"GBP"},"tap_ids":'
    ) in line
    assert json.loads(line) == journey_record(j)
