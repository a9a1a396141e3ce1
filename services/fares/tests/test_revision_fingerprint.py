"""revise() with fingerprints: same charge but other legs is a revision; withdrawn once."""

from dataclasses import replace
from datetime import UTC, date, datetime

from clearway.money import Money
from services.fares.domain import PricedJourney, PricedLeg, revise
from services.fares.domain.revision import WITHDRAWN, fingerprint

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
