"""The simulated day: concession cards carry their rider category on every tap, and the
rest of the day is what the same seed always gave."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path

import pytest

from clearway.events.v1 import events_pb2
from services.fares.domain import FareData, load_fare_data
from services.ingest.simulator.day import Mix, SimulatedDay, simulate_day

FEEDS = Path(__file__).resolve().parents[3] / "examples" / "feeds"
DAY = date(2025, 3, 5)


@pytest.fixture(scope="module")
def london() -> FareData:
    return load_fare_data(FEEDS / "london")


def taps_of(day: SimulatedDay) -> list[events_pb2.Tap]:
    return [tap for device in sorted(day.by_device) for tap in day.by_device[device]]


def without_categories(day: SimulatedDay) -> list[bytes]:
    result = []
    for tap in taps_of(day):
        bare = events_pb2.Tap()
        bare.CopyFrom(tap)
        bare.ClearField("rider_category_id")
        result.append(bare.SerializeToString(deterministic=True))
    return result


def digest(day: SimulatedDay) -> str:
    h = hashlib.sha256()
    for tap in without_categories(day):
        h.update(tap)
    h.update(f"{day.malformed}/{day.resent}/{day.missing_exits}/{day.total()}".encode())
    return h.hexdigest()


def test_the_taps_apart_from_their_rider_category_are_what_the_seed_gave_before(
    london: FareData,
) -> None:
    # Digests of the day made by the simulator before it drew rider categories, taken
    # again when gates became one device per operator and station (issue 9): the same
    # journeys, but sequence numbers and which taps a device resends follow its taps.
    before = {
        (7, 300): "73ff172567c7fab3b1e8de9dacb6268e283a971364c54c3a6f0570d17a01f521",
        (4, 150): "7bf2ca2d6d8d9e31975a699ca2cdd1957cd63208c1eaee71c9f7ed77dce651fa",
    }
    for (seed, cards), expected in before.items():
        day = simulate_day(london, DAY, cards, seed=seed)
        assert digest(day) == expected
        assert any(tap.rider_category_id for tap in taps_of(day))
        plain = simulate_day(london, DAY, cards, seed=seed, mix=Mix(senior=0, youth=0))
        assert digest(plain) == expected
        assert not any(tap.rider_category_id for tap in taps_of(plain))


def test_a_concession_card_carries_its_category_on_every_tap(london: FareData) -> None:
    cards = 2000
    day = simulate_day(london, DAY, cards, seed=3)
    plain = simulate_day(london, DAY, cards, seed=3, mix=Mix(senior=0, youth=0))
    assert without_categories(day) == without_categories(plain)
    categories: dict[str, set[str]] = defaultdict(set)
    for tap, untouched in zip(taps_of(day), taps_of(plain), strict=True):
        if untouched.card_token.startswith("tok_"):  # not broken on purpose (no or raw PAN)
            categories[untouched.card_token].add(tap.rider_category_id)
    assert all(len(found) == 1 for found in categories.values())
    shares = Counter(next(iter(found)) for found in categories.values())
    assert set(shares) == {"", "SENIOR", "YOUTH"}
    assert 0.04 < shares["SENIOR"] / len(categories) < 0.08  # 6 % of cards
    assert 0.02 < shares["YOUTH"] / len(categories) < 0.06  # 4 % of cards


def test_shares_follow_the_mix_and_cards_keep_their_draw(london: FareData) -> None:
    def category_of_cards(mix: Mix) -> dict[str, str]:
        day = simulate_day(london, DAY, 400, seed=9, mix=mix)
        return {t.card_token: t.rider_category_id for t in taps_of(day) if t.card_token}

    seniors_only = category_of_cards(Mix(senior=0.5, youth=0))
    assert set(seniors_only.values()) == {"", "SENIOR"}
    everyone_youth = category_of_cards(Mix(senior=0, youth=1))
    assert set(everyone_youth.values()) == {"YOUTH"}
    # The same draw per card: a card senior at 6 % is senior at 50 % too.
    default = category_of_cards(Mix())
    assert {c for c, k in default.items() if k == "SENIOR"} <= {
        c for c, k in seniors_only.items() if k == "SENIOR"
    }


def test_a_feed_without_those_rider_categories_gets_none() -> None:
    dutch = load_fare_data(FEEDS / "dutch")  # no rider_categories.txt
    day = simulate_day(dutch, DAY, 300, seed=7, mix=Mix(senior=0.5, youth=0.5))
    assert not any(tap.rider_category_id for tap in taps_of(day))
