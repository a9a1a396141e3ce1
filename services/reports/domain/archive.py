"""The day archive's rules (docs/reports.md, "The day archive"): what a service day keeps
when an archive run meets what an earlier run saved, and which days of a period it lacks.

Kafka deletes a topic's oldest records after its retention, so a run may find only part of
a day (or none of it) on the topics; a day file must never lose what an earlier run saved.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import date, timedelta

from services.reports.domain.benefits import Posting, each_posting_once
from services.reports.domain.scope import Period
from services.reports.domain.usage import Journey, latest_revisions


def merge_journeys(kept: Iterable[Journey], found: Iterable[Journey]) -> list[Journey]:
    """A day's journeys after a run: the latest revision of each journey id of `kept` (the
    day file) and `found` (the topic), withdrawn ones too, sorted by journey id."""
    return latest_revisions([*kept, *found])


def merge_postings(kept: Iterable[Posting], found: Iterable[Posting]) -> list[Posting]:
    """A day's postings after a run: each posting id of `kept` or `found` once (a posting
    does not change once published), sorted by posting id."""
    return each_posting_once([*kept, *found])


def days_without_data(period: Period, archived: Collection[date]) -> tuple[date, ...]:
    """The service days of `period` not in `archived`, in order."""
    return tuple(day for day in period.days() if day not in archived)


def day_ranges(days: Iterable[date]) -> str:
    """`days` as runs of consecutive days: '2026-06-03, 2026-06-11 to 2026-06-30'."""
    runs: list[list[date]] = []
    for day in sorted(set(days)):
        if runs and runs[-1][1] + timedelta(days=1) == day:
            runs[-1][1] = day
        else:
            runs.append([day, day])
    return ", ".join(
        first.isoformat() if first == last else f"{first.isoformat()} to {last.isoformat()}"
        for first, last in runs
    )
