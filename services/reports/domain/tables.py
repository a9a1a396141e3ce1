"""Report tables and the small-cell rule applied to their cells (clearway.disclosure).

A cell is shown only when it counts at least `MINIMUM_CELL` people; otherwise every figure
of it reads `SUPPRESSED`. Where a report also publishes a subtotal of a group of cells (the
budget used by an entitlement scheme is the sum of its voucher cells; ridership and the
origin-destination matrix share the boardings per boarding area), one suppressed cell
alone in its group could be worked out by subtraction, so the smallest shown cell of that
group is `WITHHELD` as well (secondary suppression).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from clearway.disclosure import SUPPRESSED, shown

# A cell of enough people whose figures are hidden so that a suppressed neighbour cannot be
# worked out from a published subtotal.
WITHHELD = "withheld"
HIDDEN = frozenset({SUPPRESSED, WITHHELD})


@dataclass(frozen=True, slots=True)
class Table:
    """One report: a name (its files' stem), a title for people, and rows of text cells."""

    name: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def hidden_rows(self) -> int:
        """How many rows have their figures suppressed or withheld."""
        return sum(1 for row in self.rows if any(cell in HIDDEN for cell in row))


@dataclass(frozen=True, slots=True)
class Cell:
    """A cell before the rule: its key, its figures, how many people the rule counts
    (distinct cards, or redemptions standing in for people) and columns never hidden."""

    key: tuple[str, ...]
    figures: tuple[int, ...]
    people: int
    tail: tuple[str, ...] = ()


def figure(text: str) -> int | None:
    """The number a shown cell holds; None for a hidden (or non-numeric) cell."""
    return int(text) if text.isdecimal() else None


def protect(
    cells: Iterable[Cell], subtotal_prefix: int | None = None
) -> tuple[tuple[str, ...], ...]:
    """Rows of `cells`, sorted by key, with the small-cell rule applied.

    A cell of fewer than MINIMUM_CELL people shows SUPPRESSED for every figure. With
    `subtotal_prefix`, cells sharing `key[:subtotal_prefix]` form a group whose subtotal is
    published elsewhere: a group with exactly one suppressed cell has its smallest shown
    cell WITHHELD too, so no suppressed cell is the difference of published figures.
    """
    ordered = sorted(cells, key=lambda c: c.key)
    marks = {c.key: ("" if shown(c.people) else SUPPRESSED) for c in ordered}
    if subtotal_prefix is not None:
        groups: dict[tuple[str, ...], list[Cell]] = defaultdict(list)
        for c in ordered:
            groups[c.key[:subtotal_prefix]].append(c)
        for members in groups.values():
            visible = [c for c in members if not marks[c.key]]
            if len(members) - len(visible) == 1 and visible:
                smallest = min(visible, key=lambda c: (c.people, c.figures, c.key))
                marks[smallest.key] = WITHHELD
    rows: list[tuple[str, ...]] = []
    for c in ordered:
        mark = marks[c.key]
        figures = (mark,) * len(c.figures) if mark else tuple(str(n) for n in c.figures)
        rows.append((*c.key, *figures, *c.tail))
    return tuple(rows)
