"""revise() with fingerprints: same charge but other legs is a revision; withdrawn once."""

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone

from clearway.money import Money
from services.fares.domain import CapApplied, PricedJourney, PricedLeg, revise
from services.fares.domain.revision import (
    FINGERPRINT_VERSION,
    WITHDRAWN,
    canonical_content,
    fingerprint,
)

GBP = Money(175, "GBP")


def leg(stop: str, operator: str = "BUSCO") -> PricedLeg:
    return PricedLeg(
        leg_id=f"l-{stop}",
        operator_id=operator,
        network_id="BUS",
        route_id="BUS_73",
        from_stop_id=stop,
        to_stop_id=None,
        entry_at=datetime(2026, 11, 25, 9, tzinfo=UTC),
        exit_at=None,
        fare=GBP,
        fare_product_id="BUS_SINGLE",
        incomplete=False,
        tap_ids=(f"t-{stop}",),
        transfer_rule_id=None,
        distance_m=None,
    )


JOURNEY = PricedJourney(
    journey_id="j1",
    card_token="tok_x",
    service_day=date(2026, 11, 25),
    legs=(leg("CMD"),),
    amount_before_caps=GBP,
    caps=(),
    charge=GBP,
    incomplete=False,
    fare_version="v1",
    rider_category_id="ADULT",
    fare_media_id="CONTACTLESS",
    explanation=("bus single 1.75",),
    no_fare_reason=None,
)


def test_a_new_leg_at_the_same_charge_is_a_new_revision_with_zero_delta():
    grown = replace(JOURNEY, legs=(leg("CMD"), leg("VIC", "OTHERBUS")))
    [rev] = revise({"j1": (1, GBP)}, [grown], fingerprints={"j1": fingerprint(JOURNEY)})
    assert (rev.revision, rev.charge, rev.delta) == (2, GBP, Money(0, "GBP"))


def test_the_same_content_yields_nothing_whatever_the_explanation_says():
    reworded = replace(JOURNEY, explanation=("reworded",))
    assert revise({"j1": (1, GBP)}, [reworded], fingerprints={"j1": fingerprint(JOURNEY)}) == []


def test_a_withdrawn_journey_is_withdrawn_once():
    [gone] = revise({"j1": (1, GBP)}, [], card_token="tok_x", fingerprints={"j1": "abc"})
    assert (gone.revision, gone.charge, gone.delta) == (2, Money(0, "GBP"), -GBP)
    assert (
        revise({"j1": (2, Money(0, "GBP"))}, [], card_token="tok_x", fingerprints={"j1": WITHDRAWN})
        == []
    )


def test_without_fingerprints_only_charges_matter_as_before():
    grown = replace(JOURNEY, legs=(leg("CMD"), leg("VIC")))
    assert revise({"j1": (1, GBP)}, [grown]) == []


def test_the_fingerprint_encoding_is_pinned():
    """Fingerprints are stored with what was published; a change to the encoding would
    make every stored journey look changed. Change FINGERPRINT_VERSION with it."""
    assert fingerprint(JOURNEY) == (
        "v2:526c7755a019b91e074acc4c2e2bd00b4f789f8f5e8b0e4c45857278b08d16a2"
    )
    assert fingerprint(replace(JOURNEY, explanation=("other words",))) == fingerprint(JOURNEY)


PARIS = timezone(timedelta(hours=1))


def rail_then_bus_capped() -> PricedJourney:
    """Two legs (rail, then a Hopper bus), a daily cap saving 60, instants not in UTC."""
    rail = PricedLeg(
        leg_id="l-a",
        operator_id="LUL",
        network_id="RAIL",
        route_id=None,
        from_stop_id="KGX",
        to_stop_id="OXC",
        entry_at=datetime(2025, 3, 3, 9, 0, tzinfo=PARIS),
        exit_at=datetime(2025, 3, 3, 9, 20, 30, tzinfo=PARIS),
        fare=Money(290, "GBP"),
        fare_product_id="Z1_PEAK",
        incomplete=False,
        tap_ids=("a", "b"),
        transfer_rule_id=None,
        distance_m=2669,
        leg_group_id="RAIL",
        transfer_product_id=None,
        maximum_fare=False,
        charge=Money(290, "GBP"),
        standalone_fare=Money(290, "GBP"),
        reference_fare=Money(290, "GBP"),
    )
    bus = PricedLeg(
        leg_id="l-c",
        operator_id="BUSCO",
        network_id="BUS",
        route_id="BUS_73",
        from_stop_id="BUS_A1",
        to_stop_id=None,
        entry_at=datetime(2025, 3, 3, 9, 40, tzinfo=UTC),
        exit_at=None,
        fare=Money(175, "GBP"),
        fare_product_id="BUS_SINGLE",
        incomplete=False,
        tap_ids=("c",),
        transfer_rule_id="fare_transfer_rules.txt:2",
        distance_m=None,
        leg_group_id="BUS",
        transfer_product_id="HOPPER",
        maximum_fare=False,
        charge=Money(115, "GBP"),
    )
    return PricedJourney(
        journey_id="j-a",
        card_token="tok_y",
        service_day=date(2025, 3, 3),
        legs=(rail, bus),
        amount_before_caps=Money(465, "GBP"),
        caps=(CapApplied("DAILY_BUS", Money(60, "GBP")),),
        charge=Money(405, "GBP"),
        incomplete=False,
        fare_version="london@2025-03-02",
        rider_category_id="ADULT",
        fare_media_id="CONTACTLESS",
        explanation=("...",),
        no_fare_reason=None,
    )


def incomplete_maximum_fare() -> PricedJourney:
    """An entry without exit charged the maximum fare."""
    leg = PricedLeg(
        leg_id="l-e",
        operator_id="LUL",
        network_id="RAIL",
        route_id=None,
        from_stop_id="VIC",
        to_stop_id=None,
        entry_at=datetime(2025, 3, 4, 23, 59, 59, tzinfo=UTC),
        exit_at=None,
        fare=Money(940, "GBP"),
        fare_product_id="RAIL_MAX",
        incomplete=True,
        tap_ids=("e",),
        transfer_rule_id=None,
        distance_m=None,
        maximum_fare=True,
        charge=Money(940, "GBP"),
    )
    return replace(
        JOURNEY,
        journey_id="j-e",
        legs=(leg,),
        amount_before_caps=Money(940, "GBP"),
        charge=Money(940, "GBP"),
        incomplete=True,
        fare_version="london@2025-03-02",
    )


def no_fare() -> PricedJourney:
    """A journey no rule prices: charge 0 with its reason, no category or medium."""
    leg = replace(JOURNEY.legs[0], fare=Money(0, "GBP"), fare_product_id=None, charge=None)
    return replace(
        JOURNEY,
        journey_id="j-n",
        legs=(leg,),
        amount_before_caps=Money(0, "GBP"),
        charge=Money(0, "GBP"),
        rider_category_id="",
        fare_media_id="",
        no_fare_reason="NO_LEG_RULE: no fare_leg_rules row matches network BUS from CMD to -",
    )


def test_the_fingerprints_of_fixed_journeys_are_pinned():
    """Literal digests: any change to what the encoding covers, its order or its separators
    shows here, and must come with a new FINGERPRINT_VERSION (stored fingerprints would
    otherwise all look changed and every journey re-priced after an upgrade republished)."""
    assert FINGERPRINT_VERSION == "v2"
    journeys = (rail_then_bus_capped(), incomplete_maximum_fare(), no_fare())
    assert [fingerprint(j) for j in journeys] == [
        "v2:b4b1da4f69e3a6ba31689b0f8273a4c68ed682b7cb6f5fd37e5741b65e409ff7",
        "v2:11d97eec6cdc43d5e362a9b043a96b56111a4339f1b230612273138c2bf507f4",
        "v2:a468684c232d52e697e1e5588584cfb5729a3a239c8fa554b1911abdac08eac5",
    ]


def test_the_canonical_text_names_every_published_field_in_a_fixed_order():
    separator, field = "\x1e", "\x1f"
    head, rail, bus = canonical_content(rail_then_bus_capped()).split(separator)
    assert head.split(field) == [
        "465 GBP",
        "DAILY_BUS=60 GBP",
        "405 GBP",
        "0",
        "london@2025-03-02",
        "ADULT",
        "CONTACTLESS",
        "",
    ]
    assert rail.split(field) == [
        "l-a",
        "LUL",
        "RAIL",
        "",
        "KGX",
        "OXC",
        "2025-03-03T08:00:00+00:00",
        "2025-03-03T08:20:30+00:00",
        "290 GBP",
        "Z1_PEAK",
        "0",
        "a,b",
        "",
        "2669",
        "RAIL",
        "",
        "0",
        "290 GBP",
    ]
    assert bus.split(field)[12:16] == ["fare_transfer_rules.txt:2", "", "BUS", "HOPPER"]


def test_equal_instants_at_other_offsets_have_one_fingerprint():
    journey = rail_then_bus_capped()
    in_utc = replace(
        journey,
        legs=tuple(
            replace(
                leg,
                entry_at=leg.entry_at.astimezone(UTC),
                exit_at=leg.exit_at.astimezone(UTC) if leg.exit_at else None,
            )
            for leg in journey.legs
        ),
    )
    assert fingerprint(in_utc) == fingerprint(journey)
