"""Batch pricing in memory: resuming at journey boundaries and skipping trailing entries
publish exactly what re-pricing every card's whole week after every tap publishes, in any
arrival order, and the final journeys are the pure engine's."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearway.events.v1 import events_pb2
from services.fares.domain import FareCatalog, Tap, TapKind, load_fare_data, price_card
from services.fares.service_layer import repricing
from services.fares.service_layer.repricing import BatchPricing, CardState

from .conftest import EXAMPLE_FEEDS
from .taps import LONDON

CATALOG = FareCatalog.of([load_fare_data(EXAMPLE_FEEDS / "london")])
RAIL = ["KGX", "OXC", "VIC", "CMD", "BRX", "SFD"]
BUS = [("BUS_A1", "BUS_73"), ("BUS_B1", "BUS_390")]
MONDAY = datetime(2025, 3, 3, 5, 0, tzinfo=LONDON)


@st.composite
def week_of_taps(draw: st.DrawFn) -> list[Tap]:
    """Taps of up to three cards in one service week, dense enough for transfers and
    daily and weekly caps, in a random arrival order."""
    taps = []
    for i in range(draw(st.integers(min_value=1, max_value=50))):
        card = draw(st.sampled_from(["card-a", "card-b", "card-c"]))
        day = draw(st.integers(min_value=0, max_value=6))
        minute = day * 24 * 60 + draw(st.integers(min_value=0, max_value=20 * 60))
        kind = draw(st.sampled_from(list(TapKind)))
        media = draw(st.sampled_from([None, None, None, "CONTACTLESS", "OYSTER"]))
        if kind is TapKind.BOARD:
            stop, route = draw(st.sampled_from(BUS))
        else:
            stop, route = draw(st.sampled_from(RAIL)), None
        at = MONDAY + timedelta(minutes=minute)
        taps.append(Tap(f"t{i:03d}", card, at, stop, kind, route_id=route, fare_media_id=media))
    return draw(st.permutations(taps))


def run(taps: list[Tap], *, resume: bool) -> tuple[list[tuple[str, bytes]], dict[str, object]]:
    cards = {t.card_token: CardState(t.card_token, 0) for t in taps}
    pricing = BatchPricing(CATALOG, 0, None, None, cards, [], resume=resume)
    for tap in taps:
        pricing.record(tap, new=True)
    # Close the week: every waiting entry becomes incomplete.
    pricing.closed_through = MONDAY + timedelta(days=8)
    pricing.sweep()
    published = {
        jid: (p.revision, p.charge, p.fingerprint, p.service_day)
        for card in cards.values()
        for jid, p in card.published.items()
    }
    return [(q.journey_id, q.body) for q in pricing.queued], published


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(taps=week_of_taps())
def test_resuming_publishes_what_repricing_the_whole_week_publishes(taps: list[Tap]) -> None:
    assert run(taps, resume=True) == run(taps, resume=False)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(taps=week_of_taps())
def test_the_last_revisions_are_the_pure_engines_journeys(taps: list[Tap]) -> None:
    queued, _ = run(taps, resume=True)
    latest: dict[str, events_pb2.PricedJourney] = {}
    for journey_id, body in queued:
        latest[journey_id] = events_pb2.PricedJourney.FromString(body)
    live = {jid: j.charge.amount_minor for jid, j in latest.items() if j.legs}
    expected = {j.journey_id: j.charge.amount_minor for j in price_card(CATALOG, taps)}
    assert live == expected
    assert all(j.charge.amount_minor == 0 for j in latest.values() if not j.legs)


def test_a_long_week_is_not_repriced_from_its_start_for_every_tap() -> None:
    """200 bus rides in time order: with resume points each re-pricing sees a few taps."""
    taps = [
        Tap(
            f"t{i:04d}",
            "card-a",
            MONDAY + timedelta(minutes=50 * i),
            "BUS_A1",
            TapKind.BOARD,
            route_id="BUS_73",
        )
        for i in range(200)
    ]
    seen: list[int] = []
    original = repricing.price_card_from

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(len(args[2]))
        return original(*args, **kwargs)

    repricing.price_card_from = counting  # type: ignore[assignment]
    try:
        run(taps, resume=True)
    finally:
        repricing.price_card_from = original  # type: ignore[assignment]
    assert len(seen) >= 200
    # Hopper journeys of two buses: the previous journey, the current one and the new tap.
    assert max(seen) <= 5, f"a re-pricing saw {max(seen)} taps"
