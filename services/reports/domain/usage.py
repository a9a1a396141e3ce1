"""Travel reports from priced journeys: pure, privacy-preserving aggregation.

Every figure counts DISTINCT CARDS for the small-cell rule (domain/tables.py,
clearway.disclosure). No card token or journey id leaves this module: the reports carry
only operators, hours, stops/fare areas, rider categories and counts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo

from services.reports.domain.scope import Council, Period
from services.reports.domain.tables import Cell, Table, protect

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


def latest_revisions(revisions: Iterable[Journey]) -> list[Journey]:
    """The latest revision of each journey id, sorted by journey id; withdrawn ones (no
    legs) too, as they supersede the revisions before them. Of equal revisions, the first."""
    latest: dict[str, Journey] = {}
    for j in revisions:
        seen = latest.get(j.journey_id)
        if seen is None or j.revision > seen.revision:
            latest[j.journey_id] = j
    return [latest[journey_id] for journey_id in sorted(latest)]


def standing_journeys(revisions: Iterable[Journey], period: Period) -> list[Journey]:
    """The latest revision of each journey of `period`, withdrawn journeys left out."""
    in_period = (j for j in revisions if period.contains(j.service_day))
    return [j for j in latest_revisions(in_period) if j.legs]


def in_area(
    journey: Journey, stop_areas: Mapping[str, frozenset[str]], areas: frozenset[str]
) -> bool:
    """Whether any leg of `journey` starts or ends at a stop in one of `areas`."""
    return any(
        stop_areas.get(stop, frozenset()) & areas
        for leg in journey.legs
        for stop in (leg.from_stop_id, leg.to_stop_id)
    )


class _CardCells:
    """Per cell: how many boardings (legs, journeys) and which cards."""

    def __init__(self) -> None:
        self.count: dict[tuple[str, ...], int] = defaultdict(int)
        self.cards: dict[tuple[str, ...], set[str]] = defaultdict(set)

    def add(self, key: tuple[str, ...], card: str) -> None:
        self.count[key] += 1
        self.cards[key].add(card)

    def cells(self) -> list[Cell]:
        return [
            Cell(key, (n, len(self.cards[key])), people=len(self.cards[key]))
            for key, n in self.count.items()
        ]


def _place(stop_id: str, stop_areas: Mapping[str, frozenset[str]]) -> str:
    """A stop's fare area(s) joined by '+'; a stop in no area stands for itself."""
    if not stop_id:
        return NO_EXIT
    return "+".join(sorted(stop_areas.get(stop_id, ()))) or stop_id


@dataclass(frozen=True, slots=True)
class TravelReports:
    """Ridership, the origin-destination matrix and concession take-up of one period."""

    ridership: Table
    origin_destination: Table
    concessions: Table


def build_travel_reports(
    revisions: Iterable[Journey],
    period: Period,
    timezone: tzinfo,
    stop_areas: Mapping[str, frozenset[str]] | None = None,
    council: Council | None = None,
) -> TravelReports:
    """The travel reports of `period`, of the journeys in `council`'s area (or all).

    `timezone` gives the local hour of each leg's entry; `stop_areas` maps a stop to its
    fare areas (a stop not in it stands for itself).
    """
    areas: Mapping[str, frozenset[str]] = stop_areas or {}
    ridership, od, concessions = _CardCells(), _CardCells(), _CardCells()
    for j in standing_journeys(revisions, period):
        if council is not None and not in_area(j, areas, council.area_ids):
            continue
        for leg in j.legs:
            hour = f"{leg.entry_at.astimezone(timezone).hour:02d}"
            origin = _place(leg.from_stop_id, areas)
            ridership.add((origin, hour, leg.operator_id), j.card_token)
            od.add((origin, _place(leg.to_stop_id, areas)), j.card_token)
        concessions.add((j.rider_category_id or NO_CATEGORY,), j.card_token)
    level = "area" if areas else "stop"
    # Ridership and the matrix both add up to the legs boarded in each area: secondary
    # suppression within each boarding area keeps either from unlocking the other.
    return TravelReports(
        ridership=Table(
            "ridership",
            "Boardings by boarding area, hour and operator",
            (f"boarding_{level}", "hour", "operator_id", "boardings", "cards"),
            protect(ridership.cells(), subtotal_prefix=1),
        ),
        origin_destination=Table(
            "origin_destination",
            "Origin-destination matrix (legs)",
            (f"origin_{level}", f"destination_{level}", "legs", "cards"),
            protect(od.cells(), subtotal_prefix=1),
        ),
        concessions=Table(
            "concession_take_up",
            "Concession take-up by rider category",
            ("rider_category_id", "journeys", "cards"),
            protect(concessions.cells()),
        ),
    )
