"""Reading a GTFS feed (a directory or a .zip) into rows: the I/O side of loading fare data.

`load_fare_data(path)` reads a feed with a GtfsReader and hands its rows to the domain's
assembly (services.fares.adapters.feed_assembly.py), which checks and builds the FareData.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from services.fares.adapters.feed_assembly import assemble_fare_data
from services.fares.adapters.feed_cells import FeedRow
from services.fares.domain.errors import Problem
from services.fares.domain.model import FareData


def load_fare_data(path: str | PathLike[str]) -> FareData:
    """Load and cross-check a GTFS Fares v2 feed (directory or .zip) plus Clearway extensions.

    Raises FeedError (code FEED_INVALID) listing every problem with file, line and field.
    """
    return assemble_fare_data(GtfsReader(Path(path)))


@dataclass
class GtfsReader:
    """A feed's files (a directory or a zip) as CSV rows: implements FeedTables. Problems
    of reading (no such feed, not UTF-8, CSV syntax, missing files or columns) are
    collected in `problems`, where assembly adds its own."""

    path: Path
    problems: list[Problem] = field(default_factory=list)
    _zip_names: dict[str, str] | None = None

    @property
    def name(self) -> str:
        """The folder or zip name without `.zip`."""
        return self.path.name.removesuffix(".zip")

    def __post_init__(self) -> None:
        if self.path.is_file():
            try:
                archive = zipfile.ZipFile(self.path)
            except zipfile.BadZipFile:
                self.problems.append(
                    Problem(self.path.name, 0, "", "not a directory or a zip file")
                )
                return
            with archive:
                # Feeds are sometimes zipped inside a folder: match on the base name.
                self._zip_names = {
                    Path(n).name: n for n in archive.namelist() if not n.endswith("/")
                }
        elif not self.path.is_dir():
            self.problems.append(Problem(str(self.path), 0, "", "no such directory or zip file"))

    def _text(self, name: str) -> str | None:
        if self._zip_names is not None:
            member = self._zip_names.get(name)
            if member is None:
                return None
            with zipfile.ZipFile(self.path) as archive:
                raw = archive.read(member)
        else:
            file = self.path / name
            if not file.is_file():
                return None
            raw = file.read_bytes()
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            self.problems.append(Problem(name, 0, "", f"not UTF-8: {exc}"))
            return None

    def has(self, name: str) -> bool:
        """Whether the feed has file `name`."""
        if self._zip_names is not None:
            return name in self._zip_names
        return (self.path / name).is_file()

    def pairs(self, name: str, first: str, second: str) -> Iterator[tuple[str, str]]:
        """(first, second) column values of every row, stripped; nothing if absent."""
        text = self._text(name)
        if text is None:
            return
        reader = csv.reader(io.StringIO(text, newline=""))
        header = [h.strip().lstrip("\ufeff") for h in next(reader, [])]
        if first not in header or second not in header:
            self.problems.append(Problem(name, 1, second, f"needs columns {first} and {second}"))
            return
        a, b = header.index(first), header.index(second)
        width = max(a, b)
        try:
            for record in reader:
                if len(record) > width:
                    yield record[a].strip(), record[b].strip()
        except csv.Error as exc:
            self.problems.append(Problem(name, reader.line_num, "", f"CSV syntax error: {exc}"))

    def rows(
        self, name: str, *, required: bool = False, columns: tuple[str, ...] = ()
    ) -> Iterator[FeedRow]:
        """Rows of `name`; reports a missing required file or missing required columns."""
        text = self._text(name)
        if text is None:
            if required:
                self.problems.append(Problem(name, 0, "", "required file is missing"))
            return
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = [h.strip().lstrip("\ufeff") for h in next(reader)]
        except StopIteration:
            if required:
                self.problems.append(Problem(name, 0, "", "file is empty"))
            return
        for column in columns:
            if column not in header:
                self.problems.append(Problem(name, 1, column, "required column is missing"))
        if any(column not in header for column in columns):
            return
        try:
            for record in reader:
                if not record or all(not cell.strip() for cell in record):
                    continue
                if len(record) > len(header):
                    self.problems.append(
                        Problem(
                            name,
                            reader.line_num,
                            "",
                            f"{len(record)} values for {len(header)} columns",
                        )
                    )
                    continue
                yield FeedRow(
                    name, reader.line_num, dict(zip(header, record, strict=False)), self.problems
                )
        except csv.Error as exc:
            self.problems.append(Problem(name, reader.line_num, "", f"CSV syntax error: {exc}"))
