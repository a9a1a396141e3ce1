"""`clearway benefits` against real PostgreSQL and the example scheme file: officers added
and removed, a device's key generated, registered, listed and revoked."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

from services.accounts.entrypoints.benefits_cli import main
from services.cli import COMMANDS

pytestmark = pytest.mark.integration


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, object, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else None, err


def test_the_cli_provisions_officers_and_devices(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    pg_dsn: str,
    unique_name: str,
) -> None:
    assert "benefits" in COMMANDS
    schema = f"{unique_name}_accounts"
    monkeypatch.setenv("CLEARWAY_PG_DSN", pg_dsn)
    monkeypatch.setenv("CLEARWAY_DB_SCHEMA", schema)
    monkeypatch.delenv("CLEARWAY_SCHEME_FILE", raising=False)
    try:
        code, _, err = run(
            capsys, "officers", "add", "--email", "o@camden.example", "--council", "funder:camden"
        )
        assert (code, err.split(": ")[1]) == (1, "UNKNOWN_TRAVELLER")
        monkeypatch.setenv("CLEARWAY_PASSWORD", "a long enough password")
        code, added, _ = run(
            capsys,
            "officers",
            "add",
            "--email",
            "o@camden.example",
            "--council",
            "funder:camden",
            "--create",
        )
        assert code == 0 and added["council"] == "funder:camden"  # type: ignore[index]
        code, _, err = run(
            capsys, "officers", "add", "--email", "o@camden.example", "--council", "funder:x"
        )
        assert (code, err.split(": ")[1]) == (1, "UNKNOWN_FUNDER")
        assert run(capsys, "officers", "remove", "--email", "o@camden.example")[1] == {
            "removed": True
        }

        key = tmp_path / "pos-1.key"
        code, made, _ = run(capsys, "devices", "keygen", "--out", str(key))
        assert code == 0 and (key.stat().st_mode & 0o777) == 0o600
        public = tmp_path / "pos-1.pub"
        register = ["devices", "register", "--device-id", "pos-1", "--public-key", str(public)]
        code, device, _ = run(capsys, *register, "--provider", "provider:camden-leisure")
        assert code == 0
        assert (device["key_id"], device["status"]) == (made["key_id"], "active")  # type: ignore[index]
        code, _, err = run(capsys, *register, "--provider", "provider:soundbox")
        assert (code, err.split(": ")[1]) == (1, "DEVICE_EXISTS")
        code, _, err = run(capsys, *register, "--provider", "funder:camden")
        assert (code, err.split(": ")[1]) == (1, "UNKNOWN_PROVIDER")
        assert run(capsys, "devices", "revoke", "--device-id", "pos-1")[1]["status"] == "revoked"  # type: ignore[index]
        listed = run(capsys, "devices", "list")[1]
        assert [(d["device_id"], d["status"]) for d in listed] == [("pos-1", "revoked")]  # type: ignore[union-attr]
    finally:
        asyncio.run(_drop(pg_dsn, schema))


async def _drop(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()
