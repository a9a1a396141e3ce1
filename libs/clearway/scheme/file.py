"""The scheme file on disk (TOML, docs/scheme.md), read and checked at start-up.

Reading is blocking file I/O: call it once while starting, before the event loop serves
(or through `asyncio.to_thread`).
"""

from __future__ import annotations

import csv
import io
import re
import tomllib
import zipfile
from pathlib import Path

from .model import Scheme, SchemeError, SchemeProblem
from .rules import scheme_from_document

_AT_LINE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_AT_END = " (at end of document)"


def load_scheme(path: Path, *, agencies_from: Path | None = None) -> Scheme:
    """The scheme in TOML file `path`; SchemeError names the file, the path in it and what.

    With `agencies_from` (a GTFS feed directory or zip), every agency id the scheme names
    must be one of the feed's (agency.txt), every network id one of its networks, and
    every area id of a funder one of its areas.
    """
    source = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise _refused(source, "(file)", f"cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise _refused(source, "(file)", f"not UTF-8: {exc}") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(source, str(exc), text) from exc
    agencies = networks = areas = None
    if agencies_from is not None:
        agencies = known_agencies(agencies_from)
        networks = known_networks(agencies_from) or None  # a feed without networks: no check
        areas = known_areas(agencies_from) or None  # nor one without areas
    return scheme_from_document(
        doc,
        source=source,
        known_agencies=agencies,
        known_networks=networks,
        known_areas=areas,
    )


def known_agencies(feed: Path) -> frozenset[str]:
    """The agency ids of GTFS feed `feed` (a directory or a zip), from its agency.txt."""
    rows = _rows(feed, "agency.txt")
    if rows is None:
        raise _refused(str(feed), "agency.txt", "the feed has no agency.txt")
    ids = frozenset(row.get("agency_id", "").strip() for row in rows) - {""}
    if not ids:
        raise _refused(str(feed), "agency.txt", "no agency_id in the feed's agency.txt")
    return ids


def known_networks(feed: Path) -> frozenset[str]:
    """The network ids of GTFS feed `feed`: networks.txt, routes.txt and route_networks.txt."""
    found: set[str] = set()
    for name in ("networks.txt", "routes.txt", "route_networks.txt"):
        found.update(row.get("network_id", "").strip() for row in _rows(feed, name) or ())
    return frozenset(found - {""})


def known_areas(feed: Path) -> frozenset[str]:
    """The area ids of GTFS feed `feed`: areas.txt and stop_areas.txt."""
    found: set[str] = set()
    for name in ("areas.txt", "stop_areas.txt"):
        found.update(row.get("area_id", "").strip() for row in _rows(feed, name) or ())
    return frozenset(found - {""})


def _rows(feed: Path, name: str) -> list[dict[str, str]] | None:
    """Rows of table `name` of a feed directory or zip; None when the table is absent."""
    if feed.is_dir():
        file = feed / name
        raw = file.read_bytes() if file.is_file() else None
    elif zipfile.is_zipfile(feed):
        with zipfile.ZipFile(feed) as archive:
            # Feeds are sometimes zipped inside a folder: match on the base name.
            member = next((n for n in archive.namelist() if Path(n).name == name), None)
            raw = archive.read(member) if member is not None else None
    else:
        raise _refused(str(feed), "(feed)", "not a GTFS feed directory or zip file")
    if raw is None:
        return None
    try:
        return list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _refused(str(feed), name, f"cannot read: {exc}") from exc


def _syntax_error(source: str, message: str, text: str) -> SchemeError:
    at_line = _AT_LINE.search(message)
    if at_line is not None:
        reason = message[: at_line.start()]
        where, what = f"line {at_line[1]}", f"TOML syntax error at column {at_line[2]}: {reason}"
    elif message.endswith(_AT_END):
        reason = message.removesuffix(_AT_END)
        where, what = f"line {text.count(chr(10)) + 1}", f"TOML syntax error at the end: {reason}"
    else:
        where, what = "(syntax)", f"TOML syntax error: {message}"
    return _refused(source, where, what)


def _refused(file: str, path: str, message: str) -> SchemeError:
    return SchemeError([SchemeProblem(file, path, message)])
