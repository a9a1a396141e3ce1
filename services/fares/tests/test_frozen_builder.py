"""fast_builder: the same frozen value as the class's own constructor, only built faster."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from datetime import UTC, datetime

import pytest

from clearway.money import Money
from services.fares.domain import PricedJourney, PricedLeg, Tap, TapKind
from services.fares.domain.frozen import fast_builder

AT = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
GBP = Money(290, "GBP")


def leg_fields() -> dict[str, object]:
    return {
        "leg_id": "l-1",
        "operator_id": "LUL",
        "network_id": "RAIL",
        "route_id": None,
        "from_stop_id": "KGX",
        "to_stop_id": "OXC",
        "entry_at": AT,
        "exit_at": AT,
        "fare": GBP,
        "fare_product_id": "Z1_PEAK",
        "incomplete": False,
        "tap_ids": ("a", "b"),
        "transfer_rule_id": None,
        "distance_m": 2000,
    }


def test_a_built_value_is_an_instance_of_the_frozen_class_equal_to_the_usual_one() -> None:
    built = fast_builder(PricedLeg)(**leg_fields())  # type: ignore[arg-type]
    usual = PricedLeg(**leg_fields())  # type: ignore[arg-type]
    assert type(built) is PricedLeg
    assert built == usual
    assert hash(built) == hash(usual)
    assert repr(built) == repr(usual)
    assert built.charge is None and built.maximum_fare is False  # the defaults
    assert pickle.loads(pickle.dumps(built)) == usual
    assert copy.copy(built) == usual
    assert dataclasses.replace(built, fare_product_id="X").fare_product_id == "X"
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.fare = Money(0, "GBP")  # type: ignore[misc]


def test_positional_arguments_and_every_class_built_this_way() -> None:
    tap = fast_builder(Tap)("t1", "c1", AT, "KGX", TapKind.ENTRY)
    assert tap == Tap("t1", "c1", AT, "KGX", TapKind.ENTRY)
    assert type(tap) is Tap
    journey = fast_builder(PricedJourney)(
        journey_id="j-1",
        card_token="c1",
        service_day=AT.date(),
        legs=(),
        amount_before_caps=GBP,
        caps=(),
        charge=GBP,
        incomplete=False,
        fare_version="london@1",
        rider_category_id="",
        fare_media_id="",
        explanation=(),
        no_fare_reason=None,
    )
    assert type(journey) is PricedJourney
    assert journey.charge == GBP


def test_only_frozen_slotted_dataclasses_without_post_init_are_accepted() -> None:
    @dataclasses.dataclass(slots=True)
    class Mutable:
        a: int

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    with pytest.raises(TypeError):
        fast_builder(Mutable)
    with pytest.raises(TypeError):
        fast_builder(NoSlots)
    with pytest.raises(TypeError):
        fast_builder(Money)  # checks its fields in __post_init__


def test_the_field_order_charging_passes_positionally() -> None:
    # charging.py builds these positionally (one field a line, named in a comment): a
    # reordered field must be reordered there too.
    assert [f.name for f in dataclasses.fields(PricedLeg)] == [
        "leg_id",
        "operator_id",
        "network_id",
        "route_id",
        "from_stop_id",
        "to_stop_id",
        "entry_at",
        "exit_at",
        "fare",
        "fare_product_id",
        "incomplete",
        "tap_ids",
        "transfer_rule_id",
        "distance_m",
        "leg_group_id",
        "transfer_product_id",
        "maximum_fare",
        "charge",
        "standalone_fare",
        "reference_fare",
    ]
    assert [f.name for f in dataclasses.fields(PricedJourney)] == [
        "journey_id",
        "card_token",
        "service_day",
        "legs",
        "amount_before_caps",
        "caps",
        "charge",
        "incomplete",
        "fare_version",
        "rider_category_id",
        "fare_media_id",
        "explanation",
        "no_fare_reason",
    ]
