"""`clearway verify-settlement DIR --scheme FILE --public-key PEM [--period-files DIR ...]`.

A party checks its own settlement file set with nothing but the files, the published
scheme file and the scheme's public key (no access to the scheme's databases):
1. manifest.sig is an Ed25519 signature of manifest.json by the published key (anything
   else is refused: nothing in the set is trusted);
2. every file the manifest lists has its size and sha256;
3. every line of lines.csv is recomputed from its own columns under the scheme rules in
   force on its service day (journeys with `settle_journey`, top-ups with
   `top_up_position`, redemptions and rewards with `benefit_position`): target, method,
   rule, fee, funding, weight, amount = target - previous; lines numbered, sorted and of
   this party and period;
4. summary.json equals the summary the lines give (totals, counts, payment, end-to-end id);
5. with --period-files (the party's own sets of earlier periods), a line's `previous`
   equals the journey's target in the latest earlier set that has it.
Exit 0 only when everything holds; 1 when something does not; 2 when it cannot start.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import heapq
import itertools
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from clearway.scheme.file import load_scheme
from clearway.scheme.model import Party, Scheme

from ..adapters.file_sets import load_public_key, raw_public_key
from ..domain.errors import SettlementError
from ..domain.periods import parse_period_id
from ..domain.settlement_files import (
    COLUMNS,
    LINES_FILE,
    MANIFEST_FILE,
    SIGNATURE_FILE,
    SUMMARY_FILE,
    LineChecker,
    LineRecord,
    Manifest,
    SummaryTotals,
    key_fingerprint,
    parse_csv_header,
    parse_csv_line,
    parse_manifest,
    render_summary,
)

SHOWN_PROBLEMS = 25  # the report names this many problems, then counts the rest

Key = tuple[str, str, str]


@dataclass(slots=True)
class Report:
    """What the verification found; `problems` are failures, `notes` are not."""

    directory: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    refused: bool = False

    @property
    def ok(self) -> bool:
        """Whether every check held."""
        return not self.problems and not self.refused

    def render(self) -> str:
        """The short human report."""
        out = [f"settlement file set {self.directory}"]
        out += [f"  ok: {c}" for c in self.checks]
        out += [f"  note: {n}" for n in self.notes]
        out += [f"  {p}" for p in self.problems[:SHOWN_PROBLEMS]]
        if len(self.problems) > SHOWN_PROBLEMS:
            out.append(f"  ... and {len(self.problems) - SHOWN_PROBLEMS} more problem(s)")
        if self.refused:
            out.append(
                "REFUSED: not signed by the scheme's published key; nothing in it is trusted"
            )
        elif self.problems:
            out.append(f"FAILED: {len(self.problems)} problem(s)")
        else:
            out.append("VERIFIED")
        return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `clearway verify-settlement`."""
    parser = argparse.ArgumentParser(
        prog="clearway verify-settlement",
        description="Check a party's signed settlement file set from the files alone.",
    )
    parser.add_argument("directory", type=Path, help="<root>/<period_id>/<party_id>")
    parser.add_argument("--scheme", type=Path, required=True, help="the published scheme file")
    parser.add_argument(
        "--public-key", type=Path, required=True, help="the scheme's signing public key (PEM)"
    )
    parser.add_argument(
        "--period-files",
        type=Path,
        nargs="*",
        default=[],
        metavar="DIR",
        help="the party's file sets of earlier periods: check each line's previous standing",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        scheme = load_scheme(args.scheme)
        public_key = load_public_key(args.public_key)
    except (OSError, ValueError) as exc:  # SchemeError and SettlementFileError are ValueErrors
        print(f"clearway verify-settlement: {exc}", file=sys.stderr)
        return 2
    report = verify_file_set(args.directory, scheme, public_key, earlier=args.period_files)
    print(report.render())
    return 0 if report.ok else 1


def verify_file_set(
    directory: Path,
    scheme: Scheme,
    public_key: Ed25519PublicKey,
    *,
    earlier: Sequence[Path] = (),
) -> Report:
    """Verify the file set in `directory` (see the module docstring); never raises for
    what is in the files, it reports it."""
    report = Report(directory)
    manifest = _check_signature(directory, public_key, report)
    if manifest is None:
        return report
    if manifest.scheme_id != scheme.scheme_id:
        report.problems.append(
            f"{MANIFEST_FILE}: scheme {manifest.scheme_id}, the scheme file is {scheme.scheme_id}"
        )
    _check_files(directory, manifest, report)
    party = _party(scheme, manifest, report)
    standings = _earlier_standings(earlier, manifest, public_key, report)
    totals = _check_lines(directory, scheme, manifest, standings, report)
    if totals is not None and party is not None:
        expected = render_summary(scheme.scheme_id, party, manifest.period_id, totals)
        _check_summary(directory, expected, totals, report)
    return report


def _check_signature(directory: Path, key: Ed25519PublicKey, report: Report) -> Manifest | None:
    """The manifest, when manifest.sig is the published key's signature of it."""
    try:
        body = (directory / MANIFEST_FILE).read_bytes()
        signature = (directory / SIGNATURE_FILE).read_bytes()
    except OSError as exc:
        report.problems.append(f"cannot read the manifest or its signature: {exc}")
        return None
    published = key_fingerprint(raw_public_key(key))
    try:
        manifest = parse_manifest(body)
    except SettlementError as exc:
        manifest = None
        report.problems.append(f"{MANIFEST_FILE}: {exc}")
    if manifest is not None and manifest.signing_key != published:
        report.problems.append(
            f"{MANIFEST_FILE}: signed with key {manifest.signing_key[:16]}…, not the scheme's"
            f" published key {published[:16]}…"
        )
    try:
        key.verify(signature, body)
    except InvalidSignature:
        report.problems.append(
            f"{SIGNATURE_FILE}: not a valid signature of {MANIFEST_FILE} by the scheme's"
            f" published key {published[:16]}…"
        )
        report.refused = True
        return None
    if manifest is None:
        report.refused = True
        return None
    report.checks.append(f"{SIGNATURE_FILE}: signed by the scheme's key {published[:16]}…")
    return manifest


def _check_files(directory: Path, manifest: Manifest, report: Report) -> None:
    """Every listed file has the size and sha256 the signed manifest says."""
    good = 0
    for entry in manifest.files:
        path = directory / entry.name
        if Path(entry.name).name != entry.name or not path.is_file():
            report.problems.append(f"{entry.name}: listed in the manifest but missing")
            continue
        size, digest = _digest(path)
        if size != entry.size or digest != entry.sha256:
            report.problems.append(
                f"{entry.name}: sha256 {digest[:16]}… ({size} bytes) but the manifest says"
                f" {entry.sha256[:16]}… ({entry.size} bytes): altered after signing"
            )
        else:
            good += 1
    listed = {f.name for f in manifest.files} | {MANIFEST_FILE, SIGNATURE_FILE}
    for path in sorted(directory.iterdir()):
        if path.name not in listed:
            report.notes.append(f"{path.name}: not covered by the manifest (ignored)")
    for required in (LINES_FILE, SUMMARY_FILE):
        if required not in listed:
            report.problems.append(f"{required}: not in the manifest")
    if good == len(manifest.files):
        report.checks.append(f"{good} file(s) match the manifest's sizes and sha256")


def _party(scheme: Scheme, manifest: Manifest, report: Report) -> Party | None:
    try:
        day = parse_period_id(manifest.period_id)
    except SettlementError as exc:
        report.problems.append(f"{MANIFEST_FILE}: {exc}")
        return None
    party = scheme.party(manifest.party_id, day) or next(
        (p for p in scheme.parties if p.party_id == manifest.party_id), None
    )
    if party is None:
        report.problems.append(f"{MANIFEST_FILE}: the scheme has no party {manifest.party_id}")
    return party


def _check_lines(
    directory: Path,
    scheme: Scheme,
    manifest: Manifest,
    standings: EarlierStandings | None,
    report: Report,
) -> SummaryTotals | None:
    """Recompute every line; the totals they give (None if lines.csv is unreadable)."""
    totals = SummaryTotals(manifest.period_id, scheme.currency)
    checker = LineChecker(scheme)
    before = len(report.problems)
    try:
        with (directory / LINES_FILE).open(encoding="utf-8", newline="") as source:
            rows = csv.reader(source, strict=True)
            # A set written before benefit postings has neither their columns nor their totals.
            totals.with_benefits = parse_csv_header(next(rows, [])) == COLUMNS
            last: Key | None = None
            for number, row in enumerate(rows, start=1):
                record = _line(number, row, report)
                if record is None:
                    continue
                found = _frame_problems(record, number, manifest, last)
                found += checker.problems(record)
                if standings is not None:
                    found += standings.problems(record)
                report.problems += [f"{LINES_FILE} line {number}: {p}" for p in found]
                last = record.sort_key
                totals.add(record)
    except (OSError, UnicodeDecodeError, csv.Error, SettlementError) as exc:
        report.problems.append(f"{LINES_FILE}: cannot be read: {exc}")
        return None
    if standings is not None:
        standings.report_into(report)
    if len(report.problems) == before:
        report.checks.append(f"{totals.lines} line(s) recomputed from their basis")
    return totals


def _line(number: int, row: Sequence[str], report: Report) -> LineRecord | None:
    try:
        return parse_csv_line(row)
    except SettlementError as exc:
        report.problems.append(f"{LINES_FILE} line {number}: {exc}")
        return None


def _frame_problems(
    record: LineRecord, number: int, manifest: Manifest, last: Key | None
) -> list[str]:
    """Whether the line is numbered, placed and owned as the file says."""
    found = []
    if record.line != number:
        found.append(f"numbered {record.line}")
    if record.party_id != manifest.party_id or record.period_id != manifest.period_id:
        found.append(f"belongs to {record.party_id} {record.period_id}")
    if record.service_day.isoformat() > manifest.period_id:
        found.append(f"service day {record.service_day} after the period")
    if last is not None and record.sort_key <= last:
        found.append("out of order (lines are sorted by source, source_id, account)")
    return found


def _check_summary(directory: Path, expected: bytes, totals: SummaryTotals, report: Report) -> None:
    """summary.json must be exactly `expected`, the summary the lines give."""
    try:
        actual = (directory / SUMMARY_FILE).read_bytes()
    except OSError as exc:
        report.problems.append(f"{SUMMARY_FILE}: cannot be read: {exc}")
        return
    if actual == expected:
        report.checks.append(
            f"{SUMMARY_FILE}: totals and counts equal the lines'"
            f" (net {totals.net}, {totals.lines} lines)"
        )
        return
    try:
        stated = json.loads(actual)
    except ValueError:
        stated = {}
    differences = list(_differences(stated, json.loads(expected)))
    for path, on_file, recomputed in differences[:SHOWN_PROBLEMS]:
        report.problems.append(
            f"{SUMMARY_FILE}: {path} is {json.dumps(on_file)} but the lines give"
            f" {json.dumps(recomputed)}"
        )
    if not differences:
        report.problems.append(f"{SUMMARY_FILE}: not in canonical form")


def _differences(
    stated: object, expected: object, path: str = ""
) -> Iterator[tuple[str, object, object]]:
    if isinstance(stated, dict) and isinstance(expected, dict):
        for key in sorted(set(stated) | set(expected)):
            yield from _differences(
                stated.get(key), expected.get(key), f"{path}.{key}" if path else key
            )
    elif stated != expected:
        yield path or "(document)", stated, expected


def _digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as source:
        while block := source.read(1 << 20):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


# -- earlier periods -------------------------------------------------------------------


class EarlierStandings:
    """The latest target of each (source, source_id, account) in the party's earlier
    file sets, merged as a stream (every lines.csv is sorted by that key)."""

    def __init__(self, sets: Sequence[tuple[str, Path]]) -> None:
        streams = [_targets(period_id, path) for period_id, path in sets]
        merged = heapq.merge(*streams)
        self._latest = (
            (key, list(group)[-1][2]) for key, group in itertools.groupby(merged, lambda r: r[0])
        )
        self._current = next(self._latest, None)
        self.checked = 0
        self.not_found = 0

    def problems(self, record: LineRecord) -> list[str]:
        """Whether the line's previous standing is the latest earlier target."""
        key = record.sort_key
        while self._current is not None and self._current[0] < key:
            self._current = next(self._latest, None)
        if self._current is None or self._current[0] != key:
            if record.previous_minor != 0:
                self.not_found += 1
            return []
        self.checked += 1
        if self._current[1] != record.previous_minor:
            return [
                f"previous {record.previous_minor} but the earlier file sets leave it at"
                f" {self._current[1]}"
            ]
        return []

    def report_into(self, report: Report) -> None:
        """Add what was checked to the report."""
        report.checks.append(f"{self.checked} previous standing(s) equal the earlier targets")
        if self.not_found:
            report.notes.append(
                f"{self.not_found} line(s) with a previous standing not found in the given"
                " earlier file sets (not checked)"
            )


def _targets(period_id: str, directory: Path) -> Iterator[tuple[Key, str, int]]:
    with (directory / LINES_FILE).open(encoding="utf-8", newline="") as source:
        rows = csv.reader(source, strict=True)
        parse_csv_header(next(rows, []))
        for row in rows:
            record = parse_csv_line(row)
            yield record.sort_key, period_id, record.target_minor


def _earlier_standings(
    sets: Sequence[Path], manifest: Manifest, key: Ed25519PublicKey, report: Report
) -> EarlierStandings | None:
    """The earlier sets that verify (signature, files), as standings; None without any."""
    usable = []
    for directory in sets:
        sub = Report(directory)
        earlier = _check_signature(directory, key, sub)
        if earlier is not None:
            _check_files(directory, earlier, sub)
            if earlier.party_id != manifest.party_id or earlier.period_id >= manifest.period_id:
                sub.problems.append(
                    f"is {earlier.party_id} {earlier.period_id}, not an earlier period of"
                    f" {manifest.party_id}"
                )
        if sub.problems or earlier is None:
            report.problems += [f"earlier set {directory}: {p}" for p in sub.problems]
            continue
        usable.append((earlier.period_id, directory))
    return EarlierStandings(usable) if usable else None
