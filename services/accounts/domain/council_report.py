"""The officers' council report (docs/benefits.md): counts of people, never identifiers,
with every cell of fewer than `MINIMUM_CELL` people suppressed by the one disclosure rule
(clearway.disclosure). Budget rows are money aggregates of the council's own spending and
are shown whole."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from clearway.disclosure import MINIMUM_CELL, shown

SPEND_BY_CATEGORY = "spend_by_category"
SPEND_BY_PROVIDER = "spend_by_provider"
BUDGET = "budget"
TAKE_UP = "take_up"
__all__ = ["BUDGET", "MINIMUM_CELL", "SPEND_BY_CATEGORY", "SPEND_BY_PROVIDER", "TAKE_UP"]


@dataclass(frozen=True, slots=True)
class Cell:
    """One aggregated row before disclosure control."""

    labels: tuple[str, ...]
    people: int
    redemptions: int = 0
    amount_minor: int = 0


@dataclass(frozen=True, slots=True)
class ReportRow:
    """A row as the report shows it; a suppressed row shows no figures."""

    labels: tuple[str, ...]
    people: int
    redemptions: int
    amount_minor: int
    suppressed: bool


@dataclass(frozen=True, slots=True)
class ReportTable:
    """A named table of the report."""

    name: str
    columns: tuple[str, ...]
    rows: tuple[ReportRow, ...]


def disclosed(cell: Cell) -> ReportRow:
    """The cell as it may be shown: whole when it counts at least MINIMUM_CELL people,
    otherwise with people, redemptions and amount zeroed and `suppressed` set."""
    if shown(cell.people):
        return ReportRow(cell.labels, cell.people, cell.redemptions, cell.amount_minor, False)
    return ReportRow(cell.labels, 0, 0, 0, True)


def people_table(name: str, columns: Iterable[str], cells: Iterable[Cell]) -> ReportTable:
    """A table of counts of people, each row under disclosure control, in label order."""
    rows = sorted((disclosed(c) for c in cells), key=lambda r: r.labels)
    return ReportTable(name, tuple(columns), tuple(rows))


def budget_table(cells: Iterable[Cell]) -> ReportTable:
    """The budget table: one row per scheme (labels: scheme id, name, budget), `amount`
    what the month's redemptions used of it; money only (no counts), shown whole."""
    rows = tuple(
        ReportRow(c.labels, 0, 0, c.amount_minor, False)
        for c in sorted(cells, key=lambda c: c.labels)
    )
    return ReportTable(BUDGET, ("scheme", "name", "budget", "used"), rows)
