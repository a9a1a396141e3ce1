"""clearway.kafka.client_options: plaintext unless CLEARWAY_KAFKA_CA/CERT/KEY say TLS, and a
clear SettingsError (naming the variable, never quoting the file) for settings that cannot
work. Against a real TLS broker: tests/integration/test_kafka_tls.py."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from clearway.auth import Principal
from clearway.infra.endpoints import KAFKA_CA_VAR, KAFKA_CERT_VAR, KAFKA_KEY_VAR
from clearway.kafka import KafkaTls, client_options, kafka_tls_from_env
from clearway.pki import PkiLayout, init_pki, issue_identity
from clearway.settings import SettingsError

CLIENT = Principal("role", "kafka-client")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    layout = PkiLayout(tmp_path_factory.mktemp("pki"))
    init_pki(layout.root)
    issue_identity(CLIENT, layout.root)
    return layout


@pytest.fixture(autouse=True)
def no_kafka_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (KAFKA_CA_VAR, KAFKA_CERT_VAR, KAFKA_KEY_VAR):
        monkeypatch.delenv(name, raising=False)


def set_env(monkeypatch: pytest.MonkeyPatch, **values: Path) -> None:
    names = {"ca": KAFKA_CA_VAR, "cert": KAFKA_CERT_VAR, "key": KAFKA_KEY_VAR}
    for field, path in values.items():
        monkeypatch.setenv(names[field], str(path))


def test_without_the_variables_the_options_are_plaintext_as_before() -> None:
    assert kafka_tls_from_env() is None
    assert client_options("127.0.0.1:59092") == {"bootstrap_servers": "127.0.0.1:59092"}


def test_ca_and_client_certificate_give_one_shared_ssl_context(
    pki: PkiLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    stem = CLIENT.file_stem
    set_env(monkeypatch, ca=pki.ca_cert, cert=pki.client_cert(stem), key=pki.client_key(stem))
    options = client_options("kafka:9093")
    assert options["bootstrap_servers"] == "kafka:9093"
    assert options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert client_options("kafka:9093")["ssl_context"] is context


def test_a_ca_alone_is_tls_without_a_client_certificate(
    pki: PkiLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, ca=pki.ca_cert)
    assert kafka_tls_from_env() == KafkaTls(ca=pki.ca_cert)
    assert client_options("kafka:9093")["security_protocol"] == "SSL"


@pytest.mark.parametrize("given", ["cert", "key"])
def test_a_certificate_without_its_key_or_a_key_without_its_certificate_is_refused(
    pki: PkiLayout, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    stem = CLIENT.file_stem
    paths = {"cert": pki.client_cert(stem), "key": pki.client_key(stem)}
    set_env(monkeypatch, ca=pki.ca_cert, **{given: paths[given]})
    with pytest.raises(SettingsError, match=f"{KAFKA_CERT_VAR} and {KAFKA_KEY_VAR}"):
        client_options("kafka:9093")


def test_a_missing_file_is_named_by_its_variable(
    pki: PkiLayout, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_env(monkeypatch, ca=tmp_path / "nowhere.pem")
    with pytest.raises(SettingsError, match=f"^{KAFKA_CA_VAR}: no such file"):
        client_options("kafka:9093")


def test_a_file_that_is_no_key_is_refused_without_quoting_it(
    pki: PkiLayout, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secretish = tmp_path / "key.pem"
    secretish.write_text("not-a-key s3cr3t-value\n")
    set_env(monkeypatch, ca=pki.ca_cert, cert=pki.client_cert(CLIENT.file_stem), key=secretish)
    with pytest.raises(SettingsError, match=KAFKA_KEY_VAR) as raised:
        client_options("kafka:9093")
    assert "s3cr3t" not in str(raised.value)


def test_an_encrypted_key_is_refused_rather_than_prompted_for(
    pki: PkiLayout, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A PEM key with a password would make OpenSSL ask for it on the terminal.
    encrypted = tmp_path / "encrypted.key.pem"
    encrypted.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"password"),
        )
    )
    set_env(monkeypatch, ca=pki.ca_cert, cert=pki.client_cert(CLIENT.file_stem), key=encrypted)
    with pytest.raises(SettingsError, match="unencrypted private key"):
        client_options("kafka:9093")
