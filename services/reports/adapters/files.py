"""Writing the reports into a directory: per table its CSV, SVG and PNG, then
`report.md` and `index.html`; or into an evidence pack, `<packs>/<council>/<period>/`,
replaced as a whole (docs/reports.md#evidence-packs)."""

from __future__ import annotations

import csv
import secrets
import shutil
from pathlib import Path

from services.reports.adapters.png import drawing_png
from services.reports.domain.chart import drawing_svg, layout
from services.reports.domain.reports import UsageReports
from services.reports.domain.summary import index_html, report_md
from services.reports.domain.tables import Table

NETWORK_DIR = "network"  # the packs of the whole network (no --council)


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


def council_dir_name(funder_id: str | None) -> str:
    """The directory of a council's packs: its funder id with ':' as '_' (`funder_camden`;
    a party's name has no ':' or '/', so no two councils share one); `network` without."""
    return NETWORK_DIR if funder_id is None else funder_id.replace(":", "_")


def pack_dir(packs: Path, reports: UsageReports) -> Path:
    """`<packs>/<council dir>/<period>` of `reports`."""
    council = reports.scope.council
    funder_id = council.funder_id if council is not None else None
    return packs / council_dir_name(funder_id) / reports.scope.period.label


def write_pack(reports: UsageReports, packs: Path) -> list[Path]:
    """Every file of `reports` as the evidence pack of its council and period; the paths.

    The pack is built in a hidden sibling directory and renamed into place, so a reader
    (the portal) never sees a half-written pack: an earlier pack of the period is renamed
    aside first, then removed. A failed build leaves the earlier pack as it was."""
    final = pack_dir(packs, reports)
    final.parent.mkdir(parents=True, exist_ok=True)
    # Not mkdtemp: its 0700 would hide the pack from a portal running as another user.
    building = final.parent / f".{final.name}.{secrets.token_hex(6)}.building"
    building.mkdir()
    try:
        written = write_reports(reports, building)
        _rename_over(building, final)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return [final / path.name for path in written]


def _rename_over(new: Path, final: Path) -> None:
    """Rename directory `new` to `final`, replacing a pack already there."""
    try:
        new.rename(final)
        return
    except OSError:  # a pack of the period already: a directory cannot be renamed over
        if not final.is_dir() or final.is_symlink():
            raise
    old = final.parent / f".{final.name}.{secrets.token_hex(6)}.old"
    final.rename(old)
    try:
        new.rename(final)
    except BaseException:
        old.rename(final)  # put the earlier pack back
        raise
    shutil.rmtree(old, ignore_errors=True)
