"""Settlement file sets on disk: `<root>/<period_id>/<party_id>/`, signed, written atomically.

lines.csv streams row by row into a temporary directory with an incremental sha256 (a
period of a million journeys is never one string in memory); then summary.json, any extra
files (the scheme's pain.001.xml), manifest.json and its Ed25519 signature manifest.sig.
The finished directory is fsynced and renamed into place; when the same bytes are already
there nothing is replaced. Formats: domain/settlement_files.py and docs/settlement.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from clearway.money import Money

from ..domain.periods import parse_period_id
from ..domain.scheme import Party, Scheme
from ..domain.settlement_files import (
    LINES_FILE,
    MANIFEST_FILE,
    PUBLIC_KEY_FILE,
    SIGNATURE_FILE,
    SUMMARY_FILE,
    LineRecord,
    Manifest,
    ManifestFile,
    Payment,
    SettlementFileError,
    SummaryTotals,
    csv_header,
    csv_line,
    key_fingerprint,
    payment_for,
    render_manifest,
    render_summary,
)

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_RESERVED = frozenset({LINES_FILE, SUMMARY_FILE, MANIFEST_FILE, SIGNATURE_FILE})
_CHUNK = 256 * 1024  # bytes of lines handed to the writer thread at a time
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
    prefix = f".{party.party_id}."
    staging = Path(await asyncio.to_thread(tempfile.mkdtemp, dir=period_dir, prefix=prefix))
    try:
        totals = SummaryTotals(period_id, scheme.currency)
        lines_file = await _stream_lines(staging / LINES_FILE, lines, party, totals)
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
        final = period_dir / party.party_id
        replaced = await asyncio.to_thread(_finish, staging, final, contents)
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, staging, ignore_errors=True)
        raise
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
