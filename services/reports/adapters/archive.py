"""The day archive (docs/reports.md, "The day archive"): per service day, the journeys and
benefit postings the reports use, kept beyond the topics' retention.

`<archive>/<YYYY-MM-DD>/journeys.jsonl.gz` holds one line per journey id, its latest
revision (a withdrawn one, with no legs, too: it still supersedes); `benefits.jsonl.gz` one
line per posting id. Each is gzip (mtime 0, no file name) of UTF-8 JSON lines sorted by id,
so a run that finds nothing new rewrites nothing and the bytes stay the same. They hold
card tokens: directories 0700, files 0600.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

from clearway.money import Money
from services.reports.domain.archive import days_without_data, merge_journeys, merge_postings
from services.reports.domain.benefits import Posting, PostingKind
from services.reports.domain.scope import Period, parse_service_day
from services.reports.domain.usage import Journey, Leg

JOURNEYS_FILE = "journeys.jsonl.gz"
POSTINGS_FILE = "benefits.jsonl.gz"
COMPRESS_LEVEL = 6  # zlib's default: level 9 is slower for a few per cent
PRIVATE_DIR = 0o700  # card tokens: only the job's user (files: mkstemp's 0600)

Record = dict[str, Any]
T = TypeVar("T")


class ArchiveError(Exception):
    """A day file of the archive that cannot be read (named in the message). An archive run
    leaves it as it is: it may hold what no topic holds any more."""


@dataclass(frozen=True, slots=True)
class ArchiveRun:
    """What an archive run did."""

    days: tuple[date, ...]  # the service days found on the topics, in order
    written: tuple[Path, ...]  # the day files rewritten (or new)
    unchanged: int  # day files that already held everything found
    skipped: int  # records whose service day is not a date (not archived)


@dataclass(frozen=True, slots=True)
class ArchivedPeriod:
    """The archive's journeys and postings of a period, and the days it has no files for."""

    journeys: list[Journey]
    postings: list[Posting]
    days_without_data: tuple[date, ...] = field(default=())


# -- records --------------------------------------------------------------------------------


def journey_record(journey: Journey) -> Record:
    """A journey as a line of the archive: the fields of `Journey` and its `Leg`s, times in
    UTC ISO 8601."""
    return {
        "journey_id": journey.journey_id,
        "card_token": journey.card_token,
        "revision": journey.revision,
        "service_day": journey.service_day,
        "rider_category_id": journey.rider_category_id,
        "legs": [
            {
                "operator_id": leg.operator_id,
                "from_stop_id": leg.from_stop_id,
                "to_stop_id": leg.to_stop_id,
                "entry_at": leg.entry_at.astimezone(UTC).isoformat(),
            }
            for leg in journey.legs
        ],
    }


def journey_of_record(record: Record) -> Journey:
    """The journey of an archive line (KeyError, TypeError, ValueError when it is none)."""
    return Journey(
        journey_id=_text(record, "journey_id"),
        card_token=_text(record, "card_token"),
        revision=_number(record, "revision"),
        service_day=_text(record, "service_day"),
        rider_category_id=_text(record, "rider_category_id"),
        legs=tuple(
            Leg(
                operator_id=_text(leg, "operator_id"),
                from_stop_id=_text(leg, "from_stop_id"),
                to_stop_id=_text(leg, "to_stop_id"),
                entry_at=_utc(_text(leg, "entry_at")),
            )
            for leg in _list(record, "legs")
        ),
    )


def posting_record(posting: Posting) -> Record:
    """A benefit posting as a line of the archive: the fields of `Posting`."""
    return {
        "posting_id": posting.posting_id,
        "kind": posting.kind.value,
        "funder_id": posting.funder_id,
        "amount_minor": posting.amount.amount_minor,
        "currency": posting.amount.currency,
        "service_day": posting.service_day,
        "provider_id": posting.provider_id,
        "entitlement_scheme_id": posting.entitlement_scheme_id,
        "category": posting.category,
        "reward_rule_id": posting.reward_rule_id,
    }


def posting_of_record(record: Record) -> Posting:
    """The posting of an archive line (KeyError, TypeError, ValueError when it is none)."""
    return Posting(
        posting_id=_text(record, "posting_id"),
        kind=PostingKind(_text(record, "kind")),
        funder_id=_text(record, "funder_id"),
        amount=Money(_number(record, "amount_minor"), _text(record, "currency")),
        service_day=_text(record, "service_day"),
        provider_id=_text(record, "provider_id"),
        entitlement_scheme_id=_text(record, "entitlement_scheme_id"),
        category=_text(record, "category"),
        reward_rule_id=_text(record, "reward_rule_id"),
    )


def _text(record: Mapping[str, Any], key: str) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise TypeError(f"{key}: not a string")
    return value


def _number(record: Mapping[str, Any], key: str) -> int:
    value = record[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{key}: not an integer")
    return value


def _list(record: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = record[key]
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise TypeError(f"{key}: not a list of objects")
    return value


def _utc(text: str) -> datetime:
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise ValueError(f"{text}: no timezone")
    return at.astimezone(UTC)


# -- day files ------------------------------------------------------------------------------


def file_bytes(records: Iterable[Record]) -> bytes:
    """A day file's bytes: the records as compact JSON lines, gzipped with mtime 0."""
    text = "".join(
        json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n" for record in records
    )
    return gzip.compress(text.encode("utf-8"), compresslevel=COMPRESS_LEVEL, mtime=0)


def records_of(path: Path, data: bytes, decode: Callable[[Record], T]) -> list[T]:
    """The records of day file `path` (its bytes `data`), each decoded; ArchiveError when
    the file or a line is damaged."""
    try:
        lines = gzip.decompress(data).decode("utf-8").splitlines()
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{path}: not a gzip file of UTF-8 text: {exc}") from exc
    out: list[T] = []
    for number, line in enumerate(lines, start=1):
        try:
            out.append(decode(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            raise ArchiveError(f"{path}, line {number}: not an archive record: {exc!r}") from exc
    return out


def _existing(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write_atomically(path: Path, data: bytes) -> None:
    """`path` holds `data`, through a temporary file in its directory renamed over it, so a
    reader (or a crash) sees the earlier file or the new one, never a part."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the rename must not land before the data
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


def _merge_file(
    path: Path,
    found: list[T],
    decode: Callable[[Record], T],
    merge: Callable[[list[T], list[T]], list[T]],
    encode: Callable[[T], Record],
) -> bool:
    """Merge `found` into day file `path` (created when missing); whether it was rewritten."""
    before = _existing(path)
    kept = records_of(path, before, decode) if before is not None else []
    after = file_bytes(encode(item) for item in merge(kept, found))
    if after == before:
        return False
    _write_atomically(path, after)
    return True


def _merge_day(
    directory: Path, journeys: list[Journey], postings: list[Posting]
) -> list[tuple[Path, bool]]:
    """Merge a day's finds into its two files: (path, rewritten) of each."""
    journeys_path, postings_path = directory / JOURNEYS_FILE, directory / POSTINGS_FILE
    return [
        (
            journeys_path,
            _merge_file(journeys_path, journeys, journey_of_record, merge_journeys, journey_record),
        ),
        (
            postings_path,
            _merge_file(postings_path, postings, posting_of_record, merge_postings, posting_record),
        ),
    ]


def write_archive(
    into: Path, journeys: Iterable[Journey], postings: Iterable[Posting]
) -> ArchiveRun:
    """Merge `journeys` (revisions) and `postings` into the archive `into`, one service day
    at a time: each day file becomes what it held merged with what was found for its day
    (the latest revision of each journey id, each posting id once). Every day found gets
    both files, an empty one when nothing of its kind was found."""
    by_day_journeys: dict[date, list[Journey]] = defaultdict(list)
    by_day_postings: dict[date, list[Posting]] = defaultdict(list)
    skipped = 0
    for journey in journeys:
        if (day := parse_service_day(journey.service_day)) is None:
            skipped += 1
        else:
            by_day_journeys[day].append(journey)
    for posting in postings:
        if (day := parse_service_day(posting.service_day)) is None:
            skipped += 1
        else:
            by_day_postings[day].append(posting)
    into.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    days = tuple(sorted(by_day_journeys.keys() | by_day_postings.keys()))
    written: list[Path] = []
    unchanged = 0
    for day in days:
        directory = into / day.isoformat()
        directory.mkdir(mode=PRIVATE_DIR, exist_ok=True)
        found = (by_day_journeys.get(day, []), by_day_postings.get(day, []))
        for path, changed in _merge_day(directory, *found):
            if changed:
                written.append(path)
            else:
                unchanged += 1
    return ArchiveRun(days, tuple(written), unchanged, skipped)


def read_archive(archive: Path, period: Period) -> ArchivedPeriod:
    """The journeys (revisions) and postings the archive holds for the days of `period`; a
    day without both files is a day without data (what it has is still read)."""
    journeys: list[Journey] = []
    postings: list[Posting] = []
    archived: set[date] = set()
    for day in period.days():
        directory = archive / day.isoformat()
        found = 0
        if (data := _existing(directory / JOURNEYS_FILE)) is not None:
            journeys += records_of(directory / JOURNEYS_FILE, data, journey_of_record)
            found += 1
        if (data := _existing(directory / POSTINGS_FILE)) is not None:
            postings += records_of(directory / POSTINGS_FILE, data, posting_of_record)
            found += 1
        if found == 2:
            archived.add(day)
    return ArchivedPeriod(journeys, postings, days_without_data(period, archived))


def prune_archive(archive: Path, keep_from: date) -> tuple[date, ...]:
    """Remove the day directories of `archive` before `keep_from` (the councils' evidence
    retention: nothing else deletes a day); the days removed, in order. Anything that is
    not a day directory is left alone."""
    removed: list[date] = []
    if not archive.is_dir():
        return ()
    for entry in sorted(archive.iterdir()):
        try:
            day = date.fromisoformat(entry.name)
        except ValueError:
            continue
        if entry.is_dir() and entry.name == day.isoformat() and day < keep_from:
            shutil.rmtree(entry)
            removed.append(day)
    return tuple(removed)
