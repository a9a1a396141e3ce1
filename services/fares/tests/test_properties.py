"""Property tests: order independence, caps never exceeded, adjustments add up."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearway.money import Money
from services.fares.domain import FareData, Tap, TapKind, load_fare_data, price_card, revise

from .conftest import EXAMPLE_FEEDS
from .taps import LONDON

FEED: FareData = load_fare_data(EXAMPLE_FEEDS / "london")
RAIL = ["KGX", "OXC", "VIC", "CMD", "BRX", "SFD", "NOPE"]
BUS = [("BUS_A1", "BUS_73"), ("BUS_B1", "BUS_390")]
START = datetime(2025, 3, 3, 4, 0, tzinfo=LONDON)


@st.composite
def card_taps(draw: st.DrawFn) -> list[Tap]:
    n = draw(st.integers(min_value=0, max_value=30))
    taps = []
    for i in range(n):
        minute = draw(st.integers(min_value=0, max_value=9 * 24 * 60))
        kind = draw(st.sampled_from(list(TapKind)))
        media = draw(st.sampled_from([None, "CONTACTLESS", "OYSTER"]))
        if kind is TapKind.BOARD:
            stop, route = draw(st.sampled_from(BUS))
        else:
            stop, route = draw(st.sampled_from(RAIL)), None
        taps.append(
            Tap(
                f"t{i:03d}",
                "card",
                START + timedelta(minutes=minute),
                stop,
                kind,
                route_id=route,
                fare_media_id=media,
            )
        )
    return taps


def charges(journeys: list) -> list[tuple[str, int]]:  # type: ignore[type-arg]
    return [(j.journey_id, j.charge.amount_minor) for j in journeys]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(taps=card_taps(), data=st.data())
def test_any_permutation_of_taps_gives_the_same_charges(
    taps: list[Tap], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(taps))
    assert price_card(FEED, shuffled) == price_card(FEED, taps)


@settings(max_examples=150, deadline=None)
@given(taps=card_taps())
def test_no_cap_is_ever_exceeded(taps: list[Tap]) -> None:
    spent: dict[tuple[str, object], int] = defaultdict(int)
    for journey in price_card(FEED, taps):
        for leg in journey.legs:
            if leg.maximum_fare or leg.charge is None:
                continue
            assert 0 <= leg.charge.amount_minor <= leg.fare.amount_minor
            for cap in FEED.caps:
                if not cap.applies_to(journey.rider_category_id, journey.fare_media_id):
                    continue
                if leg.fare_product_id not in cap.fare_product_ids:
                    continue
                day = journey.service_day
                key = day if cap.period == "day" else day - timedelta(days=day.weekday())
                spent[(cap.cap_id, key)] += leg.charge.amount_minor
                assert spent[(cap.cap_id, key)] <= cap.amount_minor


@settings(max_examples=150, deadline=None)
@given(taps=card_taps(), data=st.data())
def test_adjustments_sum_to_the_difference_between_revisions(
    taps: list[Tap], data: st.DataObject
) -> None:
    early = data.draw(st.lists(st.sampled_from(taps), unique=True)) if taps else []
    first = price_card(FEED, early)
    published = {r.journey_id: (r.revision, r.charge) for r in revise({}, first)}
    assert sum(m.amount_minor for _, m in published.values()) == sum(
        j.charge.amount_minor for j in first
    )
    second = price_card(FEED, taps)
    revisions = revise(published, second)
    delta = sum(r.delta.amount_minor for r in revisions)
    assert delta == sum(j.charge.amount_minor for j in second) - sum(
        j.charge.amount_minor for j in first
    )
    for r in revisions:
        last = published.get(r.journey_id)
        assert r.revision == (last[0] + 1 if last else 1)
        assert r.charge - (last[1] if last else Money(0, "GBP")) == r.delta
    # Re-pricing the same taps again yields nothing new.
    settled = {**published, **{r.journey_id: (r.revision, r.charge) for r in revisions}}
    settled = {k: v for k, v in settled.items() if k in {j.journey_id for j in second}}
    assert revise(settled, second) == []
