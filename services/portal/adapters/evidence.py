"""The evidence packs on disk (`CLEARWAY_REPORTS_DIR`), read for the officer pages.

Every name looked up is checked against the layout's strict patterns first
(`domain/evidence.py`), must be listed in its directory, and is opened without following
a symbolic link (each of the council's directory, the period's and the file is `lstat`ed,
the file opened with `O_NOFOLLOW`): a pack can only show what the reports job wrote into
that council's directory. File reads run in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from services.portal.domain.evidence import (
    SUMMARY,
    EvidencePeriod,
    council_dir,
    newest_first,
    pack_file,
    parse_period,
)

log = logging.getLogger(__name__)
MAX_FILE_BYTES = 32 * 1024 * 1024  # far above a council's month; a bound on memory per request
MAX_SUMMARY_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class PackListing:
    """A pack of the council: its period and when it was written."""

    period: EvidencePeriod
    written_at: datetime


@dataclass(frozen=True, slots=True)
class Pack:
    """One pack: its period, when it was written, its file names and report.md's text."""

    period: EvidencePeriod
    written_at: datetime
    names: frozenset[str]
    summary: str


@dataclass(frozen=True, slots=True)
class PackFile:
    """A file of a pack, as served."""

    name: str
    content_type: str
    body: bytes


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _real_dir(path: Path) -> os.stat_result | None:
    """The directory's status; None when absent, a link or not a directory."""
    found = _lstat(path)
    return found if found is not None and stat.S_ISDIR(found.st_mode) else None


def _regular(path: Path) -> bool:
    found = _lstat(path)
    return found is not None and stat.S_ISREG(found.st_mode)


def _names(path: Path) -> frozenset[str]:
    """The names in directory `path` (none when it is gone: replaced by a newer run)."""
    try:
        return frozenset(os.listdir(path))
    except OSError:
        return frozenset()


def _written_at(status: os.stat_result) -> datetime:
    return datetime.fromtimestamp(status.st_mtime, UTC)


def _read_file(path: Path, limit: int) -> bytes | None:
    """The bytes of regular file `path` (never through a link); None when it is anything
    else, gone, or larger than `limit`."""
    try:
        # O_NONBLOCK: a FIFO planted in a pack must not hang the worker thread.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        found = os.fstat(f.fileno())
        if not stat.S_ISREG(found.st_mode):
            return None
        body = f.read(limit + 1) if found.st_size <= limit else b""
        if len(body) > limit or found.st_size > limit:
            log.warning("evidence file too large", extra={"bytes": found.st_size})
            return None
        return body


class EvidenceShelf:
    """The packs under one reports directory, each council seeing only its own."""

    def __init__(self, root: Path, *, max_file_bytes: int = MAX_FILE_BYTES) -> None:
        self.root = root
        self.max_file_bytes = max_file_bytes

    def _council(self, funder_id: str) -> Path | None:
        name = council_dir(funder_id)
        if name is None:
            return None
        path = self.root / name
        return path if _real_dir(path) is not None else None

    def _pack_dir(self, funder_id: str, label: str) -> tuple[Path, EvidencePeriod] | None:
        council = self._council(funder_id)
        period = parse_period(label)
        if council is None or period is None or label not in _names(council):
            return None
        path = council / period.label
        return (path, period) if _real_dir(path) is not None else None

    def list_packs(self, funder_id: str) -> list[PackListing]:
        """The council's packs, newest first (see `newest_first`)."""
        council = self._council(funder_id)
        if council is None:
            return []
        found: dict[EvidencePeriod, datetime] = {}
        for name in _names(council):  # a pack being built is hidden: '.2026-06.….building'
            period = parse_period(name)
            status = _real_dir(council / name) if period is not None else None
            if period is not None and status is not None:
                found[period] = _written_at(status)
        return [PackListing(p, found[p]) for p in newest_first(found)]

    def read_pack(self, funder_id: str, label: str) -> Pack | None:
        """The council's pack of period `label`; None when there is none."""
        located = self._pack_dir(funder_id, label)
        if located is None:
            return None
        path, period = located
        status = _real_dir(path)
        # Regular files only: a link in a pack is neither listed nor served.
        names = frozenset(n for n in _names(path) if _regular(path / n))
        if status is None or not names:
            return None
        summary = b""
        if SUMMARY in names:
            summary = _read_file(path / SUMMARY, MAX_SUMMARY_BYTES) or b""
        return Pack(period, _written_at(status), names, summary.decode("utf-8", "replace"))

    def read_file(self, funder_id: str, label: str, name: str) -> PackFile | None:
        """One file of the council's pack (a table's CSV, SVG or PNG); None otherwise."""
        kind = pack_file(name)
        located = self._pack_dir(funder_id, label) if kind is not None else None
        if kind is None or located is None:
            return None
        path, _ = located
        if name not in _names(path):
            return None
        body = _read_file(path / name, self.max_file_bytes)
        return None if body is None else PackFile(name, kind[1], body)

    # -- for the event loop ---------------------------------------------------------------

    async def packs(self, funder_id: str) -> list[PackListing]:
        """`list_packs`, in a worker thread."""
        return await asyncio.to_thread(self.list_packs, funder_id)

    async def pack(self, funder_id: str, label: str) -> Pack | None:
        """`read_pack`, in a worker thread."""
        return await asyncio.to_thread(self.read_pack, funder_id, label)

    async def file(self, funder_id: str, label: str, name: str) -> PackFile | None:
        """`read_file`, in a worker thread."""
        return await asyncio.to_thread(self.read_file, funder_id, label, name)
