"""The pages that go with the report files: `report.md` (a summary to read, with the
suppression rule stated) and `index.html` (a static page linking every file)."""

from __future__ import annotations

from html import escape

from clearway.disclosure import MINIMUM_CELL, SUPPRESSED
from services.reports.domain.archive import day_ranges
from services.reports.domain.reports import Report, Source, UsageReports
from services.reports.domain.tables import WITHHELD, Table

INLINE_ROWS = 30  # a table this short is also shown in the page; longer ones only as CSV

PRIVACY = (
    "No card token, journey id, account, device or e-mail address appears in any file: the "
    "reports hold only operator, stop, area, rider category, scheme, category, provider and "
    "reward rule ids, hours and counts.",
    f"Small cells are suppressed: a cell counting fewer than {MINIMUM_CELL} people shows "
    f"`{SUPPRESSED}` in place of all its figures. Travel reports count distinct cards. "
    "Voucher, budget and reward reports count redemptions (rewards) instead, because a "
    "benefit posting carries no card or account: every person in a cell redeemed at least "
    f"once, so a cell of {MINIMUM_CELL} redemptions holds at most {MINIMUM_CELL} people and "
    "counting redemptions never shows a cell that counting people would hide.",
    f"`{WITHHELD}`: a cell of enough people hidden because a subtotal of its group is "
    "published elsewhere (an entitlement scheme's budget used; the boardings per boarding "
    "area, shared by ridership and the origin-destination matrix), so that a single "
    "suppressed cell cannot be worked out by subtraction.",
    "No totals are published; the charts draw only the cells shown in figures.",
)


def _period_text(reports: UsageReports) -> str:
    period = reports.scope.period
    if period.first == period.last:
        return f"service day {period.first.isoformat()}"
    return f"service days {period.first.isoformat()} to {period.last.isoformat()}"


def _sources_text(reports: UsageReports) -> str:
    rules = (
        "the latest revision of each journey; withdrawn journeys left out; each benefit "
        "posting once"
    )
    if reports.scope.source is Source.ARCHIVE:
        return f"the day archive of the `journeys` and `benefits` topics ({rules})."
    return f"the `journeys` and `benefits` topics ({rules})."


def _missing_text(reports: UsageReports) -> str:
    """'' when every day of the period has data."""
    missing = reports.scope.days_without_data
    if not missing:
        return ""
    return (
        f"Days without data: {day_ranges(missing)} (not in the day archive: nothing of "
        "these days is counted)."
    )


def _area_text(reports: UsageReports) -> str:
    council = reports.scope.council
    if council is None:
        return "the whole network (every journey; benefits of every funder)"
    areas = ", ".join(sorted(council.area_ids)) or "(none declared)"
    return (
        f"GTFS areas {areas}. A journey counts when any of its legs starts or ends at a stop "
        "in one of them; all of its legs are then counted. Voucher spend, budget and rewards "
        f"are those paid by {council.funder_id}."
    )


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|") or " "


def _md_table(table: Table) -> list[str]:
    if not table.rows:
        return ["(no rows)"]
    if len(table.rows) > INLINE_ROWS:
        return [f"{len(table.rows)} rows: see `{table.name}.csv`."]
    lines = [
        "| " + " | ".join(table.columns) + " |",
        "| " + " | ".join("---" for _ in table.columns) + " |",
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return lines


def report_md(reports: UsageReports) -> str:
    """A README-style summary: scope, the privacy rules, and every report with its files."""
    scope = reports.scope
    lines = [
        f"# Usage evidence: {scope.describe()}",
        "",
        f"- Period: {_period_text(reports)}.",
        *([f"- {missing}"] if (missing := _missing_text(reports)) else []),
        f"- Area: {_area_text(reports)}",
        f"- Sources: {_sources_text(reports)}",
        f"- Money: in minor units of {scope.currency} (`amount_minor`, `budget_minor`, "
        "`used_minor`).",
        "- Budget: an entitlement scheme's monthly budget for each calendar month of the "
        "period (for a service day, its month's budget); used: the redemptions of the period.",
        "",
        "## Privacy",
        "",
        *(f"- {rule}" for rule in PRIVACY),
        "",
        "## Reports",
        "",
        "| report | table | chart | rows | hidden rows | rule counts |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in reports.reports:
        name = r.table.name
        lines.append(
            f"| {r.table.title} | `{name}.csv` | `{name}.svg`, `{name}.png` "
            f"| {len(r.table.rows)} | {r.table.hidden_rows()} | {r.counted} |"
        )
    for r in reports.reports:
        lines += ["", f"### {r.table.title}", "", *_md_table(r.table)]
    return "\n".join(lines) + "\n"


def _html_table(table: Table) -> str:
    if not table.rows or len(table.rows) > INLINE_ROWS:
        return ""
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in table.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_report(r: Report) -> str:
    name = escape(r.table.name)
    rows = len(r.table.rows)
    return (
        f'<section id="{name}"><h2>{escape(r.table.title)}</h2>'
        f'<p><img src="{name}.svg" alt="{escape(r.chart.title)}; {escape(r.chart.subtitle)}">'
        f"</p><p>Download: "
        f'<a href="{name}.csv">{name}.csv</a> ({rows} rows, {r.table.hidden_rows()} hidden), '
        f'chart <a href="{name}.svg">SVG</a>, <a href="{name}.png">PNG</a>. '
        f"The small-cell rule counts {escape(r.counted)}.</p>"
        f"{_html_table(r.table)}</section>"
    )


def index_html(reports: UsageReports) -> str:
    """A static page: the scope, the privacy rules, and every report's chart and files."""
    title = f"Usage evidence: {reports.scope.describe()}"
    rules = "".join(f"<li>{escape(rule.replace('`', ''))}</li>" for rule in PRIVACY)
    sections = "\n".join(_html_report(r) for r in reports.reports)
    missing = f"<strong>{escape(text)}</strong> " if (text := _missing_text(reports)) else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "img{max-width:100%;height:auto;border:1px solid #ddd}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}"
        "</style></head><body>\n"
        f"<h1>{escape(title)}</h1>\n"
        f"<p>Period: {escape(_period_text(reports))}. {missing}"
        f"Area: {escape(_area_text(reports))}</p>\n"
        f'<p>Summary: <a href="report.md">report.md</a>. Money in minor units of '
        f"{escape(reports.scope.currency)}.</p>\n"
        f"<h2>Privacy</h2><ul>{rules}</ul>\n"
        f"{sections}\n"
        "</body></html>\n"
    )
