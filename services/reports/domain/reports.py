"""The usage evidence of one council (or the whole network) and period: every table and
the chart drawn from it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, tzinfo
from enum import StrEnum

from clearway.disclosure import MINIMUM_CELL
from clearway.scheme.model import EntitlementScheme
from services.reports.domain import benefits, usage
from services.reports.domain.chart import BarChart
from services.reports.domain.scope import Council, Period
from services.reports.domain.tables import Table, figure

LARGEST_OD_PAIRS = 25  # the matrix's chart shows the largest pairs; its CSV has them all


class Source(StrEnum):
    """Where the journeys and postings were read."""

    TOPICS = "topics"  # the journeys and benefits topics, read whole
    ARCHIVE = "archive"  # the day archive (`clearway reports archive`)


@dataclass(frozen=True, slots=True)
class ReportScope:
    """What the reports cover and what they need to know about the network and scheme."""

    period: Period
    timezone: tzinfo  # the network's: a leg's hour is local
    currency: str  # the scheme's
    council: Council | None = None  # None: the whole network
    stop_areas: Mapping[str, frozenset[str]] = field(default_factory=dict)
    entitlement_schemes: tuple[EntitlementScheme, ...] = ()
    source: Source = Source.TOPICS
    # Days of the period the source holds nothing of (a day the archive lacks): not counted.
    days_without_data: tuple[date, ...] = ()

    def describe(self) -> str:
        """Whose and when, for titles: 'London Borough of Camden (funder:camden), 2026-06'."""
        who = (
            "Whole network"
            if self.council is None
            else f"{self.council.name} ({self.council.funder_id})"
        )
        return f"{who}, {self.period.label}"


@dataclass(frozen=True, slots=True)
class Report:
    """One table and its chart."""

    table: Table
    chart: BarChart
    counted: str  # what the small-cell rule counts in it: "cards" or "redemptions"


@dataclass(frozen=True, slots=True)
class UsageReports:
    """Every report of one scope, in the order they are published."""

    scope: ReportScope
    reports: tuple[Report, ...]

    def table(self, name: str) -> Table:
        """The table called `name`."""
        return next(r.table for r in self.reports if r.table.name == name)


def build_reports(
    journeys: Iterable[usage.Journey],
    postings: Iterable[benefits.Posting],
    scope: ReportScope,
) -> UsageReports:
    """The usage reports of `scope` from journey revisions and benefit postings."""
    council_id = scope.council.funder_id if scope.council is not None else None
    travel = usage.build_travel_reports(
        journeys, scope.period, scope.timezone, scope.stop_areas, scope.council
    )
    paid = benefits.standing_postings(postings, scope.period, council_id)
    spend = benefits.voucher_spend(paid, scope.currency)
    budget = benefits.budget_used(
        paid, scope.entitlement_schemes, scope.period, scope.currency, council_id
    )
    rewards = benefits.rewards(paid, scope.currency)
    about = scope.describe()
    by_cards = f"{about}; cells under {MINIMUM_CELL} cards not shown"
    by_redemptions = f"{about}; cells under {MINIMUM_CELL} redemptions not shown"
    by_rewards = f"{about}; cells under {MINIMUM_CELL} rewards not shown"
    return UsageReports(
        scope,
        (
            Report(travel.ridership, ridership_chart(travel.ridership, by_cards), "cards"),
            Report(
                travel.origin_destination,
                origin_destination_chart(travel.origin_destination, by_cards),
                "cards",
            ),
            Report(travel.concessions, concessions_chart(travel.concessions, by_cards), "cards"),
            Report(spend, voucher_chart(spend, by_redemptions, scope.currency), "redemptions"),
            Report(budget, budget_chart(budget, by_redemptions, scope.currency), "redemptions"),
            Report(rewards, rewards_chart(rewards, by_rewards, scope.currency), "rewards"),
        ),
    )


Row = Mapping[str, str]


def _chart(
    table: Table,
    subtitle: str,
    *,
    category: Callable[[Row], str],
    bars: Callable[[Row], Iterable[tuple[str, str]]],
    x_label: str,
    y_label: str,
    stacked: bool = False,
    minor_units: bool = False,
    largest: int | None = None,
    legend: bool = True,
) -> BarChart:
    """A bar chart of the shown figures of `table`: per row, its `category` and `bars`
    (series name, column) pairs."""
    values: dict[tuple[str, str], int] = {}
    for raw in table.rows:
        row = dict(zip(table.columns, raw, strict=True))
        for series, column in bars(row):
            n = figure(row[column])
            if n is not None:
                values[(category(row), series)] = n
    title = table.title
    if largest is not None and len(values) > largest:
        kept = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:largest]
        values, title = dict(kept), f"{table.title}: the {largest} largest cells"
    return BarChart(
        name=table.name,
        title=title,
        subtitle=subtitle,
        x_label=x_label,
        y_label=y_label,
        categories=tuple(sorted({c for c, _ in values})),
        series=tuple(sorted({s for _, s in values})),
        values=values,
        stacked=stacked,
        minor_units=minor_units,
        legend=legend,
    )


def ridership_chart(table: Table, subtitle: str) -> BarChart:
    """Boardings per local hour, stacked by boarding area and operator."""
    area = table.columns[0]
    return _chart(
        table,
        subtitle,
        category=lambda r: f"{r['hour']}:00",
        bars=lambda r: [(f"{r[area]} · {r['operator_id']}", "boardings")],
        x_label="Hour of entry (local time)",
        y_label="Boardings",
        stacked=True,
    )


def origin_destination_chart(table: Table, subtitle: str) -> BarChart:
    """Legs per origin-destination pair, the largest pairs."""
    origin, destination = table.columns[:2]
    level = "fare area" if origin.endswith("area") else "stop"
    return _chart(
        table,
        subtitle,
        category=lambda r: f"{r[origin]} to {r[destination]}",
        bars=lambda _r: [("legs", "legs")],
        x_label=f"Origin to destination ({level})",
        y_label="Legs",
        largest=LARGEST_OD_PAIRS,
        legend=False,
    )


def concessions_chart(table: Table, subtitle: str) -> BarChart:
    """Distinct cards per rider category."""
    return _chart(
        table,
        subtitle,
        category=lambda r: r["rider_category_id"],
        bars=lambda _r: [("cards", "cards")],
        x_label="Rider category",
        y_label="Cards (distinct)",
        legend=False,
    )


def voucher_chart(table: Table, subtitle: str, currency: str) -> BarChart:
    """Spend per category, one bar per provider (per scheme and category when several)."""
    several = len({row[0] for row in table.rows}) > 1
    return _chart(
        table,
        subtitle,
        category=lambda r: (
            f"{r['category']} ({r['entitlement_scheme_id']})" if several else r["category"]
        ),
        bars=lambda r: [(r["provider_id"], "amount_minor")],
        x_label="Service category",
        y_label=f"Spend ({currency})",
        minor_units=True,
    )


def budget_chart(table: Table, subtitle: str, currency: str) -> BarChart:
    """Budget and budget used per entitlement scheme."""
    return _chart(
        table,
        subtitle,
        category=lambda r: r["entitlement_scheme_id"],
        bars=lambda _r: [("budget", "budget_minor"), ("used", "used_minor")],
        x_label="Entitlement scheme",
        y_label=f"Amount ({currency})",
        minor_units=True,
    )


def rewards_chart(table: Table, subtitle: str, currency: str) -> BarChart:
    """Amount rewarded per reward rule."""
    return _chart(
        table,
        subtitle,
        category=lambda r: r["reward_rule_id"],
        bars=lambda _r: [("amount", "amount_minor")],
        x_label="Reward rule",
        y_label=f"Amount ({currency})",
        minor_units=True,
        legend=False,
    )
