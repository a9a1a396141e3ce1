"""Settlement file sets on disk: `<root>/<period_id>/<party_id>/`, signed, written atomically.

lines.csv streams row by row into a temporary directory with an incremental sha256 (a
period of a million journeys is never one string in memory); then summary.json, any extra
files (the scheme's pain.001.xml), manifest.json and its Ed25519 signature manifest.sig.
The finished directory is fsynced and renamed into place; when the same bytes are already
there nothing is replaced. Formats: domain/settlement_files.py and docs/settlement.md.

`write_file_set` writes one party's set from line records; `PeriodFileSets` writes every
party's set of a period at once from one ordered pass over the period's lines, given as
rows of their parts already rendered (the close: see `LINE_PARTS`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import BinaryIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from clearway.money import Money
from clearway.scheme.model import Party, Scheme

from ..domain.errors import SettlementError
from ..domain.periods import parse_period_id
from ..domain.settlement_files import (
    LINE_FORMAT,
    LINES_FILE,
    MANIFEST_FILE,
    PUBLIC_KEY_FILE,
    SIGNATURE_FILE,
    SUMMARY_FILE,
    LineRecord,
    LineSource,
    Manifest,
    ManifestFile,
    Payment,
    SettlementFileError,
    SummaryTotals,
    csv_header,
    csv_line,
    key_fingerprint,
    payment_for,
    quoted_field,
    render_manifest,
    render_summary,
)

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_RESERVED = frozenset({LINES_FILE, SUMMARY_FILE, MANIFEST_FILE, SIGNATURE_FILE})
_CHUNK = 256 * 1024  # bytes of lines handed to the writer thread at a time
_IN_FLIGHT = 16  # blocks handed to PeriodFileSets' writer thread and not yet written
_JOURNEY = LineSource.JOURNEY.value.encode()
_TOP_UP = LineSource.TOP_UP.value.encode()
_REDEMPTION = LineSource.REDEMPTION.value.encode()
_REWARD = LineSource.REWARD.value.encode()
_SOURCES = ", ".join(source.value for source in LineSource)
_EMPTY: Mapping[str, bytes] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class FileSetInfo:
    """A written (or already present, identical) file set."""

    directory: Path
    period_id: str
    party_id: str
    files: tuple[ManifestFile, ...]  # what the manifest covers, by name
    manifest_sha256: str
    line_count: int
    net: Money
    payment: Payment
    replaced: bool  # False when the same bytes were already in place

    @property
    def end_to_end_id(self) -> str | None:
        """The EndToEndId of the party's credit transfer, when it is paid this period."""
        return self.payment.end_to_end_id

    def path(self, name: str) -> Path:
        """Where file `name` of the set is."""
        return self.directory / name


async def write_file_set(
    root: Path,
    scheme: Scheme,
    party: Party,
    period_id: str,
    lines: AsyncIterator[LineRecord],
    *,
    signer: Ed25519PrivateKey,
    extra_files: Mapping[str, bytes] = _EMPTY,
) -> FileSetInfo:
    """Write `party`'s file set of `period_id` under `root` from `lines` (in lines.csv
    order: sorted by source, source_id, account), signed by `signer`."""
    parse_period_id(period_id)
    _check_name(party.party_id)
    for name in extra_files:
        _check_name(name)
        if name in _RESERVED:
            raise SettlementFileError(f"extra file {name!r} would replace a file of the set")
    period_dir = root / period_id
    await asyncio.to_thread(period_dir.mkdir, parents=True, exist_ok=True)
    staging = await asyncio.to_thread(_staging_directory, period_dir, party)
    try:
        totals = SummaryTotals(period_id, scheme.currency)
        lines_file = await _stream_lines(staging / LINES_FILE, lines, party, totals)
        return await _seal(
            staging,
            scheme,
            party,
            lines_file=lines_file,
            totals=totals,
            extra_files=extra_files,
            signer=signer,
        )
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, staging, ignore_errors=True)
        raise


def _staging_directory(period_dir: Path, party: Party) -> Path:
    """A new temporary directory beside where `party`'s set goes."""
    return Path(tempfile.mkdtemp(dir=period_dir, prefix=f".{party.party_id}."))


async def _seal(
    staging: Path,
    scheme: Scheme,
    party: Party,
    *,
    lines_file: ManifestFile,
    totals: SummaryTotals,
    extra_files: Mapping[str, bytes],
    signer: Ed25519PrivateKey,
) -> FileSetInfo:
    """Add summary.json, the extra files, manifest.json and manifest.sig to a staging
    directory holding lines.csv (`lines_file`), and move the set into place."""
    period_id = totals.period_id
    summary = render_summary(scheme.scheme_id, party, period_id, totals)
    contents = {SUMMARY_FILE: summary, **extra_files}
    files = [lines_file] + [_describe(name, body) for name, body in contents.items()]
    manifest = render_manifest(
        Manifest(
            scheme_id=scheme.scheme_id,
            period_id=period_id,
            party_id=party.party_id,
            files=tuple(files),
            signing_key=key_fingerprint(raw_public_key(signer)),
        )
    )
    contents[MANIFEST_FILE] = manifest
    contents[SIGNATURE_FILE] = signer.sign(manifest)
    final = staging.parent / party.party_id
    replaced = await asyncio.to_thread(_finish, staging, final, contents)
    return FileSetInfo(
        directory=final,
        period_id=period_id,
        party_id=party.party_id,
        files=tuple(sorted(files, key=lambda f: f.name)),
        manifest_sha256=hashlib.sha256(manifest).hexdigest(),
        line_count=totals.lines,
        net=totals.net,
        payment=payment_for(scheme.scheme_id, period_id, party, totals.net),
        replaced=replaced,
    )


async def _stream_lines(
    path: Path,
    lines: AsyncIterator[LineRecord],
    party: Party,
    totals: SummaryTotals,
) -> ManifestFile:
    """Write lines.csv chunk by chunk (the file I/O off the event loop); count and hash."""
    digest = hashlib.sha256()
    size = 0
    out: BinaryIO = await asyncio.to_thread(path.open, "wb")
    try:
        pending = [csv_header().encode()]
        pending_size = len(pending[0])
        last_key: tuple[str, str, str] | None = None
        async for record in lines:
            last_key = _check_record(record, party, totals, last_key)
            row = csv_line(record, totals.lines + 1).encode()
            totals.add(record)
            pending.append(row)
            pending_size += len(row)
            if pending_size >= _CHUNK:
                block = b"".join(pending)
                digest.update(block)
                size += len(block)
                await asyncio.to_thread(out.write, block)
                pending, pending_size = [], 0
        block = b"".join(pending)
        digest.update(block)
        size += len(block)
        await asyncio.to_thread(_write_and_sync, out, block)
    finally:
        await asyncio.to_thread(out.close)
    return ManifestFile(LINES_FILE, size, digest.hexdigest())


def _check_record(
    record: LineRecord,
    party: Party,
    totals: SummaryTotals,
    last_key: tuple[str, str, str] | None,
) -> tuple[str, str, str]:
    """Refuse a record that does not belong in this file or breaks its order."""
    key = record.sort_key
    if (
        record.party_id != party.party_id
        or record.period_id != totals.period_id
        or record.currency != totals.currency
        or record.amount_minor != record.target_minor - record.previous_minor
        or record.service_day.isoformat() > totals.period_id
        or (last_key is not None and key <= last_key)
    ):
        raise SettlementFileError(_refusal(record, party, totals, last_key))
    return key


def _refusal(
    record: LineRecord, party: Party, totals: SummaryTotals, last_key: tuple[str, str, str] | None
) -> str:
    """Why `_check_record` refused `record` (built only when it did)."""
    where = f"line {totals.lines + 1} ({record.source.value} {record.source_id})"
    if record.party_id != party.party_id or record.period_id != totals.period_id:
        return (
            f"{where}: belongs to {record.party_id} {record.period_id},"
            f" not {party.party_id} {totals.period_id}"
        )
    if record.currency != totals.currency:
        return f"{where}: currency {record.currency}, not {totals.currency}"
    if record.amount_minor != record.target_minor - record.previous_minor:
        return f"{where}: amount is not target - previous"
    if record.service_day.isoformat() > totals.period_id:
        return f"{where}: service day {record.service_day} after the period"
    return f"{where}: not after {last_key} (lines must be sorted, unique)"


class _OpenSet:
    """One party's set while a PeriodFileSets writes it: lines.csv so far and the sums
    of its lines (per account, adjustments, counts), kept as the writer's hot loop wants."""

    __slots__ = (
        "account",
        "accounts",
        "adjustment_lines",
        "adjustments",
        "digest",
        "journeys",
        "lines",
        "out",
        "party",
        "party_q",
        "pending",
        "pending_size",
        "redemptions",
        "rewards",
        "size",
        "source",
        "source_id",
        "source_id_q",
        "staging",
        "top_ups",
        "unlisted",
    )

    def __init__(self, party: Party, staging: Path, out: BinaryIO) -> None:
        header = csv_header().encode()
        self.party = party
        self.party_q = quoted_field(party.party_id.encode())
        self.staging = staging
        self.out = out
        self.digest = hashlib.sha256()
        self.size = 0
        self.pending = [header]
        self.pending_size = len(header)
        self.lines = 0
        self.source = b""  # the last line's sort key (no line yet: before every key)
        self.source_id = b""
        self.source_id_q = b""
        self.account = b""
        self.accounts: dict[bytes, int] = {}
        self.adjustments = 0
        self.adjustment_lines = 0
        self.journeys = 0
        self.top_ups = 0
        self.redemptions = 0
        self.rewards = 0
        self.unlisted = 0  # the party's movements that make no line (net 0, no basis)

    def totals(self, period_id: str, currency: str) -> SummaryTotals:
        """The totals of the lines written."""
        return SummaryTotals.of_sums(
            period_id,
            currency,
            accounts={account.decode(): amount for account, amount in self.accounts.items()},
            adjustments_minor=self.adjustments,
            lines=self.lines,
            adjustment_lines=self.adjustment_lines,
            journeys=self.journeys,
            top_ups=self.top_ups,
            redemptions=self.redemptions,
            rewards=self.rewards,
        )


class PeriodFileSets:
    """Every party's file set of one period, written from a single pass over the period's
    lines: rows of `LINE_PARTS` in lines.csv order of every party at once (source, source
    id, then party and account; each party's rows are then in its file's order).

    The checks of `write_file_set` hold line by line: a line must be of a party of the
    scheme, in the scheme's currency, of a service day not after the period, and after the
    party's previous line (sorted, unique); previous = target - amount. A line that fails
    refuses the whole period: nothing is left behind. Rows that net to 0, and rows without
    a basis, make no line (their party still gets a set). Blocks of lines are hashed and
    written by one thread, in order, while the next rows are formatted.

        async with PeriodFileSets(root, scheme, period_id, parties, ...) as sets:
            await ledger.copy_period_lines(period_id, sets.add_rows)
            written = await sets.finish(parties, extra_files)
    """

    def __init__(
        self,
        root: Path,
        scheme: Scheme,
        period_id: str,
        parties: Sequence[Party],
        *,
        party_for: Callable[[str], Party],
        signer: Ed25519PrivateKey,
    ) -> None:
        parse_period_id(period_id)
        self._period_dir = root / period_id
        self._scheme = scheme
        self._period_id = period_id
        self._period = period_id.encode()
        self._period_q = quoted_field(self._period)
        self._parties = list(parties)
        self._party_for = party_for
        self._signer = signer
        self._currency = scheme.currency.encode()
        self._currency_q = quoted_field(self._currency)
        self._sets: dict[bytes, _OpenSet] = {}
        self._days = {self._period}  # service days seen and checked
        self._accounts_q: dict[bytes, bytes] = {}
        self._last_id = b""  # the last source id quoted, and its quoted form
        self._last_id_q = b""
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="file-sets")
        self._in_flight: deque[Future[None]] = deque()

    async def __aenter__(self) -> PeriodFileSets:
        await asyncio.to_thread(self._period_dir.mkdir, parents=True, exist_ok=True)
        try:
            for party in self._parties:
                await self._open(party)
        except BaseException:
            await self._abort()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None or self._sets:
            await self._abort()  # an error, or finish() never called: leave nothing

    async def _open(self, party: Party) -> _OpenSet:
        _check_name(party.party_id)
        staging = await asyncio.to_thread(_staging_directory, self._period_dir, party)
        try:
            out: BinaryIO = await asyncio.to_thread((staging / LINES_FILE).open, "wb")
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, staging, ignore_errors=True)
            raise
        opened = _OpenSet(party, staging, out)
        self._sets[party.party_id.encode()] = opened
        return opened

    async def _abort(self) -> None:
        """Wait for the writer, close every file and remove every staging directory."""
        sets, self._sets = list(self._sets.values()), {}
        await asyncio.to_thread(self._writer.shutdown, wait=True)
        for opened in sets:
            await asyncio.to_thread(opened.out.close)
            await asyncio.to_thread(shutil.rmtree, opened.staging, ignore_errors=True)

    async def add_rows(self, rows: Sequence[Sequence[bytes]]) -> None:  # noqa: PLR0912, PLR0915 - the hot loop, kept in one piece
        """Check and write lines (rows of LINE_PARTS, continuing the pass)."""
        sets = self._sets
        days = self._days
        accounts_q = self._accounts_q
        currency = self._currency
        period = self._period
        period_q = self._period_q
        currency_q = self._currency_q
        line_format = LINE_FORMAT
        for row in rows:
            (
                party_id,
                account,
                source,
                source_id,
                revision,
                amount_text,
                target_text,
                day,
                line_currency,
                columns,
                weight,
                tail,
            ) = row
            opened = sets.get(party_id)
            if opened is None:
                opened = await self._open(self._party_for(party_id.decode()))
            amount = int(amount_text)
            if not amount or not day:
                opened.unlisted += amount
                continue
            if day not in days:
                self._check_day(opened, source, source_id, day)
            if line_currency != currency:
                raise self._refused(
                    opened,
                    source,
                    source_id,
                    f"currency {line_currency.decode()}, not {self._scheme.currency}",
                )
            if source_id != opened.source_id or source != opened.source:
                if (source, source_id) < (opened.source, opened.source_id):
                    raise self._unsorted(opened, source, source_id, account)
                if source == _JOURNEY:
                    opened.journeys += 1
                elif source == _TOP_UP:
                    opened.top_ups += 1
                elif source == _REDEMPTION:
                    opened.redemptions += 1
                elif source == _REWARD:
                    opened.rewards += 1
                else:
                    raise self._refused(opened, source, source_id, f"not one of {_SOURCES}")
                if source_id != self._last_id:
                    self._last_id = source_id
                    self._last_id_q = quoted_field(source_id)
                opened.source = source
                opened.source_id = source_id
                opened.source_id_q = self._last_id_q
            elif account <= opened.account:
                raise self._unsorted(opened, source, source_id, account)
            opened.account = account
            account_q = accounts_q.get(account)
            if account_q is None:
                account_q = accounts_q[account] = quoted_field(account)
            target = int(target_text)
            line = opened.lines + 1
            opened.lines = line
            sums = opened.accounts
            sums[account] = sums.get(account, 0) + amount
            if day != period:
                opened.adjustments += amount
                opened.adjustment_lines += 1
            text = line_format % (
                line,
                period_q,
                opened.party_q,
                account_q,
                source,
                opened.source_id_q,
                day,
                revision,
                amount,
                target - amount,
                target,
                currency_q,
                columns,
                weight,
                tail,
            )
            opened.pending.append(text)
            opened.pending_size += len(text)
            if opened.pending_size >= _CHUNK:
                self._hand_over(opened, last=False)
        while len(self._in_flight) > _IN_FLIGHT:
            await asyncio.wrap_future(self._in_flight.popleft())

    def _hand_over(self, opened: _OpenSet, *, last: bool) -> None:
        """Give the set's pending lines to the writer thread (in order, after the others)."""
        block = b"".join(opened.pending)
        opened.pending = []
        opened.pending_size = 0
        opened.size += len(block)
        job = _write_last_block if last else _write_block
        self._in_flight.append(self._writer.submit(job, opened.out, opened.digest, block))

    def _check_day(self, opened: _OpenSet, source: bytes, source_id: bytes, day: bytes) -> None:
        try:
            valid = date.fromisoformat(day.decode()).isoformat().encode() == day
        except ValueError:
            valid = False
        if not valid:
            raise self._refused(opened, source, source_id, f"service day {day!r} is not a day")
        if day > self._period:
            raise self._refused(
                opened, source, source_id, f"service day {day.decode()} after the period"
            )
        self._days.add(day)

    def _refused(
        self, opened: _OpenSet, source: bytes, source_id: bytes, why: str
    ) -> SettlementFileError:
        line = opened.lines + 1
        where = f"{opened.party.party_id} line {line} ({source.decode()} {source_id.decode()})"
        return SettlementFileError(f"{where}: {why}")

    def _unsorted(
        self, opened: _OpenSet, source: bytes, source_id: bytes, account: bytes
    ) -> SettlementFileError:
        last = (opened.source.decode(), opened.source_id.decode(), opened.account.decode())
        return self._refused(
            opened,
            source,
            source_id,
            f"{account.decode()} not after {last} (lines must be sorted, unique)",
        )

    def nets(self) -> dict[str, Money]:
        """Each party's net movement in the period so far (its lines and what made none),
        by party id: those given, and any other whose entries came."""
        return {
            opened.party.party_id: Money(
                sum(opened.accounts.values()) + opened.unlisted, self._scheme.currency
            )
            for opened in self._sets.values()
        }

    async def finish(
        self, parties: Sequence[Party], extra_files: Mapping[str, Mapping[str, bytes]]
    ) -> list[FileSetInfo]:
        """Seal the set of every party of `parties`, in that order (every party with a
        set, see `nets`), with its `extra_files`, and move it into place."""
        if sorted(p.party_id for p in parties) != sorted(
            o.party.party_id for o in self._sets.values()
        ):
            raise SettlementError(
                f"{self._period_id}: the parties to seal are not the parties written"
            )
        order = [self._sets[party.party_id.encode()] for party in parties]
        for opened in order:
            self._hand_over(opened, last=True)
        while self._in_flight:
            await asyncio.wrap_future(self._in_flight.popleft())
        written = []
        for opened in order:
            lines_file = ManifestFile(LINES_FILE, opened.size, opened.digest.hexdigest())
            totals = opened.totals(self._period_id, self._scheme.currency)
            extra = extra_files.get(opened.party.party_id, _EMPTY)
            try:
                info = await _seal(
                    opened.staging,
                    self._scheme,
                    opened.party,
                    lines_file=lines_file,
                    totals=totals,
                    extra_files=extra,
                    signer=self._signer,
                )
            except BaseException:
                await asyncio.to_thread(shutil.rmtree, opened.staging, ignore_errors=True)
                raise
            del self._sets[opened.party.party_id.encode()]
            written.append(info)
        await asyncio.to_thread(self._writer.shutdown, wait=True)
        return written


def _write_block(out: BinaryIO, digest: hashlib._Hash, block: bytes) -> None:
    digest.update(block)
    out.write(block)


def _write_last_block(out: BinaryIO, digest: hashlib._Hash, block: bytes) -> None:
    digest.update(block)
    _write_and_sync(out, block)
    out.close()


def _write_and_sync(out: BinaryIO, block: bytes) -> None:
    out.write(block)
    out.flush()
    os.fsync(out.fileno())


def _describe(name: str, body: bytes) -> ManifestFile:
    return ManifestFile(name, len(body), hashlib.sha256(body).hexdigest())


def _check_name(name: str) -> None:
    if not _SAFE_NAME.match(name) or ".." in name:
        raise SettlementFileError(f"unsafe file name {name!r}")


def _finish(staging: Path, final: Path, contents: Mapping[str, bytes]) -> bool:
    """Write the small files, fsync, and move the set into place; False (and the staging
    directory removed) when `final` already holds the same bytes."""
    for name, body in contents.items():
        with (staging / name).open("wb") as out:
            _write_and_sync(out, body)
    _sync_directory(staging)
    if _same_set(staging, final):
        shutil.rmtree(staging)
        return False
    retired = None
    if final.exists():
        retired = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old."))
        os.replace(final, retired / final.name)
    os.replace(staging, final)
    _sync_directory(final.parent)
    if retired is not None:
        shutil.rmtree(retired)
    return True


def _same_set(staging: Path, final: Path) -> bool:
    """Whether `final` holds exactly the files of `staging`, byte for byte."""
    if not final.is_dir():
        return False
    names = sorted(p.name for p in staging.iterdir())
    if sorted(p.name for p in final.iterdir()) != names:
        return False
    return all(_file_digest(staging / n) == _file_digest(final / n) for n in names)


def _file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(1 << 20):
            digest.update(block)
    return path.stat().st_size, digest.hexdigest()


def _sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The scheme's Ed25519 private key from PEM file `path` (PKCS#8, unencrypted)."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SettlementFileError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM file `path` (SubjectPublicKeyInfo)."""
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise SettlementFileError(f"{path} is not an Ed25519 public key")
    return key


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The SubjectPublicKeyInfo PEM of `key` (or of a private key's public half)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def raw_public_key(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of the public key (what the manifest's signing_key hashes)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def publish_public_key(root: Path, key: Ed25519PrivateKey | Ed25519PublicKey) -> Path:
    """Write `<root>/scheme-signing.pub.pem` (atomically; unchanged bytes: no write)."""
    path = root / PUBLIC_KEY_FILE
    body = public_key_pem(key)
    if path.is_file() and path.read_bytes() == body:
        return path
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{PUBLIC_KEY_FILE}.")
    try:
        with os.fdopen(fd, "wb") as out:
            _write_and_sync(out, body)
        Path(tmp).chmod(0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
