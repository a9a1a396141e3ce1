"""What the fare engine remembers between taps never changes an answer."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from services.fares.domain import load_fare_data

from .conftest import EXAMPLE_FEEDS

HALIFAX = ZoneInfo("America/Halifax")


def test_the_second_of_two_ambiguous_local_times_gets_its_own_service_day() -> None:
    london = load_fare_data(EXAMPLE_FEEDS / "london")  # service day starts 04:30
    # 01:15 happens twice in Halifax on 2 Nov 2025: 04:15 UTC, then 05:15 UTC. The two
    # compare equal (PEP 495), but fall either side of London's 04:30 boundary.
    first = datetime(2025, 11, 2, 1, 15, tzinfo=HALIFAX)
    second = first.replace(fold=1)
    assert first == second
    assert london.service_day(first) == date(2025, 11, 1)
    assert london.service_day(second) == date(2025, 11, 2)
    assert london.service_day(first) == date(2025, 11, 1)


def test_equal_instants_at_other_offsets_share_timeframes_and_service_day() -> None:
    london = load_fare_data(EXAMPLE_FEEDS / "london")
    utc = datetime.fromisoformat("2025-03-03T07:00:00+00:00")
    paris = datetime.fromisoformat("2025-03-03T08:00:00+01:00")
    assert london.local_facts(utc) == (date(2025, 3, 3), frozenset({"PEAK"}))
    assert london.local_facts(paris) == london.local_facts(utc)
    assert london.timeframe_groups_at(datetime.fromisoformat("2025-03-03T10:00:00+00:00")) == (
        frozenset({"CONCESSION"})
    )
