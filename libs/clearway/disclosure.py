"""Statistical disclosure control for every report Clearway gives a council (docs/reports.md):
a cell is shown only when it counts at least `MINIMUM_CELL` distinct people; below that
its figures are replaced by `SUPPRESSED`. Shared by the usage reports and the officers'
report in accounts, so the rule is one rule."""

from __future__ import annotations

MINIMUM_CELL = 10
SUPPRESSED = "<10"


def shown(people: int) -> bool:
    """Whether a cell of `people` distinct people may be shown."""
    return people >= MINIMUM_CELL
