"""Statement files on disk: `<statements_dir>/<period_id>/<party_id>.json`, written atomically."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from pathlib import Path

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class StatementFiles:
    """Writes statement bytes where parties (and the demo) can pick them up."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, period_id: str, party_id: str) -> Path:
        """Where a party's statement for a period lives."""
        for part in (period_id, party_id):
            if not _SAFE_NAME.match(part) or ".." in part:
                raise ValueError(f"unsafe path component {part!r}")
        return self.root / period_id / f"{party_id}.json"

    async def write(self, period_id: str, party_id: str, body: bytes) -> Path:
        """Write (or rewrite with the same bytes) a statement; never a half-written file."""
        path = self.path_for(period_id, party_id)
        await asyncio.to_thread(_write_atomically, path, body)
        return path


def _write_atomically(path: Path, body: bytes) -> None:
    if path.exists() and path.read_bytes() == body:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
