"""The officers' monthly report (OfficerService.GetCouncilReport) as the portal shows it:
its tables, a suppressed cell's words, each table's CSV and the charts' bars.

Accounts suppresses every cell of fewer than `minimum_cell` people before it answers
(clearway.disclosure); the portal never has the figures of a suppressed cell, and shows
"fewer than 10" in their place.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from clearway.disclosure import MINIMUM_CELL, SUPPRESSED
from clearway.money import Money
from services.portal.domain.chart import Bar
from services.portal.domain.entitlements import SchemeView, category_text
from services.portal.domain.journeys import decimal_amount, format_money, spreadsheet_safe

_MONTH = re.compile(r"(?P<year>[0-9]{4})-(?P<month>0[1-9]|1[0-2])")
TABLE_TITLES = {
    "spend_by_category": "Spend by service category",
    "spend_by_provider": "Spend by provider",
    "budget": "Budget used, by scheme",
    "take_up": "Take-up",
}
FIGURE_COLUMNS = ("people", "redemptions", "amount", "currency")
# Tables of money only (the council's own spending against its budgets): no counts of
# people, nothing suppressed.
MONEY_TABLES = {"budget"}


class MonthError(ValueError):
    """Not a month the report can be asked for (code BAD_MONTH)."""

    code = "BAD_MONTH"


def parse_month(text: str) -> str:
    """A report month typed or linked as YYYY-MM (BAD_MONTH otherwise)."""
    cleaned = text.strip()
    match = _MONTH.fullmatch(cleaned)
    if match is None or not 2000 <= int(match["year"]) <= 2100:
        raise MonthError(cleaned)
    return cleaned


def current_month(today: date) -> str:
    """The month `today` is in, as YYYY-MM."""
    return f"{today.year:04d}-{today.month:02d}"


def suppressed_text(minimum_cell: int) -> str:
    """What a suppressed cell shows: 'fewer than 10'."""
    return f"fewer than {minimum_cell or MINIMUM_CELL}"


@dataclass(frozen=True, slots=True)
class ReportRowView:
    """One cell of the report: its labels and, unless suppressed, its figures."""

    labels: tuple[str, ...]
    people: int
    redemptions: int
    amount: Money
    suppressed: bool

    @property
    def label(self) -> str:
        """The labels in words, for a chart: 'swimming', 'pitch hire · provider:x'."""
        return " · ".join(category_text(label) for label in self.labels)


@dataclass(frozen=True, slots=True)
class ReportTableView:
    """One table of the report (spend_by_category, spend_by_provider, budget, take_up)."""

    name: str
    columns: tuple[str, ...]
    rows: tuple[ReportRowView, ...]

    @property
    def title(self) -> str:
        """'Spend by service category', or the name in words for a table it does not know."""
        return TABLE_TITLES.get(self.name, self.name.replace("_", " ").capitalize())

    @property
    def counts_people(self) -> bool:
        """False for a table of money only (budget used), whose rows count nobody."""
        return self.name not in MONEY_TABLES

    @property
    def amount_heading(self) -> str:
        """'Amount', or 'Used' for the budget table."""
        return "Amount" if self.counts_people else "Used"

    @property
    def figure_columns(self) -> tuple[str, ...]:
        """The CSV's figure columns after the labels."""
        return FIGURE_COLUMNS if self.counts_people else ("used", "currency")

    @property
    def label_columns(self) -> tuple[str, ...]:
        """The headers of the label cells: the table's columns that name labels, as many as
        the widest row has labels ('label 2' for any accounts did not name)."""
        named = [c for c in self.columns if c.lower() not in (*FIGURE_COLUMNS, "used")]
        width = max((len(r.labels) for r in self.rows), default=len(named))
        return tuple(
            (named[n] if n < len(named) else f"label {n + 1}").replace("_", " ")
            for n in range(width)
        )


@dataclass(frozen=True, slots=True)
class CouncilReportView:
    """The council's report for a month."""

    funder_id: str
    month: str
    tables: tuple[ReportTableView, ...]
    minimum_cell: int

    def table(self, name: str) -> ReportTableView | None:
        """The table of that name, if the report has one."""
        return next((t for t in self.tables if t.name == name), None)

    @property
    def suppressed(self) -> str:
        """'fewer than 10'."""
        return suppressed_text(self.minimum_cell)


def report_csv(table: ReportTableView, minimum_cell: int = MINIMUM_CELL) -> str:
    """A report table as CSV (RFC 4180, CRLF): the label columns, then people, redemptions,
    amount (major units) and currency (a money-only table: used and currency); a
    suppressed cell's figures are '<10'. Label cells never start a spreadsheet formula."""
    out = io.StringIO()
    writer = csv.writer(out)
    labels = table.label_columns
    writer.writerow([*(c.replace(" ", "_") for c in labels), *table.figure_columns])
    hidden = SUPPRESSED if minimum_cell == MINIMUM_CELL else f"<{minimum_cell}"
    for row in table.rows:
        cells = [spreadsheet_safe(label) for label in row.labels[: len(labels)]]
        cells += [""] * (len(labels) - len(cells))
        if row.suppressed:
            figures = [hidden] * (len(table.figure_columns) - 1)
        elif table.counts_people:
            figures = [str(row.people), str(row.redemptions), decimal_amount(row.amount)]
        else:
            figures = [decimal_amount(row.amount)]
        writer.writerow([*cells, *figures, row.amount.currency])
    return out.getvalue()


def spend_bars(table: ReportTableView, minimum_cell: int) -> list[Bar]:
    """A bar a row of a spend table: the amount spent (suppressed cells not drawn)."""
    return [
        Bar(
            row.label,
            None if row.suppressed else row.amount.amount_minor,
            f"{suppressed_text(minimum_cell)} people: not shown"
            if row.suppressed
            else format_money(row.amount),
        )
        for row in table.rows
    ]


def budget_bars(
    table: ReportTableView | None, schemes: Sequence[SchemeView], minimum_cell: int
) -> list[Bar]:
    """A bar a scheme with a monthly budget: what the report says was used in its month
    (its `budget` row, matched by scheme id or name) against the monthly budget."""
    rows = table.rows if table is not None else ()
    bars = []
    for scheme in schemes:
        if scheme.monthly_budget.amount_minor <= 0:
            continue
        row = next((r for r in rows if {scheme.scheme_id, scheme.name} & set(r.labels)), None)
        used = Money(0, scheme.monthly_budget.currency)
        if row is not None and row.suppressed:
            bars.append(
                Bar(
                    scheme.name,
                    None,
                    f"{suppressed_text(minimum_cell)} people: not shown",
                    scheme.monthly_budget.amount_minor,
                    format_money(scheme.monthly_budget),
                )
            )
            continue
        if row is not None:
            used = row.amount
        bars.append(
            Bar(
                scheme.name,
                used.amount_minor,
                format_money(used),
                scheme.monthly_budget.amount_minor,
                format_money(scheme.monthly_budget),
            )
        )
    return bars
