"""Keys are read from files only, and a secret given where a path belongs is refused without
being repeated; an external server's password never reaches an error message."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from clearway.infra.manager import InfraError, LocalInfra
from clearway.settings import ServiceSettings, SettingsError
from services.settlement.app import SIGNING_KEY_VAR
from services.settlement.app import build as build_settlement

PASSWORD = "s3cret-Pa55word"


def private_key_pem() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.decode()


@pytest.mark.parametrize("var", ["CLEARWAY_TLS_KEY", "CLEARWAY_TLS_CERT", "CLEARWAY_TLS_CLIENT_CA"])
def test_tls_settings_refuse_a_pem_given_instead_of_a_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, var: str
) -> None:
    for name in ("CLEARWAY_TLS_KEY", "CLEARWAY_TLS_CERT", "CLEARWAY_TLS_CLIENT_CA"):
        monkeypatch.setenv(name, str(tmp_path / f"{name}.pem"))
    pem = private_key_pem()
    monkeypatch.setenv(var, pem)
    with pytest.raises(SettingsError, match=var) as refused:
        ServiceSettings.from_env("settlement")
    assert pem.splitlines()[1] not in str(refused.value), "the key is repeated"


def test_tls_settings_take_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLEARWAY_TLS_CERT", str(tmp_path / "server.pem"))
    monkeypatch.setenv("CLEARWAY_TLS_KEY", str(tmp_path / "server.key.pem"))
    settings = ServiceSettings.from_env("ingest")
    assert settings.tls_key == tmp_path / "server.key.pem"


def test_settlement_refuses_its_signing_key_given_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    pem = private_key_pem()
    monkeypatch.setenv(SIGNING_KEY_VAR, pem)
    with pytest.raises(SettingsError, match=SIGNING_KEY_VAR) as refused:
        build_settlement(ServiceSettings.from_env("settlement"), check_agencies=False)
    assert pem.splitlines()[1] not in str(refused.value)


def test_settlement_reads_its_signing_key_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(SIGNING_KEY_VAR, str(tmp_path / "signing.key.pem"))
    app = build_settlement(ServiceSettings.from_env("settlement"), check_agencies=False)
    assert app.signing_key == tmp_path / "signing.key.pem"


def test_a_down_external_servers_password_is_not_in_the_error(tmp_path: Path) -> None:
    # Port 1 on loopback: refused at once.
    dsn = f"postgresql://clearway:{PASSWORD}@127.0.0.1:1/clearway"
    infra = LocalInfra(tmp_path, env={"CLEARWAY_PG_DSN": dsn}, components=("postgres",))
    with pytest.raises(InfraError) as down:
        infra.up()
    assert "is down" in str(down.value)
    assert PASSWORD not in str(down.value)
    assert "127.0.0.1:1" in str(down.value)
