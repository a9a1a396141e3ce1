"""The FareIndex answers as the feed's tables do, and what pricing remembers is bounded."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.fares.adapters.gtfs_reader import load_fare_data
from services.fares.domain import FareData, price_card
from services.fares.domain.bounded_cache import BoundedCache

from .conftest import EXAMPLE_FEEDS
from .taps import at, bus, trip

LONDON_DATA = load_fare_data(EXAMPLE_FEEDS / "london")
OFFSETS = [UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-8))]


def reference_facts(data: FareData, at: datetime) -> tuple[date, frozenset[str]]:
    """The definition (docs/fare-data.md): the local date shifted back by the service day
    start; the groups whose window holds the local time on a date their service runs."""
    local = at.astimezone(data.timezone)
    day = (local - timedelta(seconds=data.settings.service_day_start_s)).date()
    seconds = local.hour * 3600 + local.minute * 60 + local.second
    groups = frozenset(
        tf.timeframe_group_id
        for tf in data.timeframes
        if tf.start_s <= seconds < tf.end_s
        and (tf.service_id is None or data.calendar.is_active(tf.service_id, local.date()))
    )
    return day, groups


instants = st.builds(
    lambda seconds, offset: (
        datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    ).astimezone(offset),
    st.integers(min_value=0, max_value=3 * 366 * 86400),
    st.sampled_from(OFFSETS),
)


@given(instants)
@settings(max_examples=500, deadline=None)
def test_service_day_and_timeframe_groups_follow_their_definition_in_london(at: datetime) -> None:
    assert LONDON_DATA.index.local_facts(at) == reference_facts(LONDON_DATA, at)
    assert LONDON_DATA.service_day(at) == reference_facts(LONDON_DATA, at)[0]


@pytest.mark.parametrize("name", ["ctran", "transcollines", "zakroczym"])
def test_service_days_and_timeframe_groups_of_real_feeds_follow_their_definition(
    shared_feeds: Path, name: str
) -> None:
    data = load_fare_data(shared_feeds / name)
    start = datetime(2024, 4, 28, 0, 7, 30, tzinfo=UTC)
    # Every 53 minutes over two years: each hour of each kind of day, both DST changes.
    for step in range(0, 2 * 366 * 24 * 60, 53):
        at = start + timedelta(minutes=step)
        assert data.index.local_facts(at) == reference_facts(data, at), at


def test_what_pricing_remembers_does_not_grow_with_the_days_priced() -> None:
    data = load_fare_data(EXAMPLE_FEEDS / "london")  # its own caches, empty
    times = ("08:00", "08:20", "09:00", "17:00", "17:25")

    def one_day(day: date) -> None:
        when = day.isoformat()
        taps = [
            *trip(f"{when} 08:00", "KGX", f"{when} 08:20", "OXC"),
            bus(f"{when} 09:00"),
            *trip(f"{when} 17:00", "OXC", f"{when} 17:25", "CMD"),
        ]
        price_card(data, taps)

    def groups(day: date) -> list[frozenset[str]]:
        return [data.timeframe_groups_at(at(f"{day.isoformat()} {t}")) for t in times]

    monday = date(2025, 3, 3)
    one_day(monday)
    after_one_day = (len(data.index.leg_prices), len(data.index.money))
    # 200 more days whose timeframes are Monday's (weekdays that are not bank holidays):
    # the same trips cost the same, and nothing is remembered per day.
    alike = [d for n in range(1, 300) if groups(d := monday + timedelta(days=n)) == groups(monday)]
    for day in alike[:200]:
        one_day(day)
    assert len(alike) >= 200
    assert (len(data.index.leg_prices), len(data.index.money)) == after_one_day


def test_a_bounded_cache_forgets_its_oldest_entry_when_full() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.remember("a", 1)
    cache.remember("b", 2)
    cache["a"] = 10  # known keys are replaced in place
    cache.remember("c", 3)
    assert dict(cache) == {"b": 2, "c": 3}
    assert cache.get("a") is None
