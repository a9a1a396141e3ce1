"""The scheme PKI (`clearway.pki`, `clearway pki ...`): a CA, server and client
certificates that chain to it, identities as URI SANs, private keys only the owner can
read, an idempotent init, and the Ed25519 signing key pair."""

from __future__ import annotations

import datetime as dt
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clearway.auth import Principal, principal_from_certificate
from clearway.pki import (
    CertifiedKey,
    Outcome,
    PkiError,
    PkiLayout,
    default_server_names,
    describe_pki,
    init_pki,
    issue_identity,
    issue_leaf_certificate,
    load_ca,
    load_certificate,
    load_signing_key,
    load_verify_key,
)
from services.cli import main as clearway

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
LUL = Principal("party", "operator:LUL")
OPERATIONS = Principal("role", "operations")
GATE = Principal("device", "gate-KGX")


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    init_pki(directory, now=NOW)
    return directory


def actions(outcomes: list[Outcome]) -> dict[str, str]:
    return {outcome.path.name: outcome.action for outcome in outcomes}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def openssl_verify(ca: Path, cert: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca), str(cert)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_init_lays_out_the_directory_with_private_keys_readable_by_the_owner_only(pki):
    layout = PkiLayout(pki)

    for key in (layout.ca_key, layout.server_key, layout.signing_key):
        assert mode(key) == 0o600, key
    for public in (layout.ca_cert, layout.server_cert, layout.signing_pub):
        assert mode(public) == 0o644, public
    issue_identity(LUL, pki, now=NOW)
    assert mode(layout.client_key("party-operator_LUL")) == 0o600
    assert mode(layout.client_cert("party-operator_LUL")) == 0o644
    assert not list(pki.rglob(".*")), "no temporary files are left behind"


def test_the_ca_is_an_ecdsa_p256_ca_for_ten_years_and_leaves_last_one_year(pki):
    key, ca = load_ca(pki)
    client = load_certificate(
        PkiLayout(pki).client_cert(issue_identity(LUL, pki, now=NOW).path.stem)
    )

    assert isinstance(key.curve, ec.SECP256R1)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.issuer == ca.subject
    assert (ca.not_valid_after_utc - NOW).days == 3650
    assert (client.not_valid_after_utc - NOW).days == 365
    assert not client.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_the_server_certificate_names_localhost_loopback_and_the_services(tmp_path):
    init_pki(tmp_path, server_names=["clearway.example.org", "10.0.0.7"], now=NOW)
    _, ca = load_ca(tmp_path)
    server = load_certificate(PkiLayout(tmp_path).server_cert)

    server.verify_directly_issued_by(ca)
    names = sans(server)
    dns = set(names.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    assert {"localhost", "fares", "settlement.clearway.svc", "clearway.example.org"} <= dns
    assert {"127.0.0.1", "::1", "10.0.0.7"} <= ips
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert "ingest.clearway.svc.cluster.local" in default_server_names()


@pytest.mark.parametrize(
    ("principal", "stem"),
    [
        (LUL, "party-operator_LUL"),
        (OPERATIONS, "role-operations"),
        (GATE, "device-gate-KGX"),
    ],
)
def test_a_client_certificate_carries_its_identity_as_uri_san_and_common_name(pki, principal, stem):
    outcome = issue_identity(principal, pki, now=NOW)
    layout = PkiLayout(pki)
    cert = load_certificate(layout.client_cert(stem))

    assert outcome == Outcome("issued", layout.client_cert(stem))
    cert.verify_directly_issued_by(load_ca(pki)[1])
    assert sans(cert).get_values_for_type(x509.UniformResourceIdentifier) == [principal.uri]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == principal.id
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert principal_from_certificate(layout.client_cert(stem).read_bytes()) == principal


def test_openssl_verifies_server_and_client_certificates_against_the_ca(tmp_path):
    # The real clock: openssl checks validity against it.
    init_pki(tmp_path)
    issue_identity(LUL, tmp_path)
    layout = PkiLayout(tmp_path)

    for cert in (layout.server_cert, layout.client_cert("party-operator_LUL")):
        result = openssl_verify(layout.ca_cert, cert)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith(": OK")


def test_a_certificate_of_another_ca_does_not_verify(pki, tmp_path):
    other = tmp_path / "other"
    init_pki(other)
    issue_identity(LUL, other)

    result = openssl_verify(PkiLayout(pki).ca_cert, PkiLayout(other).client_cert(LUL.file_stem))

    assert result.returncode != 0


def test_init_is_idempotent_and_never_replaces_the_ca(pki):
    layout = PkiLayout(pki)
    before = {p: p.read_bytes() for p in (layout.ca_cert, layout.ca_key, layout.server_cert)}

    outcomes = init_pki(pki, now=NOW + dt.timedelta(days=1))

    assert actions(outcomes) == {"ca.pem": "kept", "server.pem": "kept", "signing.key.pem": "kept"}
    assert {p: p.read_bytes() for p in before} == before


def test_init_with_a_new_server_name_reissues_the_server_certificate_under_the_same_ca(pki):
    layout = PkiLayout(pki)
    ca_before = layout.ca_cert.read_bytes()

    outcomes = init_pki(pki, server_names=["gateway.example"], now=NOW)

    assert actions(outcomes)["server.pem"] == "issued"
    assert layout.ca_cert.read_bytes() == ca_before
    assert "gateway.example" in sans(load_certificate(layout.server_cert)).get_values_for_type(
        x509.DNSName
    )


def test_init_force_replaces_the_ca_and_reissues_client_certificates(pki):
    layout = PkiLayout(pki)
    issue_identity(LUL, pki, now=NOW)
    old_ca = layout.ca_cert.read_bytes()
    signing = layout.signing_key.read_bytes()

    outcomes = init_pki(pki, force=True, now=NOW)

    assert actions(outcomes) == {
        "ca.pem": "created",
        "server.pem": "issued",
        "party-operator_LUL.pem": "reissued",
        "signing.key.pem": "kept",
    }
    assert layout.ca_cert.read_bytes() != old_ca
    client = load_certificate(layout.client_cert(LUL.file_stem))
    client.verify_directly_issued_by(load_ca(pki)[1])
    assert principal_from_certificate(layout.client_cert(LUL.file_stem).read_bytes()) == LUL
    assert layout.signing_key.read_bytes() == signing  # signed files keep verifying


def test_a_ca_without_its_key_is_refused_rather_than_replaced(pki):
    PkiLayout(pki).ca_key.unlink()

    with pytest.raises(PkiError, match="incomplete scheme CA"):
        init_pki(pki)
    with pytest.raises(PkiError, match="clearway pki init"):
        issue_identity(LUL, pki)


def test_issue_keeps_a_good_certificate_and_reissues_one_near_its_end_or_when_forced(pki):
    layout = PkiLayout(pki)
    first = issue_identity(LUL, pki, now=NOW)
    cert = layout.client_cert(LUL.file_stem).read_bytes()

    again = issue_identity(LUL, pki, now=NOW + dt.timedelta(days=30))
    near_end = issue_identity(LUL, pki, now=NOW + dt.timedelta(days=340))
    forced = issue_identity(LUL, pki, now=NOW + dt.timedelta(days=340), force=True)

    assert (first.action, again.action, near_end.action, forced.action) == (
        "issued",
        "kept",
        "issued",
        "issued",
    )
    assert layout.client_cert(LUL.file_stem).read_bytes() != cert


def test_issue_without_a_ca_says_to_run_init(tmp_path):
    with pytest.raises(PkiError, match="clearway pki init"):
        issue_identity(LUL, tmp_path / "empty")


def test_the_signing_key_signs_and_only_its_public_key_verifies(pki, tmp_path):
    settlement_file = b"period 2026-03-01\noperator:LUL 1234 GBP\n"
    signature = load_signing_key(pki).sign(settlement_file)

    load_verify_key(pki).verify(signature, settlement_file)
    with pytest.raises(InvalidSignature):
        load_verify_key(pki).verify(signature, settlement_file + b"tampered")
    other = tmp_path / "other"
    init_pki(other)
    with pytest.raises(InvalidSignature):
        load_verify_key(other).verify(signature, settlement_file)
    assert PkiLayout(pki).signing_pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")


@pytest.mark.parametrize("bad", ["", "a/b", "has space", "dotted.id", "under_score", "x" * 65])
def test_an_identity_id_that_cannot_be_a_file_name_or_common_name_is_refused(bad):
    with pytest.raises(ValueError):
        Principal("party", bad)


def test_identity_kinds_are_the_known_ones_and_uris_round_trip():
    with pytest.raises(ValueError):
        Principal("wizard", "merlin")
    assert Principal.from_uri("clearway:party/operator:LUL") == LUL
    assert Principal.parse("role/operations") == OPERATIONS
    assert str(GATE) == "clearway:device/gate-KGX"
    with pytest.raises(ValueError):
        Principal.from_uri("https://example.org/party/operator:LUL")


def _certificate_with(ca: CertifiedKey, uris: list[str]) -> bytes:
    _, cert = issue_leaf_certificate(
        ca,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]),
        names=[x509.UniformResourceIdentifier(u) for u in uris],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    return cert.public_bytes(Encoding.PEM)


def test_a_certificate_with_no_or_two_clearway_identities_identifies_nobody(pki):
    ca = load_ca(pki)

    assert principal_from_certificate(_certificate_with(ca, [])) is None
    assert principal_from_certificate(_certificate_with(ca, ["https://example.org/x"])) is None
    two = _certificate_with(ca, [LUL.uri, OPERATIONS.uri])
    assert principal_from_certificate(two) is None
    assert principal_from_certificate(b"not a certificate") is None


def test_the_clearway_pki_command_inits_issues_and_shows(tmp_path, capsys):
    directory = str(tmp_path / "cli")

    assert clearway(["pki", "init", "--dir", directory, "--server-name", "node1.example"]) == 0
    assert clearway(["pki", "issue", "party", "operator:LUL", "--dir", directory]) == 0
    assert clearway(["pki", "issue", "device", "gate-KGX", "--dir", directory]) == 0
    assert clearway(["pki", "show", "--dir", directory]) == 0
    out = capsys.readouterr().out

    assert "created   " in out and "ca.pem" in out
    assert "identity  clearway:party/operator:LUL" in out
    assert "URI:clearway:device/gate-KGX" in out
    assert "DNS:node1.example" in out
    assert "signing  ed25519" in out
    assert describe_pki(Path(directory))[0] == f"PKI directory {directory}"


def test_the_clearway_pki_command_refuses_bad_input_with_its_exit_codes(tmp_path, capsys):
    directory = str(tmp_path / "cli")

    assert clearway(["pki", "issue", "party", "operator:LUL", "--dir", directory]) == 1
    assert clearway(["pki", "issue", "wizard", "merlin", "--dir", directory]) == 2
    assert clearway(["pki", "init", "--dir", directory]) == 0
    assert clearway(["pki", "issue", "party", "a/b", "--dir", directory]) == 2
    err = capsys.readouterr().err
    assert "run `clearway pki init` first" in err
