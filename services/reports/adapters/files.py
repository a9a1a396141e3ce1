"""Writing the reports into a directory: per table its CSV, SVG and PNG, then
`report.md` and `index.html`."""

from __future__ import annotations

import csv
from pathlib import Path

from services.reports.adapters.png import drawing_png
from services.reports.domain.chart import drawing_svg, layout
from services.reports.domain.reports import UsageReports
from services.reports.domain.summary import index_html, report_md
from services.reports.domain.tables import Table


def write_table(table: Table, out_dir: Path) -> Path:
    """`<out_dir>/<table.name>.csv`."""
    path = out_dir / f"{table.name}.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(table.columns)
        writer.writerows(table.rows)
    return path


def write_reports(reports: UsageReports, out_dir: Path) -> list[Path]:
    """Every file of `reports` in `out_dir` (created); the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for report in reports.reports:
        paths.append(write_table(report.table, out_dir))
        drawing = layout(report.chart)
        svg = out_dir / f"{report.table.name}.svg"
        svg.write_text(drawing_svg(drawing), encoding="utf-8")
        png = out_dir / f"{report.table.name}.png"
        png.write_bytes(drawing_png(drawing))
        paths += [svg, png]
    summary = out_dir / "report.md"
    summary.write_text(report_md(reports), encoding="utf-8")
    index = out_dir / "index.html"
    index.write_text(index_html(reports), encoding="utf-8")
    return [*paths, summary, index]
