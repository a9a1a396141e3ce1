"""Mutual TLS and caller identity through a real grpc.aio server started by
`RunningService`: the caller's identity comes from its client certificate; a call without
a verified clearway identity is refused; use cases refuse other parties' data; health
answers in plaintext on its own port for probes; without TLS nothing changes.

A note on what the TLS layer decides. grpcio's Python API offers two client-certificate
modes only: not requested at all, or requested, required and verified. So a client with
no certificate, or with one of another CA, is refused during the handshake and sees
UNAVAILABLE (the call never reaches the interceptor). A call that does reach it without a
clearway identity (a certificate of the scheme CA that names nobody) gets
UNAUTHENTICATED with reason `UNAUTHENTICATED`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from clearway.auth import (
    Authentication,
    PermissionDeniedError,
    Principal,
    UnauthenticatedError,
    acting_as,
    current_principal,
    operations_role,
    require,
    require_any,
)
from clearway.fares.v1 import fares_pb2, fares_pb2_grpc
from clearway.pki import (
    PkiLayout,
    client_credentials,
    init_pki,
    issue_identity,
    issue_leaf_certificate,
    load_ca,
    secure_channel,
    write_certified_key,
)
from clearway.rpc import reason_of
from clearway.runtime import Resources, RunningService
from clearway.settings import HEALTH_PORT_OFFSET, ServiceSettings, SettingsError
from clearway.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from services import healthcheck

FARES = "clearway.fares.v1.FaresService"
SETTLEMENT = "clearway.settlement.v1.SettlementService"
HEALTH = "grpc.health.v1.Health"
LUL = Principal("party", "operator:LUL")
ANONYMOUS = "anonymous"  # a certificate of the scheme CA without a clearway identity


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    init_pki(directory)
    issue_identity(LUL, directory)
    issue_identity(operations_role(), directory)
    layout = PkiLayout(directory)
    nobody = issue_leaf_certificate(
        load_ca(directory),
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nobody")]),
        names=[x509.DNSName("nobody.example")],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    write_certified_key(nobody, layout.client_cert(ANONYMOUS), layout.client_key(ANONYMOUS))
    return directory


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another CA that issued a certificate for the same identity."""
    directory = tmp_path_factory.mktemp("other-pki")
    init_pki(directory)
    issue_identity(LUL, directory)
    return directory


class Fares(fares_pb2_grpc.FaresServiceServicer):
    """QuoteFare answers with the caller's identity as the service sees it."""

    def __init__(self) -> None:
        self.calls = 0

    async def QuoteFare(self, request, context):
        self.calls += 1
        return fares_pb2.QuoteFareResponse(explanation=[str(current_principal())])


class Settlement(settlement_pb2_grpc.SettlementServiceServicer):
    """A party's statement lines: its own or, for the operations role, anyone's."""

    async def DownloadStatementLines(self, request, context):
        caller = require_any(
            current_principal(), Principal("party", request.party_id), operations_role()
        )
        for line in range(2):
            await asyncio.sleep(0)
            yield settlement_pb2.DownloadStatementLinesResponse(
                first_line=line,
                lines=[settlement_pb2.StatementLine(description=f"read by {caller}")],
            )


@dataclasses.dataclass
class GuardedService:
    settings: ServiceSettings
    authentication: Authentication = Authentication.REQUIRED
    fares: Fares = dataclasses.field(default_factory=Fares)

    @property
    def grpc_service_names(self) -> list[str]:
        return [FARES, SETTLEMENT]

    def register(self, server: grpc.aio.Server) -> None:
        fares_pb2_grpc.add_FaresServiceServicer_to_server(self.fares, server)
        settlement_pb2_grpc.add_SettlementServiceServicer_to_server(Settlement(), server)

    async def start(self, resources: Resources) -> None:
        return None


def settings(pki: Path | None) -> ServiceSettings:
    base = dataclasses.replace(
        ServiceSettings.from_env("guarded"),
        grpc_host="127.0.0.1",
        grpc_port=0,
        grace_seconds=0.5,
        tls_cert=None,
        tls_key=None,
        tls_client_ca=None,
        health_port=None,
    )
    if pki is None:
        return base
    layout = PkiLayout(pki)
    return dataclasses.replace(
        base,
        tls_cert=layout.server_cert,
        tls_key=layout.server_key,
        tls_client_ca=layout.ca_cert,
    )


@pytest.fixture
async def served(pki: Path) -> AsyncIterator[tuple[GuardedService, RunningService]]:
    service = GuardedService(settings(pki))
    running = RunningService(service)
    await running.start()
    try:
        yield service, running
    finally:
        await running.stop()


async def quote(channel: grpc.aio.Channel) -> list[str]:
    reply = await fares_pb2_grpc.FaresServiceStub(channel).QuoteFare(
        fares_pb2.QuoteFareRequest(), timeout=5
    )
    return list(reply.explanation)


async def refused(channel: grpc.aio.Channel) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await quote(channel)
    return raised.value


async def statement_lines(channel: grpc.aio.Channel, party_id: str) -> list[str]:
    call = settlement_pb2_grpc.SettlementServiceStub(channel).DownloadStatementLines(
        settlement_pb2.DownloadStatementLinesRequest(period_id="2026-03-01", party_id=party_id),
        timeout=5,
    )
    return [line.description async for chunk in call for line in chunk.lines]


async def health_status(channel: grpc.aio.Channel, service: str = "") -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=5
    )
    return reply.status


def tls_address(running: RunningService) -> str:
    return f"127.0.0.1:{running.port}"


# -- identity ------------------------------------------------------------------------


@pytest.mark.parametrize("caller", [LUL, operations_role()])
async def test_a_client_certificate_identifies_the_caller(served, pki, caller):
    _, running = served

    async with secure_channel(tls_address(running), pki, caller) as channel:
        assert await quote(channel) == [caller.uri]
        # One connection, many calls: each call is its caller's, again.
        assert await quote(channel) == [caller.uri]
    assert current_principal() is None  # nothing leaks out of the call


async def test_the_identity_is_the_certificate_file_stem_or_the_principal(served, pki):
    _, running = served

    async with secure_channel(tls_address(running), pki, LUL.file_stem) as channel:
        assert await quote(channel) == ["clearway:party/operator:LUL"]


async def test_a_scheme_certificate_without_a_clearway_identity_is_unauthenticated(served, pki):
    service, running = served

    async with secure_channel(tls_address(running), pki, ANONYMOUS) as channel:
        error = await refused(channel)
        # Health stays open to any TLS client.
        assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(error.trailing_metadata()) == "UNAUTHENTICATED"
    assert error.details().startswith("UNAUTHENTICATED: ")
    assert service.fares.calls == 0


async def test_a_call_without_a_client_certificate_is_refused_at_the_tls_handshake(served, pki):
    # grpcio cannot "request but not require" a client certificate, so the TLS layer
    # refuses the connection: UNAVAILABLE, and the servicer never runs.
    service, running = served

    async with secure_channel(tls_address(running), pki, None) as channel:
        error = await refused(channel)

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert service.fares.calls == 0


async def test_a_certificate_from_another_ca_is_refused_at_the_tls_handshake(served, other_pki):
    # The other CA's client certificate names the same party: it must not matter.
    service, running = served

    async with secure_channel(tls_address(running), other_pki, LUL) as channel:
        error = await refused(channel)

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert service.fares.calls == 0


async def test_a_plaintext_client_on_the_tls_port_fails(served):
    service, running = served

    async with grpc.aio.insecure_channel(tls_address(running)) as channel:
        error = await refused(channel)

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert service.fares.calls == 0


# -- authorization in the use case ---------------------------------------------------


async def test_a_party_reads_its_own_statement_and_is_denied_another_partys(served, pki):
    _, running = served

    async with secure_channel(tls_address(running), pki, LUL) as channel:
        own = await statement_lines(channel, "operator:LUL")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await statement_lines(channel, "operator:ELIZ")

    assert own == ["read by clearway:party/operator:LUL"] * 2
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(raised.value.trailing_metadata()) == "PERMISSION_DENIED"


async def test_the_operations_role_reads_any_partys_statement(served, pki):
    _, running = served

    async with secure_channel(tls_address(running), pki, operations_role()) as channel:
        lines = await statement_lines(channel, "operator:ELIZ")

    assert lines == ["read by clearway:role/operations"] * 2


def test_require_names_what_is_missing():
    party = Principal("party", "operator:LUL")

    assert require(party, kind="party", id="operator:LUL") is party
    assert require(party, kind="party") is party
    with pytest.raises(UnauthenticatedError):
        require(None, kind="party")
    with pytest.raises(PermissionDeniedError, match="may not act as role/operations"):
        require(party, kind="role", id="operations")
    with pytest.raises(PermissionDeniedError):
        require(party, kind="party", id="operator:ELIZ")
    with pytest.raises(PermissionDeniedError):
        require_any(party, operations_role())
    with acting_as(operations_role()):
        assert require_any(current_principal(), party, operations_role()) == operations_role()
    assert current_principal() is None


# -- the plaintext health port -------------------------------------------------------


async def test_health_answers_on_the_plaintext_health_port_without_a_certificate(served):
    _, running = served
    assert running.health_port is not None and running.health_port != running.port
    address = f"127.0.0.1:{running.health_port}"

    async with grpc.aio.insecure_channel(address) as channel:
        assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        assert await health_status(channel, FARES) == health_pb2.HealthCheckResponse.SERVING
        # Nothing but health and reflection is served there.
        error = await refused(channel)
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name async for reply in reflection for s in reply.list_services_response.service}
    assert names == {HEALTH, "grpc.reflection.v1alpha.ServerReflection"}

    # `clearway health HOST:PORT` (docker compose's healthcheck) works against it.
    assert await asyncio.to_thread(healthcheck.check, address) == "SERVING"
    assert await asyncio.to_thread(healthcheck.main, [address, FARES]) == 0


async def test_the_health_port_turns_not_serving_when_the_service_stops(pki):
    running = RunningService(GuardedService(settings(pki)))
    await running.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.health_port}") as channel:
        assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        await running.health.enter_graceful_shutdown()
        assert await health_status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
    await running.stop()


def test_the_health_port_defaults_to_the_grpc_port_plus_1000_with_tls(monkeypatch, pki):
    layout = PkiLayout(pki)
    monkeypatch.setenv("CLEARWAY_GRPC_PORT", "50052")
    monkeypatch.setenv("CLEARWAY_TLS_CERT", str(layout.server_cert))
    monkeypatch.setenv("CLEARWAY_TLS_KEY", str(layout.server_key))
    monkeypatch.setenv("CLEARWAY_TLS_CLIENT_CA", str(layout.ca_cert))
    monkeypatch.delenv("CLEARWAY_HEALTH_PORT", raising=False)

    read = ServiceSettings.from_env("fares")

    assert read.tls_enabled
    assert (read.tls_cert, read.tls_key, read.tls_client_ca) == (
        layout.server_cert,
        layout.server_key,
        layout.ca_cert,
    )
    assert read.plaintext_health_port == 50052 + HEALTH_PORT_OFFSET
    monkeypatch.setenv("CLEARWAY_HEALTH_PORT", "8081")
    assert ServiceSettings.from_env("fares").plaintext_health_port == 8081
    monkeypatch.delenv("CLEARWAY_TLS_KEY")
    with pytest.raises(SettingsError, match="set together"):
        ServiceSettings.from_env("fares")


# -- without authentication, or without TLS ------------------------------------------


async def test_with_authentication_none_there_is_no_principal_even_with_a_certificate(pki):
    service = GuardedService(settings(pki), authentication=Authentication.NONE)
    running = RunningService(service)
    await running.start()
    try:
        async with secure_channel(tls_address(running), pki, LUL) as channel:
            assert await quote(channel) == ["None"]
    finally:
        await running.stop()


async def test_without_tls_settings_one_plaintext_port_serves_everything_as_before():
    service = GuardedService(settings(None), authentication=Authentication.NONE)
    running = RunningService(service)
    port = await running.start()
    try:
        assert running.health_port is None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await quote(channel) == ["None"]
            assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
    finally:
        await running.stop()


async def test_a_service_that_requires_identities_does_not_start_without_mutual_tls(pki):
    layout = PkiLayout(pki)
    server_tls_only = dataclasses.replace(
        settings(None), tls_cert=layout.server_cert, tls_key=layout.server_key
    )
    for unsafe in (settings(None), server_tls_only):
        running = RunningService(GuardedService(unsafe))
        with pytest.raises(SettingsError, match="CLEARWAY_TLS_CLIENT_CA"):
            await running.start()
        await running.stop()


def test_client_credentials_read_the_identity_files(pki):
    assert isinstance(client_credentials(pki, LUL), grpc.ChannelCredentials)
    with pytest.raises(FileNotFoundError):
        client_credentials(pki, Principal("party", "operator:NOBODY"))
