"""What a report covers: its period (a service day or a calendar month) and its council."""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from clearway.errors import ClearwayError, ErrorKind
from clearway.scheme.model import PartyKind, Scheme

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MONTH = re.compile(r"[0-9]{4}-[0-9]{2}")


class BadPeriodError(ClearwayError, ValueError):
    """A period that is neither a service day (YYYY-MM-DD) nor a month (YYYY-MM)."""

    code = "BAD_PERIOD"


class UnknownCouncilError(ClearwayError, ValueError):
    """The council named is not a funder party of the scheme in force in the period."""

    code = "UNKNOWN_COUNCIL"
    kind = ErrorKind.NOT_FOUND


def parse_service_day(text: str) -> date | None:
    """The service day `text` (YYYY-MM-DD) names; None when it names none."""
    if _DAY.fullmatch(text) is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:  # 2026-02-30
        return None


@dataclass(frozen=True, slots=True)
class Period:
    """Service days `first` to `last` inclusive: one day, or one calendar month."""

    label: str  # as given: "2026-06-15" or "2026-06"
    first: date
    last: date

    @classmethod
    def parse(cls, text: str) -> Period:
        """The period of `text`, a service day YYYY-MM-DD or a month YYYY-MM."""
        try:
            if _DAY.fullmatch(text):
                day = date.fromisoformat(text)
                return cls(text, day, day)
            if _MONTH.fullmatch(text):
                year, month = int(text[:4]), int(text[5:])
                first = date(year, month, 1)
                return cls(text, first, first.replace(day=calendar.monthrange(year, month)[1]))
        except ValueError as exc:
            raise BadPeriodError(f"not a date: {text!r} ({exc})") from exc
        raise BadPeriodError(f"a period is YYYY-MM-DD or YYYY-MM, not {text!r}")

    def contains(self, service_day: str) -> bool:
        """Whether service day `service_day` (YYYY-MM-DD) is in the period."""
        # ISO dates order as strings; anything else (a malformed day) is outside.
        return (
            _DAY.fullmatch(service_day) is not None
            and self.first.isoformat() <= service_day <= self.last.isoformat()
        )

    def days(self) -> Iterator[date]:
        """Every service day of the period, in order."""
        day = self.first
        while day <= self.last:
            yield day
            day += timedelta(days=1)

    def months(self) -> tuple[str, ...]:
        """The calendar months (YYYY-MM) the period falls in."""
        return tuple(sorted({d.strftime("%Y-%m") for d in self.days()}))


@dataclass(frozen=True, slots=True)
class Council:
    """A funder party of the scheme and its area (GTFS area ids)."""

    funder_id: str
    name: str
    area_ids: frozenset[str]


def councils_in(scheme: Scheme, period: Period) -> list[str]:
    """The funder parties `council_of` accepts for `period` (a version in force on a day
    of it), sorted: the councils a nightly run writes packs for."""
    funders = {p.party_id for p in scheme.parties if p.kind is PartyKind.FUNDER}
    return sorted(
        funder_id
        for funder_id in funders
        if any(
            (p := scheme.party(funder_id, day)) is not None and p.kind is PartyKind.FUNDER
            for day in period.days()
        )
    )


def council_of(scheme: Scheme, funder_id: str, period: Period) -> Council:
    """Funder `funder_id` as in force in `period`; its areas are those of every version of
    the party in force on a day of the period."""
    versions = {
        p
        for day in period.days()
        if (p := scheme.party(funder_id, day)) is not None and p.kind is PartyKind.FUNDER
    }
    if not versions:
        raise UnknownCouncilError(
            f"{funder_id!r} is not a funder party of scheme {scheme.scheme_id!r} "
            f"in force in {period.label}"
        )
    latest = max(versions, key=lambda p: p.dates.effective_from)
    areas = frozenset(a for p in versions for a in p.areas)
    return Council(funder_id, latest.name, areas)
