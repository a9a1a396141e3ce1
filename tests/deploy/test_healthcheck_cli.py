"""`clearway health HOST:PORT [SERVICE]` against a real in-process gRPC health server."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from conftest import free_port
from services import cli, healthcheck

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(grace=None)


def test_serving_server_exits_0_and_says_serving(
    health_server: tuple[str, health.HealthServicer], capsys: pytest.CaptureFixture[str]
) -> None:
    target, servicer = health_server
    servicer.set("", SERVING)
    assert healthcheck.main([target]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"


def test_not_serving_server_exits_1(
    health_server: tuple[str, health.HealthServicer], capsys: pytest.CaptureFixture[str]
) -> None:
    target, servicer = health_server
    servicer.set("", NOT_SERVING)
    assert healthcheck.main([target]) == 1
    assert capsys.readouterr().out.strip() == "NOT_SERVING"


def test_named_service_status_is_checked_on_its_own(
    health_server: tuple[str, health.HealthServicer],
) -> None:
    target, servicer = health_server
    servicer.set("", SERVING)
    servicer.set("clearway.fares.v1.FareService", NOT_SERVING)
    assert healthcheck.main([target, "clearway.fares.v1.FareService"]) == 1
    servicer.set("clearway.fares.v1.FareService", SERVING)
    assert healthcheck.main([target, "clearway.fares.v1.FareService"]) == 0


def test_unknown_service_exits_1(
    health_server: tuple[str, health.HealthServicer], capsys: pytest.CaptureFixture[str]
) -> None:
    target, _ = health_server
    assert healthcheck.main([target, "no.such.Service"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_nothing_listening_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck.main([f"127.0.0.1:{free_port()}"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [[], ["localhost"], ["localhost:http"], [":50051"], ["localhost:70000"], ["a:1", "b", "c"]],
)
def test_usage_error_exits_2(argv: list[str]) -> None:
    assert healthcheck.main(argv) == 2


def test_clearway_cli_routes_health_to_the_check(
    health_server: tuple[str, health.HealthServicer],
) -> None:
    target, servicer = health_server
    servicer.set("", SERVING)
    assert cli.main(["health", target]) == 0
    assert cli.main(["health"]) == 2
