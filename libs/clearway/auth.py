"""Who is calling: the caller's identity comes from its credential, never from a request.

Every party, role and device holds a client certificate issued by the scheme CA
(`clearway.pki`); its identity is the certificate's one URI SAN `clearway:<kind>/<id>`
(`clearway:party/operator:LUL`, `clearway:role/operations`, `clearway:device/gate-KGX`).
The TLS layer verifies the certificate against the scheme CA; the RPC interceptor reads
the verified certificate into a `Principal` and binds it to the call, where use cases
read it with `current_principal()`.

Authentication is the interceptor's job (a service declares `authentication`);
authorization stays in the use cases, which alone know whose data a call touches:
`require(current_principal(), kind="party", id=statement.party_id)`.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509

from clearway.errors import ClearwayError, ErrorKind

URI_SCHEME = "clearway"
# The kinds of identity a certificate may carry. A new kind of caller (a traveller, a
# council officer) is one more entry here and the same mechanism everywhere else.
IDENTITY_KINDS = ("party", "role", "device")
# Letters, digits, '-' and ':' (party ids are `operator:LUL`); at most 64 characters so the
# id is also the certificate's common name. No '.', '_' or '/': ids map to file names.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9:-]{0,63}")
OPERATIONS = "operations"  # the scheme's operations role (closes periods)


class Authentication(StrEnum):
    """What a service asks of its callers (the `authentication` attribute of a service)."""

    NONE = "none"  # no identity is read; `current_principal()` is None
    REQUIRED = "required"  # a verified client certificate with a clearway identity


class UnauthenticatedError(ClearwayError):
    """The call carries no verified identity."""

    code = "UNAUTHENTICATED"
    kind = ErrorKind.UNAUTHENTICATED


class PermissionDeniedError(ClearwayError):
    """The caller is known but may not do this (another party's data, a missing role)."""

    code = "PERMISSION_DENIED"
    kind = ErrorKind.PERMISSION_DENIED


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: `kind` is one of IDENTITY_KINDS, `id` its id in that kind."""

    kind: str
    id: str

    def __post_init__(self) -> None:
        if self.kind not in IDENTITY_KINDS:
            raise ValueError(f"identity kind must be one of {IDENTITY_KINDS}, got {self.kind!r}")
        if not ID_PATTERN.fullmatch(self.id):
            raise ValueError(
                f"identity id must be letters, digits, '-' and ':' (at most 64), got {self.id!r}"
            )

    @property
    def uri(self) -> str:
        """The URI SAN that carries this identity: `clearway:party/operator:LUL`."""
        return f"{URI_SCHEME}:{self.kind}/{self.id}"

    @property
    def file_stem(self) -> str:
        """A file-name-safe, one-to-one name: `party-operator_LUL` (also a Kubernetes
        secret key)."""
        return f"{self.kind}-{self.id.replace(':', '_')}"

    @classmethod
    def from_uri(cls, uri: str) -> Principal:
        """Parse `clearway:<kind>/<id>`; ValueError when it is not one."""
        scheme, sep, rest = uri.partition(":")
        kind, slash, id_ = rest.partition("/")
        if scheme != URI_SCHEME or not sep or not slash:
            raise ValueError(f"not a clearway identity: {uri!r}")
        return cls(kind, id_)

    @classmethod
    def parse(cls, text: str) -> Principal:
        """`kind/id` or the full URI; ValueError when it is neither."""
        return cls.from_uri(text if text.startswith(f"{URI_SCHEME}:") else f"{URI_SCHEME}:{text}")

    def __str__(self) -> str:
        return self.uri


def operations_role() -> Principal:
    """The scheme's operations role (the only caller that may close a period)."""
    return Principal("role", OPERATIONS)


@functools.lru_cache(maxsize=1024)
def principal_from_certificate(pem: bytes) -> Principal | None:
    """The identity a (verified) PEM certificate carries: its one `clearway:` URI SAN;
    None when it has none, or more than one (ambiguous)."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    ours = [u for u in uris if u.startswith(f"{URI_SCHEME}:")]
    if len(ours) != 1:
        return None
    try:
        return Principal.from_uri(ours[0])
    except ValueError:
        return None


def principal_from_auth_context(auth: Mapping[str, Iterable[bytes]]) -> Principal | None:
    """The identity of a gRPC peer, from `context.auth_context()`: present only when the
    connection is TLS and the client presented a certificate the server verified."""
    if b"ssl" not in list(auth.get("transport_security_type", ())):
        return None
    pems = list(auth.get("x509_pem_cert", ()))
    return principal_from_certificate(pems[0]) if pems else None


_PRINCIPAL: ContextVar[Principal | None] = ContextVar("clearway_principal", default=None)


def current_principal() -> Principal | None:
    """The authenticated caller of the RPC being served; None outside an authenticated
    call (or when the service's authentication is "none")."""
    return _PRINCIPAL.get()


@contextlib.contextmanager
def acting_as(principal: Principal | None) -> Iterator[None]:
    """Bind `principal` as the caller for the block (the interceptor; tests of use cases)."""
    token = _PRINCIPAL.set(principal)
    try:
        yield
    finally:
        # A streaming call may finish in another context than it started in; the binding
        # then dies with the call's task anyway.
        with contextlib.suppress(ValueError):
            _PRINCIPAL.reset(token)


def require(principal: Principal | None, *, kind: str, id: str | None = None) -> Principal:
    """`principal` when it is of `kind` (and is `id`, when given); UnauthenticatedError
    when there is no caller, PermissionDeniedError when it is someone else."""
    if principal is None:
        raise UnauthenticatedError("this call needs a client certificate of the scheme")
    if principal.kind != kind or (id is not None and principal.id != id):
        wanted = f"{kind}/{id}" if id is not None else f"a {kind}"
        raise PermissionDeniedError(f"{principal} may not act as {wanted}")
    return principal


def require_any(principal: Principal | None, *allowed: Principal) -> Principal:
    """`principal` when it is one of `allowed` (e.g. the party itself or the operations
    role); UnauthenticatedError or PermissionDeniedError otherwise."""
    if principal is None:
        raise UnauthenticatedError("this call needs a client certificate of the scheme")
    if principal not in allowed:
        raise PermissionDeniedError(f"{principal} may not do this")
    return principal
