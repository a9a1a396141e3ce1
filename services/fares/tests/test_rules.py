"""GTFS Fares v2 matching semantics on small feeds built in each test."""

from __future__ import annotations

from pathlib import Path

from clearway.money import Money
from services.fares.domain import load_fare_data, price_card

from .taps import bus, tap, trip

BASE = {
    "agency.txt": "agency_id,agency_name,agency_url,agency_timezone\n"
    "A,Operator A,https://a.example,Europe/London\nB,Operator B,https://b.example,Europe/London\n",
    "stops.txt": "stop_id,stop_name,stop_lat,stop_lon\n"
    "S1,One,51.50,-0.10\nS2,Two,51.51,-0.11\nS3,Three,51.52,-0.12\nS4,Four,51.53,-0.13\n",
    "routes.txt": "route_id,agency_id,route_type,network_id\nR1,A,3,N1\nR2,B,3,N2\n",
    "areas.txt": "area_id\nZA\nZB\n",
    "stop_areas.txt": "area_id,stop_id\nZA,S1\nZA,S2\nZB,S3\nZB,S4\n",
}


def feed(tmp_path: Path, **files: str) -> Path:
    folder = tmp_path / "feed"
    folder.mkdir(exist_ok=True)
    for name, text in {**BASE, **{k.replace("__", "."): v for k, v in files.items()}}.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


PRODUCTS = "fare_product_id,amount,currency\nP1,1.00,GBP\nP2,2.00,GBP\nP3,3.00,GBP\nFREE,0.00,GBP\n"


def charges(data_path: Path, taps: list) -> list[int]:  # type: ignore[type-arg]
    return [j.charge.amount_minor for j in price_card(load_fare_data(data_path), taps)]


def test_with_rule_priority_an_empty_field_matches_everything_and_the_highest_priority_wins(
    tmp_path: Path,
) -> None:
    path = feed(
        tmp_path,
        fare_products__txt=PRODUCTS,
        fare_leg_rules__txt="leg_group_id,network_id,fare_product_id,rule_priority\n"
        "G,,P1,0\nG,N2,P2,1\n",
    )
    assert charges(path, [bus("2025-06-02 10:00", "S1", "R1")]) == [100]
    assert charges(path, [bus("2025-06-02 10:00", "S1", "R2")]) == [200]


def test_without_rule_priority_an_empty_network_means_every_network_not_listed(
    tmp_path: Path,
) -> None:
    path = feed(
        tmp_path,
        fare_products__txt=PRODUCTS,
        fare_leg_rules__txt="leg_group_id,network_id,from_area_id,fare_product_id\n"
        "G,,,P1\nG,N2,ZB,P2\n",
    )
    assert charges(path, [bus("2025-06-02 10:00", "S1", "R1")]) == [100]
    assert charges(path, [bus("2025-06-02 10:00", "S3", "R2")]) == [200]
    # N2 is listed, so the empty-network row does not apply; N2's row needs area ZB.
    [journey] = price_card(load_fare_data(path), [bus("2025-06-02 10:00", "S1", "R2")])
    assert journey.charge == Money(0, "GBP")
    assert journey.no_fare_reason is not None and journey.no_fare_reason.startswith("NO_LEG_RULE")


def test_route_networks_file_sets_the_network_of_a_route(tmp_path: Path) -> None:
    path = feed(
        tmp_path,
        routes__txt="route_id,agency_id,route_type\nR1,A,3\nR2,B,3\n",
        networks__txt="network_id,network_name\nN1,One\nN2,Two\n",
        route_networks__txt="network_id,route_id\nN2,R2\nN1,R1\n",
        fare_products__txt=PRODUCTS,
        fare_leg_rules__txt="network_id,fare_product_id\nN1,P1\nN2,P2\n",
    )
    assert charges(path, [bus("2025-06-02 10:00", "S1", "R2")]) == [200]


def test_transfer_type_2_charges_only_the_transfer_product(tmp_path: Path) -> None:
    path = feed(
        tmp_path,
        fare_products__txt=PRODUCTS,
        fare_leg_rules__txt="leg_group_id,network_id,fare_product_id\nG1,N1,P2\nG2,N2,P2\n",
        fare_transfer_rules__txt="from_leg_group_id,to_leg_group_id,duration_limit,"
        "duration_limit_type,fare_transfer_type,fare_product_id\nG1,G2,3600,1,2,P3\n",
    )
    taps = [bus("2025-06-02 10:00", "S1", "R1"), bus("2025-06-02 10:30", "S3", "R2")]
    [journey] = price_card(load_fare_data(path), taps)
    assert journey.charge == Money(300, "GBP")
    assert [leg.operator_id for leg in journey.legs] == ["A", "B"]


def test_transfer_rules_are_directional(tmp_path: Path) -> None:
    path = feed(
        tmp_path,
        fare_products__txt=PRODUCTS,
        fare_leg_rules__txt="leg_group_id,network_id,fare_product_id\nG1,N1,P2\nG2,N2,P2\n",
        fare_transfer_rules__txt="from_leg_group_id,to_leg_group_id,fare_transfer_type\nG1,G2,0\n",
    )
    there = [bus("2025-06-02 10:00", "S1", "R1"), bus("2025-06-02 10:30", "S3", "R2")]
    back = [bus("2025-06-02 10:00", "S3", "R2"), bus("2025-06-02 10:30", "S1", "R1")]
    assert charges(path, there) == [200]
    assert charges(path, back) == [200, 200]


def test_transfer_count_limits_transfers_within_one_leg_group(tmp_path: Path) -> None:
    path = feed(
        tmp_path,
        fare_products__txt=PRODUCTS,
        fare_leg_rules__txt="leg_group_id,network_id,fare_product_id\nG1,N1,P2\n",
        fare_transfer_rules__txt="from_leg_group_id,to_leg_group_id,transfer_count,"
        "fare_transfer_type\nG1,G1,1,0\n",
    )
    taps = [bus(f"2025-06-02 10:{m:02d}", "S1", "R1") for m in (0, 10, 20)]
    assert charges(path, taps) == [200, 200]


def test_duration_limit_type_2_runs_from_the_previous_exit(tmp_path: Path) -> None:
    path = feed(
        tmp_path,
        fare_products__txt=PRODUCTS,
        fare_leg_rules__txt="leg_group_id,network_id,fare_product_id\nG1,N1,P2\n",
        fare_transfer_rules__txt="from_leg_group_id,to_leg_group_id,transfer_count,"
        "duration_limit,duration_limit_type,fare_transfer_type\nG1,G1,-1,600,2,0\n",
    )
    ok = [
        *trip("2025-06-02 10:00", "S1", "2025-06-02 11:00", "S2", route="R1"),
        *trip("2025-06-02 11:10", "S2", "2025-06-02 11:30", "S1", route="R1"),
    ]
    late = [
        *trip("2025-06-02 10:00", "S1", "2025-06-02 11:00", "S2", route="R1"),
        *trip("2025-06-02 11:11", "S2", "2025-06-02 11:30", "S1", route="R1"),
    ]
    assert charges(path, ok) == [200]
    assert charges(path, late) == [200, 200]


def test_join_rule_prices_two_legs_as_one_from_first_entry_to_last_exit(tmp_path: Path) -> None:
    path = feed(
        tmp_path,
        fare_products__txt=PRODUCTS,
        fare_leg_rules__txt="network_id,from_area_id,to_area_id,fare_product_id\n"
        "N1,ZA,ZA,P1\nN1,ZB,ZB,P1\nN1,ZA,ZB,P3\n",
        fare_leg_join_rules__txt="from_network_id,to_network_id,from_stop_id,to_stop_id\n"
        "N1,N1,S2,S2\n",
    )
    taps = [
        *trip("2025-06-02 10:00", "S1", "2025-06-02 10:20", "S2", route="R1"),
        *trip("2025-06-02 10:25", "S2", "2025-06-02 10:50", "S3", route="R1"),
    ]
    [journey] = price_card(load_fare_data(path), taps)
    assert journey.charge == Money(300, "GBP")
    assert len(journey.legs) == 2
    assert sum(leg.fare.amount_minor for leg in journey.legs) == 300
    assert {leg.fare_product_id for leg in journey.legs} == {"P3"}
    # Without the join stop, the two legs are priced separately.
    other = [
        *trip("2025-06-02 10:00", "S1", "2025-06-02 10:20", "S2", route="R1"),
        *trip("2025-06-02 10:25", "S3", "2025-06-02 10:50", "S4", route="R1"),
    ]
    assert charges(path, other) == [100, 100]


def test_exit_without_entry_is_ignored_with_a_reason_by_default(tmp_path: Path) -> None:
    path = feed(
        tmp_path,
        fare_products__txt=PRODUCTS,
        fare_leg_rules__txt="network_id,fare_product_id\nN1,P1\n",
    )
    [journey] = price_card(load_fare_data(path), [tap("2025-06-02 10:00", "S1", "exit")])
    assert journey.charge == Money(0, "GBP")
    assert journey.no_fare_reason is not None
    assert journey.no_fare_reason.startswith("EXIT_WITHOUT_ENTRY")


def test_caps_are_per_card(tmp_path: Path) -> None:
    path = feed(
        tmp_path,
        fare_products__txt=PRODUCTS,
        fare_leg_rules__txt="network_id,fare_product_id\nN1,P2\n",
        clearway_caps__txt="cap_id,cap_period,amount,currency\nDAY,day,3.00,GBP\n",
        clearway_cap_products__txt="cap_id,fare_product_id\nDAY,P2\n",
    )
    taps = [bus(f"2025-06-02 1{h}:00", "S1", "R1", card=c) for h in (0, 1) for c in ("x", "y")]
    journeys = price_card(load_fare_data(path), taps)
    by_card = {c: [j.charge.amount_minor for j in journeys if j.card_token == c] for c in "xy"}
    assert by_card == {"x": [200, 100], "y": [200, 100]}


def test_incomplete_leg_without_a_maximum_fare_uses_a_flat_rule_or_reports(tmp_path: Path) -> None:
    flat = feed(
        tmp_path,
        fare_products__txt=PRODUCTS,
        fare_leg_rules__txt="network_id,fare_product_id\nN1,P1\n",
    )
    assert charges(flat, [tap("2025-06-02 10:00", "S1", "entry", route="R1")]) == [100]
    zonal = feed(
        tmp_path,
        fare_products__txt=PRODUCTS,
        fare_leg_rules__txt="network_id,from_area_id,to_area_id,fare_product_id\nN1,ZA,ZB,P1\n",
    )
    [journey] = price_card(
        load_fare_data(zonal), [tap("2025-06-02 10:00", "S1", "entry", route="R1")]
    )
    assert journey.no_fare_reason is not None
    assert journey.no_fare_reason.startswith("NO_MAXIMUM_FARE")


def test_maximum_fares_count_to_caps_when_the_feed_says_so(tmp_path: Path) -> None:
    common = {
        "fare_products__txt": PRODUCTS + "MAX,5.00,GBP\n",
        "fare_leg_rules__txt": "network_id,from_area_id,to_area_id,fare_product_id\nN1,ZA,ZB,P2\n",
        "clearway_maximum_fares__txt": "network_id,area_id,fare_product_id\nN1,,MAX\n",
        "clearway_caps__txt": "cap_id,cap_period,amount,currency\nDAY,day,6.00,GBP\n",
        "clearway_cap_products__txt": "cap_id,fare_product_id\nDAY,P2\nDAY,MAX\n",
    }
    taps = [
        tap("2025-06-02 08:00", "S1", "entry", route="R1"),
        *trip("2025-06-02 10:00", "S1", "2025-06-02 10:20", "S3", route="R1"),
        *trip("2025-06-02 11:00", "S1", "2025-06-02 11:20", "S3", route="R1"),
    ]
    not_counted = feed(tmp_path, **common)
    assert charges(not_counted, taps) == [500, 200, 200]
    counted = feed(
        tmp_path,
        **common,
        clearway_fare_settings__txt="setting,value\nmaximum_fares_count_to_caps,1\n",
    )
    assert charges(counted, taps) == [500, 100, 0]


def test_the_most_specific_maximum_fare_row_wins(tmp_path: Path) -> None:
    path = feed(
        tmp_path,
        fare_products__txt=PRODUCTS,
        fare_leg_rules__txt="network_id,from_area_id,to_area_id,fare_product_id\nN1,ZA,ZB,P1\n",
        clearway_maximum_fares__txt="network_id,area_id,fare_product_id,incomplete_after\n"
        ",,P1,\nN1,,P2,\nN1,ZB,P3,600\n",
    )
    assert charges(path, [tap("2025-06-02 08:00", "S1", "entry", route="R1")]) == [200]
    assert charges(path, [tap("2025-06-02 08:00", "S3", "entry", route="R1")]) == [300]
    assert charges(path, [tap("2025-06-02 08:00", "S3", "entry", route="R2")]) == [100]
    # The ZB row's own limit: an exit 11 minutes later no longer completes the leg.
    late = [
        tap("2025-06-02 08:00", "S3", "entry", route="R1"),
        tap("2025-06-02 08:11", "S1", "exit", route="R1"),
    ]
    assert charges(path, late)[0] == 300
