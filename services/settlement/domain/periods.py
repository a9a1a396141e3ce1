"""Settlement periods: one per service day, named YYYY-MM-DD."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection

from .errors import InvalidPeriodError

_PERIOD_ID = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_period_id(period_id: str) -> dt.date:
    """The service day a period id names; InvalidPeriodError unless it is YYYY-MM-DD."""
    if not _PERIOD_ID.match(period_id):
        raise InvalidPeriodError(f"period id must be YYYY-MM-DD, got {period_id!r}")
    try:
        return dt.date.fromisoformat(period_id)
    except ValueError:
        raise InvalidPeriodError(f"no such day {period_id!r}") from None


def period_id_of(day: dt.date) -> str:
    """The period id of a service day."""
    return day.isoformat()


def posting_period(service_day: str, closed: Collection[str]) -> str:
    """The period a revision of `service_day` posts into: its own, else the next open one.

    A closed period is never rewritten: a late adjustment lands in the earliest period
    after its service day that is not closed.
    """
    day = parse_period_id(service_day)
    while period_id_of(day) in closed:
        day += dt.timedelta(days=1)
    return period_id_of(day)
