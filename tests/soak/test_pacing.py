"""Pacing: one token bucket shared by every stream keeps the soak's rate steady."""

from __future__ import annotations

from datetime import date

import pytest

from services.soak.pacing import TokenBucket, cards_per_slice, service_day_of_slice


def test_the_burst_is_free_and_the_rest_waits_its_turn_at_the_rate() -> None:
    bucket = TokenBucket(rate=100, burst=50, now=0)
    assert bucket.reserve(50, now=0) == 0
    assert bucket.reserve(25, now=0) == pytest.approx(0.25)
    assert bucket.reserve(25, now=0) == pytest.approx(0.5)  # queued behind the first


def test_many_senders_together_never_exceed_the_rate() -> None:
    bucket = TokenBucket(rate=150, burst=37.5, now=0)
    clock, sent = 0.0, 0
    ready = [0.0] * 8  # eight streams, each sending a 25-tap batch when its wait is over
    while clock < 600:
        stream = min(range(8), key=lambda i: ready[i])
        clock = ready[stream]
        ready[stream] = clock + bucket.reserve(25, now=clock)
        sent += 25
    assert sent <= 150 * clock + 37.5 + 8 * 25
    assert sent >= 150 * clock - 8 * 25


def test_idle_time_saves_up_no_more_than_the_burst() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0)
    assert bucket.reserve(5, now=100) == 0
    assert bucket.reserve(10, now=100) == pytest.approx(1.0)


def test_a_clock_going_back_gives_no_tokens() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=10)
    bucket.reserve(5, now=10)
    assert bucket.reserve(10, now=5) == pytest.approx(1.0)


def test_a_bucket_needs_a_rate_and_a_burst() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1, now=0)


def test_a_slice_holds_about_its_seconds_of_taps() -> None:
    assert cards_per_slice(150, 60, 4.5) == 2000
    assert cards_per_slice(1, 1, 4.5) == 10  # never fewer than ten cards


def test_slices_take_the_past_service_days_in_turn_inside_ingest_s_14_days() -> None:
    today = date(2026, 12, 1)
    days = [service_day_of_slice(i, today) for i in range(25)]
    assert days[0] == date(2026, 11, 29)
    assert days[9] == date(2026, 11, 20)
    assert days[10] == days[0]
    assert all(2 <= (today - d).days <= 11 for d in days)
