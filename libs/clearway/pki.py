"""The scheme's public-key infrastructure for local runs, tests and the demo: a scheme CA,
the services' server certificate, one client certificate per party, role or device, and
the scheme's Ed25519 key that signs settlement files. Also the gRPC credentials built
from them (`server_credentials`, `client_credentials`, `secure_channel`).

Layout of a PKI directory (default `var/pki`, or `CLEARWAY_PKI_DIR`):

    ca.pem, ca.key.pem                      the scheme CA (ECDSA P-256, 10 years)
    server.pem, server.key.pem              the services' certificate (DNS and IP SANs)
    clients/<stem>.pem, <stem>.key.pem      one per identity, URI SAN clearway:<kind>/<id>
    signing.key.pem, signing.pub.pem        the scheme's Ed25519 signing key pair

Private keys are written with mode 0600. ECDSA P-256 throughout the TLS certificates:
gRPC's BoringSSL accepts it on every platform (Ed25519 TLS certificates are not).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from clearway.auth import Principal, principal_from_certificate

REPO_ROOT = Path(__file__).resolve().parents[2]
PKI_DIR_VAR = "CLEARWAY_PKI_DIR"
CA_DAYS = 3650
LEAF_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=30)  # a certificate closer to its end is issued anew
CLOCK_SKEW = dt.timedelta(minutes=5)  # certificates are valid from a little before now
ORGANISATION = "Clearway"
CA_COMMON_NAME = "Clearway scheme CA"
SERVER_COMMON_NAME = "clearway services"
SERVICE_HOSTS = ("ingest", "fares", "settlement", "accounts")
K8S_NAMESPACE = "clearway"
_DNS_NAME = re.compile(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9][A-Za-z0-9-]{0,62})*")

CertifiedKey = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]


class PkiError(Exception):
    """The PKI directory cannot do what was asked (no CA yet, a CA without its key, ...)."""

    code = "PKI_ERROR"


def default_pki_dir() -> Path:
    """`CLEARWAY_PKI_DIR`, or `var/pki` in the repository."""
    return Path(os.environ.get(PKI_DIR_VAR, "").strip() or REPO_ROOT / "var" / "pki")


@dataclass(frozen=True, slots=True)
class PkiLayout:
    """Where each file of a PKI directory lives."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key.pem"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key.pem"

    @property
    def clients(self) -> Path:
        return self.root / "clients"

    @property
    def signing_key(self) -> Path:
        return self.root / "signing.key.pem"

    @property
    def signing_pub(self) -> Path:
        return self.root / "signing.pub.pem"

    def client_cert(self, stem: str) -> Path:
        """The certificate of the identity whose file stem is `stem`."""
        return self.clients / f"{stem}.pem"

    def client_key(self, stem: str) -> Path:
        """The private key of the identity whose file stem is `stem`."""
        return self.clients / f"{stem}.key.pem"

    def client_certs(self) -> list[Path]:
        """Every client certificate in the directory, by name."""
        if not self.clients.is_dir():
            return []
        return sorted(p for p in self.clients.glob("*.pem") if not p.name.endswith(".key.pem"))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What `init_pki` or `issue_identity` did with one file."""

    action: str  # "created", "issued", "reissued", "kept"
    path: Path


# -- certificates ----------------------------------------------------------------------


def _now(now: dt.datetime | None) -> dt.datetime:
    return now if now is not None else dt.datetime.now(dt.UTC)


def _name(common_name: str, unit: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION)]
    if unit is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def create_ca(
    *, common_name: str = CA_COMMON_NAME, days: int = CA_DAYS, now: dt.datetime | None = None
) -> CertifiedKey:
    """A new self-signed scheme CA (ECDSA P-256), valid for `days`."""
    start = _now(now)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(common_name)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - CLOCK_SKEW)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_leaf_certificate(
    ca: CertifiedKey,
    *,
    subject: x509.Name,
    names: Sequence[x509.GeneralName],
    usage: ObjectIdentifier,
    days: int = LEAF_DAYS,
    now: dt.datetime | None = None,
) -> CertifiedKey:
    """A new key and a certificate for it signed by `ca`: `names` as SANs, `usage` as the
    extended key usage (server or client auth); never valid beyond the CA."""
    ca_key, ca_cert = ca
    start = _now(now)
    end = min(start + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - CLOCK_SKEW)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def server_general_names(names: Sequence[str]) -> list[x509.GeneralName]:
    """IP SANs for addresses, DNS SANs for host names; PkiError for anything else."""
    general: list[x509.GeneralName] = []
    for name in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass
        if not _DNS_NAME.fullmatch(name):
            raise PkiError(f"not a host name or IP address: {name!r}")
        general.append(x509.DNSName(name.lower()))
    return general


def default_server_names() -> list[str]:
    """localhost, the loopback addresses, and each service's compose and Kubernetes names."""
    names = ["localhost", "127.0.0.1", "::1"]
    for host in SERVICE_HOSTS:
        names += [
            host,
            f"{host}.{K8S_NAMESPACE}",
            f"{host}.{K8S_NAMESPACE}.svc",
            f"{host}.{K8S_NAMESPACE}.svc.cluster.local",
        ]
    return names


def issue_server_certificate(
    ca: CertifiedKey,
    names: Sequence[str],
    *,
    days: int = LEAF_DAYS,
    now: dt.datetime | None = None,
) -> CertifiedKey:
    """The services' TLS certificate for `names` (host names and IP addresses)."""
    return issue_leaf_certificate(
        ca,
        subject=_name(SERVER_COMMON_NAME),
        names=server_general_names(names),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        days=days,
        now=now,
    )


def issue_client_certificate(
    ca: CertifiedKey,
    principal: Principal,
    *,
    days: int = LEAF_DAYS,
    now: dt.datetime | None = None,
) -> CertifiedKey:
    """A client certificate whose identity is `principal`: its URI SAN
    `clearway:<kind>/<id>`, common name the id, organisational unit the kind."""
    return issue_leaf_certificate(
        ca,
        subject=_name(principal.id, unit=principal.kind),
        names=[x509.UniformResourceIdentifier(principal.uri)],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        days=days,
        now=now,
    )


# -- files -----------------------------------------------------------------------------


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` atomically with `mode` (a key is never readable by others,
    not even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _private_pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_certified_key(pair: CertifiedKey, cert_path: Path, key_path: Path) -> None:
    """The key first (0600), then the certificate (0644)."""
    key, cert = pair
    _write(key_path, _private_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def load_certificate(path: Path) -> x509.Certificate:
    """A PEM certificate from `path`."""
    return x509.load_pem_x509_certificate(path.read_bytes())


def _load_ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path} is not an EC private key")
    return key


def load_ca(directory: Path | None = None) -> CertifiedKey:
    """The scheme CA's key and certificate; PkiError when the directory has none."""
    layout = PkiLayout(directory or default_pki_dir())
    if not layout.ca_cert.exists() or not layout.ca_key.exists():
        raise PkiError(f"no scheme CA in {layout.root}; run `clearway pki init` first")
    return _load_ec_key(layout.ca_key), load_certificate(layout.ca_cert)


def _existing_ca(layout: PkiLayout) -> CertifiedKey | None:
    has_cert, has_key = layout.ca_cert.exists(), layout.ca_key.exists()
    if has_cert != has_key:
        missing = layout.ca_key if has_cert else layout.ca_cert
        raise PkiError(f"incomplete scheme CA: {missing} is missing (use --force to replace)")
    return load_ca(layout.root) if has_cert else None


def _still_good(
    cert_path: Path,
    key_path: Path,
    ca_cert: x509.Certificate,
    now: dt.datetime,
    names: Sequence[x509.GeneralName] = (),
) -> bool:
    """The certificate exists, was issued by this CA for this key, is not close to its
    end, and covers `names`."""
    if not cert_path.exists() or not key_path.exists():
        return False
    try:
        cert = load_certificate(cert_path)
        cert.verify_directly_issued_by(ca_cert)
        key = _load_ec_key(key_path)
    except (ValueError, TypeError, InvalidSignature, PkiError):
        return False
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        return False
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return False
    if names:
        present = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return all(name in present for name in names)
    return True


def _public_der(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _unique(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(names))


def init_pki(
    directory: Path | None = None,
    *,
    server_names: Sequence[str] = (),
    force: bool = False,
    now: dt.datetime | None = None,
) -> list[Outcome]:
    """Create what is missing: the CA (kept when present, replaced only with `force`), the
    server certificate (issued anew when missing, near its end, or lacking a name), and the
    signing key pair (always kept). A replaced CA re-issues every client certificate
    for the same identities."""
    layout = PkiLayout(directory or default_pki_dir())
    start = _now(now)
    outcomes: list[Outcome] = []
    ca = None if force else _existing_ca(layout)
    replaced = ca is None
    if ca is None:
        ca = create_ca(now=start)
        write_certified_key(ca, layout.ca_cert, layout.ca_key)
        outcomes.append(Outcome("created", layout.ca_cert))
    else:
        outcomes.append(Outcome("kept", layout.ca_cert))
    names = _unique([*default_server_names(), *server_names])
    general = server_general_names(names)
    if not replaced and _still_good(layout.server_cert, layout.server_key, ca[1], start, general):
        outcomes.append(Outcome("kept", layout.server_cert))
    else:
        pair = issue_server_certificate(ca, names, now=start)
        write_certified_key(pair, layout.server_cert, layout.server_key)
        outcomes.append(Outcome("issued", layout.server_cert))
    if replaced:
        outcomes += _reissue_clients(layout, ca, start)
    outcomes.append(_ensure_signing_key(layout))
    return outcomes


def _reissue_clients(layout: PkiLayout, ca: CertifiedKey, now: dt.datetime) -> list[Outcome]:
    """Client certificates of an earlier CA, issued again by `ca` for the same identities."""
    outcomes = []
    for path in layout.client_certs():
        principal = principal_from_certificate(path.read_bytes())
        if principal is None:
            continue
        stem = principal.file_stem
        pair = issue_client_certificate(ca, principal, now=now)
        write_certified_key(pair, layout.client_cert(stem), layout.client_key(stem))
        outcomes.append(Outcome("reissued", layout.client_cert(stem)))
    return outcomes


def _ensure_signing_key(layout: PkiLayout) -> Outcome:
    """The scheme's Ed25519 signing pair; never replaced (settlement files signed with it
    must keep verifying)."""
    if layout.signing_key.exists():
        if not layout.signing_pub.exists():
            public = load_signing_key(layout.root).public_key()
            _write(layout.signing_pub, _public_pem(public), 0o644)
        return Outcome("kept", layout.signing_key)
    if layout.signing_pub.exists():
        raise PkiError(f"{layout.signing_pub} exists without its private key")
    key = ed25519.Ed25519PrivateKey.generate()
    _write(layout.signing_key, _private_pem(key), 0o600)
    _write(layout.signing_pub, _public_pem(key.public_key()), 0o644)
    return Outcome("created", layout.signing_key)


def _public_pem(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def issue_identity(
    principal: Principal,
    directory: Path | None = None,
    *,
    days: int = LEAF_DAYS,
    force: bool = False,
    now: dt.datetime | None = None,
) -> Outcome:
    """Write `clients/<stem>.pem` and `.key.pem` for `principal`, signed by the directory's
    CA; an existing certificate that is still good is kept unless `force`."""
    layout = PkiLayout(directory or default_pki_dir())
    ca = load_ca(layout.root)
    start = _now(now)
    cert_path = layout.client_cert(principal.file_stem)
    key_path = layout.client_key(principal.file_stem)
    if not force and _still_good(cert_path, key_path, ca[1], start):
        return Outcome("kept", cert_path)
    write_certified_key(
        issue_client_certificate(ca, principal, days=days, now=start), cert_path, key_path
    )
    return Outcome("issued", cert_path)


def load_signing_key(directory: Path | None = None) -> ed25519.Ed25519PrivateKey:
    """The scheme's Ed25519 private key (signs settlement files)."""
    path = PkiLayout(directory or default_pki_dir()).signing_key
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise PkiError(f"{path} is not an Ed25519 private key")
    return key


def load_verify_key(directory: Path | None = None) -> ed25519.Ed25519PublicKey:
    """The scheme's Ed25519 public key (verifies settlement files)."""
    path = PkiLayout(directory or default_pki_dir()).signing_pub
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise PkiError(f"{path} is not an Ed25519 public key")
    return key


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _san_text(cert: x509.Certificate) -> str:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "-"
    parts = [f"DNS:{n}" for n in names.get_values_for_type(x509.DNSName)]
    parts += [f"IP:{n}" for n in names.get_values_for_type(x509.IPAddress)]
    parts += [f"URI:{n}" for n in names.get_values_for_type(x509.UniformResourceIdentifier)]
    return ", ".join(parts)


def describe_pki(directory: Path | None = None) -> list[str]:
    """Lines that say what the PKI directory holds: the CA, the server certificate, each
    client identity and the signing key, with validity."""
    layout = PkiLayout(directory or default_pki_dir())
    lines = [f"PKI directory {layout.root}"]
    if not layout.ca_cert.exists():
        return [*lines, "no scheme CA: run `clearway pki init`"]
    ca = load_certificate(layout.ca_cert)
    lines.append(
        f"CA       {ca.subject.rfc4514_string()}  until {ca.not_valid_after_utc:%Y-%m-%d}"
        f"  sha256 {_fingerprint(ca)}"
    )
    if layout.server_cert.exists():
        server = load_certificate(layout.server_cert)
        lines.append(f"server   until {server.not_valid_after_utc:%Y-%m-%d}  {_san_text(server)}")
    for path in layout.client_certs():
        cert = load_certificate(path)
        lines.append(
            f"client   {_san_text(cert)}  until {cert.not_valid_after_utc:%Y-%m-%d}"
            f"  {path.relative_to(layout.root)}"
        )
    if layout.signing_pub.exists():
        raw = load_verify_key(layout.root).public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        lines.append(f"signing  ed25519 {raw.hex()}  {layout.signing_pub.name}")
    return lines


# -- gRPC credentials ------------------------------------------------------------------


def server_credentials(
    cert: Path, key: Path, client_ca: Path | None = None
) -> grpc.ServerCredentials:
    """TLS for a gRPC port. With `client_ca`, mutual TLS: a client must present a
    certificate that chains to it, or the handshake fails (grpcio's Python API offers no
    "request but do not require" mode)."""
    pair = [(key.read_bytes(), cert.read_bytes())]
    if client_ca is None:
        return grpc.ssl_server_credentials(pair)
    return grpc.ssl_server_credentials(
        pair, root_certificates=client_ca.read_bytes(), require_client_auth=True
    )


def _stem(identity: Principal | str) -> str:
    return identity.file_stem if isinstance(identity, Principal) else identity


def client_credentials(
    pki_dir: Path | None, identity_file_stem: Principal | str | None
) -> grpc.ChannelCredentials:
    """TLS credentials trusting the scheme CA and presenting the identity's client
    certificate (`party-operator_LUL`, or a Principal); None presents none."""
    layout = PkiLayout(pki_dir or default_pki_dir())
    root = layout.ca_cert.read_bytes()
    if identity_file_stem is None:
        return grpc.ssl_channel_credentials(root_certificates=root)
    stem = _stem(identity_file_stem)
    return grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=layout.client_key(stem).read_bytes(),
        certificate_chain=layout.client_cert(stem).read_bytes(),
    )


def secure_channel(
    address: str,
    pki_dir: Path | None,
    identity: Principal | str | None,
    *,
    server_name: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An asyncio channel to `address` over mutual TLS as `identity`. The server
    certificate covers localhost, 127.0.0.1 and the services' names; for another address
    pass one of those as `server_name`."""
    opts = list(options)
    if server_name is not None:
        opts.append(("grpc.ssl_target_name_override", server_name))
    return grpc.aio.secure_channel(address, client_credentials(pki_dir, identity), options=opts)


def service_channel(
    address: str, ca_file: Path | None, *, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """A channel from one Clearway service to another: TLS, the server's certificate
    checked against the CA in `ca_file` (no client certificate: those doors authenticate
    their callers otherwise), or plaintext when `ca_file` is None (local runs). The
    server certificate of `clearway pki init` covers the services' names, so
    `fares:50052` is checked as is."""
    if ca_file is None:
        return grpc.aio.insecure_channel(address, options=list(options))
    try:
        roots = ca_file.read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read the CA certificate {ca_file}: {exc.strerror}") from exc
    credentials = grpc.ssl_channel_credentials(root_certificates=roots)
    return grpc.aio.secure_channel(address, credentials, options=list(options))
