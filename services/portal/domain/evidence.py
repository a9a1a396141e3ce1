"""Evidence packs: the rules of their layout, written by `clearway reports usage --packs`
(docs/reports.md#evidence-packs) and read by the officer pages.

`<reports dir>/<council dir>/<period>/`: the council's directory is its funder id with ':'
as '_' (`funder_camden`), the period a service day or a month; in it a CSV, an SVG and a PNG
per table, `report.md` and `index.html`. Only names that match these patterns exactly are
ever looked up, so no name from a URL can reach outside a council's own directory.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

SUMMARY = "report.md"
_COUNCIL_DIR = re.compile(r"funder_[A-Za-z0-9._-]{1,64}")  # a funder party's name
_PERIOD = re.compile(r"([0-9]{4})-([0-9]{2})(?:-([0-9]{2}))?")
_PACK_FILE = re.compile(r"([a-z][a-z0-9_]{0,63})\.(csv|svg|png)")
_REPORT_LINE = re.compile(r"\| ([^|`]+?) \| `([a-z][a-z0-9_]{0,63})\.csv` \|")
CONTENT_TYPES = {"csv": "text/csv", "svg": "image/svg+xml", "png": "image/png"}


def council_dir(funder_id: str) -> str | None:
    """The directory of a council's packs (`funder:camden` -> `funder_camden`); None for an
    id that is not a funder party's."""
    kind, colon, name = funder_id.partition(":")
    folded = f"{kind}_{name}"
    if kind != "funder" or not colon or not _COUNCIL_DIR.fullmatch(folded) or name in {".", ".."}:
        return None
    return folded


@dataclass(frozen=True, slots=True)
class EvidencePeriod:
    """The period of a pack: service days `first` to `last`, one day or one month."""

    label: str  # the directory's name: 2026-06-15 or 2026-06
    first: date
    last: date

    @property
    def month(self) -> bool:
        """True for a calendar month's pack."""
        return len(self.label) == len("2026-06")

    @property
    def text(self) -> str:
        """'June 2026' or '15 June 2026'."""
        if self.month:
            return self.first.strftime("%B %Y")
        return f"{self.first.day} {self.first.strftime('%B %Y')}"


def parse_period(text: str) -> EvidencePeriod | None:
    """The period a pack directory (or a URL) names; None for anything else."""
    match = _PERIOD.fullmatch(text)
    if match is None:
        return None
    year, month, day = match.groups()
    try:
        if day is not None:
            first = date(int(year), int(month), int(day))
            return EvidencePeriod(text, first, first)
        first = date(int(year), int(month), 1)
    except ValueError:
        return None
    days = calendar.monthrange(first.year, first.month)[1]
    return EvidencePeriod(text, first, first.replace(day=days))


def newest_first(periods: Iterable[EvidencePeriod]) -> list[EvidencePeriod]:
    """By the last day covered, newest first; a month before the day it ends on, so each
    month comes just above its own days."""
    return sorted(periods, key=lambda p: (p.last, -p.first.toordinal()), reverse=True)


def pack_file(name: str) -> tuple[str, str] | None:
    """(table, content type) of a file of a pack that may be served; None otherwise."""
    match = _PACK_FILE.fullmatch(name)
    if match is None:
        return None
    return match.group(1), CONTENT_TYPES[match.group(2)]


@dataclass(frozen=True, slots=True)
class PackTable:
    """One table of a pack: its CSV, and its chart as SVG and PNG when there."""

    name: str
    title: str
    svg: bool
    png: bool

    @property
    def chart(self) -> str:
        """The chart's file name, SVG first ('' when the pack has neither)."""
        if self.svg:
            return f"{self.name}.svg"
        return f"{self.name}.png" if self.png else ""


def pack_tables(names: Iterable[str], summary: str) -> list[PackTable]:
    """The tables of a pack (every CSV), in report.md's order with its titles; a table it
    does not list comes after, by name."""
    present = set(names)
    tables = [
        found[0]
        for found in map(pack_file, sorted(present))
        if found is not None and found[1] == "text/csv"
    ]
    titles: dict[str, str] = {}
    for title, name in _REPORT_LINE.findall(summary):
        titles.setdefault(name, title.strip())
    order = {name: i for i, name in enumerate(titles)}
    tables.sort(key=lambda n: (order.get(n, len(order)), n))
    return [
        PackTable(
            name,
            titles.get(name) or name.replace("_", " ").capitalize(),
            f"{name}.svg" in present,
            f"{name}.png" in present,
        )
        for name in tables
    ]
