"""Council usage reports from priced journeys: pure, privacy-preserving aggregation.

Every figure counts DISTINCT CARDS; a cell with fewer than `MINIMUM_CELL` distinct cards
is suppressed, its counts not shown (clearway.disclosure). No card token or journey id
leaves this module: the reports carry only operators, hours, stops/fare areas, rider
categories and counts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo

from clearway.disclosure import SUPPRESSED, shown

NO_EXIT = "(no exit)"
NO_CATEGORY = "(none)"


@dataclass(frozen=True, slots=True)
class Leg:
    """One leg of a priced journey, as far as the reports need it."""

    operator_id: str
    from_stop_id: str
    to_stop_id: str  # empty when the leg had no exit
    entry_at: datetime  # timezone-aware


@dataclass(frozen=True, slots=True)
class Journey:
    """One revision of a priced journey (no legs: withdrawn)."""

    journey_id: str
    card_token: str
    revision: int
    service_day: str
    rider_category_id: str
    legs: tuple[Leg, ...]


@dataclass(frozen=True, slots=True)
class Table:
    """One report: a header and rows of text cells, ready for CSV."""

    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class UsageReports:
    """The three usage reports of one period."""

    period: str
    ridership: Table
    origin_destination: Table
    concessions: Table


def standing_journeys(revisions: Iterable[Journey], service_day: str) -> list[Journey]:
    """The latest revision of each journey of `service_day`, withdrawn journeys left out."""
    latest: dict[str, Journey] = {}
    for j in revisions:
        if j.service_day != service_day:
            continue
        seen = latest.get(j.journey_id)
        if seen is None or j.revision > seen.revision:
            latest[j.journey_id] = j
    return [j for j in latest.values() if j.legs]


class _Cells:
    """Per cell: how many journeys (or legs) and which cards."""

    def __init__(self) -> None:
        self.count: dict[tuple[str, ...], int] = defaultdict(int)
        self.cards: dict[tuple[str, ...], set[str]] = defaultdict(set)

    def add(self, key: tuple[str, ...], card: str) -> None:
        self.count[key] += 1
        self.cards[key].add(card)

    def rows(self) -> tuple[tuple[str, ...], ...]:
        out: list[tuple[str, ...]] = []
        for key in sorted(self.count):
            cards = len(self.cards[key])
            if not shown(cards):
                out.append((*key, SUPPRESSED, SUPPRESSED))
            else:
                out.append((*key, str(self.count[key]), str(cards)))
        return tuple(out)


def _place(stop_id: str, stop_areas: Mapping[str, str]) -> str:
    if not stop_id:
        return NO_EXIT
    return stop_areas.get(stop_id, stop_id)


def build_reports(
    revisions: Iterable[Journey],
    period: str,
    timezone: tzinfo,
    stop_areas: Mapping[str, str] | None = None,
) -> UsageReports:
    """The usage reports of service day `period`.

    `timezone` gives the local hour of each leg's entry; `stop_areas` maps a stop to the
    fare area the origin-destination matrix uses (a stop not in it stands for itself).
    """
    areas: Mapping[str, str] = stop_areas or {}
    ridership, od, concessions = _Cells(), _Cells(), _Cells()
    for j in standing_journeys(revisions, period):
        for leg in j.legs:
            hour = f"{leg.entry_at.astimezone(timezone).hour:02d}"
            ridership.add((leg.operator_id, hour), j.card_token)
            od.add((_place(leg.from_stop_id, areas), _place(leg.to_stop_id, areas)), j.card_token)
        concessions.add((j.rider_category_id or NO_CATEGORY,), j.card_token)
    level = "area" if areas else "stop"
    return UsageReports(
        period=period,
        ridership=Table(
            "ridership_by_operator_hour",
            ("operator_id", "hour", "boardings", "cards"),
            ridership.rows(),
        ),
        origin_destination=Table(
            "origin_destination",
            (f"origin_{level}", f"destination_{level}", "legs", "cards"),
            od.rows(),
        ),
        concessions=Table(
            "concession_take_up",
            ("rider_category_id", "journeys", "cards"),
            concessions.rows(),
        ),
    )
