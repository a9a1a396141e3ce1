"""Service-to-service channels (accounts → fares, portal → accounts): TLS checked against
the scheme CA when the client is given it, plaintext otherwise, through a real grpc.aio
server serving TLS as fares and accounts do with CLEARWAY_TLS_CERT/KEY."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from clearway.pki import PkiError, PkiLayout, init_pki, server_credentials, service_channel
from clearway.settings import ServiceSettings
from services.accounts.app import AccountsApp
from services.portal.app import PortalSettings


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    init_pki(directory)
    return directory


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("other-pki")
    init_pki(directory)
    return directory


@pytest.fixture
async def tls_server(pki: Path) -> AsyncIterator[int]:
    """A TLS port (server certificate of the scheme CA, no client certificate asked)."""
    layout = PkiLayout(pki)
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_secure_port(
        "127.0.0.1:0", server_credentials(layout.server_cert, layout.server_key)
    )
    await server.start()
    yield port
    await server.stop(None)


async def check(channel: grpc.aio.Channel) -> int:
    async with channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return int(reply.status)


async def test_a_client_given_the_scheme_ca_talks_tls(tls_server: int, pki: Path) -> None:
    channel = service_channel(f"localhost:{tls_server}", PkiLayout(pki).ca_cert)
    assert await check(channel) == health_pb2.HealthCheckResponse.SERVING


async def test_a_plaintext_client_cannot_talk_to_a_tls_port(tls_server: int) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await check(service_channel(f"localhost:{tls_server}", None))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_server_certificate_of_another_ca_is_not_trusted(
    tls_server: int, other_pki: Path
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await check(service_channel(f"localhost:{tls_server}", PkiLayout(other_pki).ca_cert))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_missing_ca_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    with pytest.raises(PkiError, match=str(missing)):
        service_channel("fares:50052", missing)


def test_accounts_and_the_portal_read_their_ca_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, pki: Path
) -> None:
    ca = PkiLayout(pki).ca_cert
    for name in ("CLEARWAY_FARES_TLS_CA", "CLEARWAY_ACCOUNTS_TLS_CA"):
        monkeypatch.delenv(name, raising=False)
    assert AccountsApp(ServiceSettings.from_env("accounts")).fares_ca is None
    assert PortalSettings.from_env().accounts_ca is None
    monkeypatch.setenv("CLEARWAY_FARES_TLS_CA", str(ca))
    monkeypatch.setenv("CLEARWAY_ACCOUNTS_TLS_CA", str(ca))
    assert AccountsApp(ServiceSettings.from_env("accounts")).fares_ca == ca
    assert PortalSettings.from_env().accounts_ca == ca
