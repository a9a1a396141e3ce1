"""Pacing of the soak's traffic, and which service day each slice of it belongs to. Pure.

A token bucket by reservation: each sender reserves the taps of its next batch and waits
the delay it is given, so many concurrent validator streams share one steady rate and
take turns in the order they asked.
"""

from __future__ import annotations

from datetime import date, timedelta


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; a reservation may overdraw, and
    the overdraft is the time its holder must wait."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("a token bucket needs a positive rate and burst")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def reserve(self, n: float, now: float) -> float:
        """Take `n` tokens as of `now`; returns how many seconds to wait before using them."""
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = max(self._at, now)
        self._tokens -= n
        return max(0.0, -self._tokens / self.rate)


def cards_per_slice(rate: float, slice_s: float, taps_per_card: float) -> int:
    """How many cards' days make about `slice_s` seconds of taps at `rate` taps a second."""
    return max(10, round(rate * slice_s / taps_per_card))


def service_day_of_slice(index: int, today: date, days: int = 10) -> date:
    """The service day of the soak's `index`-th slice of traffic: the days from two days
    before `today` back to `days` + 1 days before it, in turn. Their taps are late (flagged,
    accepted) but well inside ingest's 14-day limit and never in the future."""
    return today - timedelta(days=2 + index % days)
