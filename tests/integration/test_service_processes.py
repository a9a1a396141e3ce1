"""Each service as its own process: SERVING on the standard health check, reflection,
and SIGTERM → NOT_SERVING → exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from clearway.auth import OPERATIONS, Principal
from clearway.infra.endpoints import Endpoints
from clearway.pki import secure_channel
from conftest import free_port, tls_env

pytestmark = pytest.mark.integration

EXPECTED = {
    "ingest": "clearway.ingest.v1.IngestService",
    "fares": "clearway.fares.v1.FaresService",
    "settlement": "clearway.settlement.v1.SettlementService",
    "accounts": "clearway.accounts.v1.AccountsService",
}


TLS_SERVICES = ("ingest", "settlement")


def spawn(
    name: str, port: int, endpoints: Endpoints, unique: str, **extra: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **endpoints.as_env(),
        "CLEARWAY_GRPC_PORT": str(port),
        "CLEARWAY_METRICS_PORT": "0",  # off: port + 3000 may be taken on a busy machine
        "CLEARWAY_TOPIC_PREFIX": f"{unique}.",
        "CLEARWAY_DB_SCHEMA": f"{unique}_{name}",
        "CLEARWAY_CONSUMER_GROUP": f"{unique}-{name}",
        "CLEARWAY_GRACE_SECONDS": "5",
        **extra,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", name],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def wait_serving(address: str, proc: subprocess.Popen[bytes], wait_s: float = 60) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(int(wait_s * 5)):
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"{address} never reported SERVING")


async def reflected_services(address: str, pki: Path | None = None) -> set[str]:
    """What server reflection lists (over mutual TLS as the operations role with `pki`)."""
    if pki is None:
        channel = grpc.aio.insecure_channel(address)
    else:
        channel = secure_channel(address, pki, Principal("role", OPERATIONS))
    async with channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask():
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        async for reply in stub.ServerReflectionInfo(ask()):
            return {s.name for s in reply.list_services_response.service}
    return set()


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_service_serves_health_and_reflection_then_stops_on_sigterm(
    name, endpoints, unique_name, pki
):
    """Settlement serves mutual TLS, ingest TLS (and mutual TLS on its admin port): health
    and reflection answer on their plaintext health port (what Kubernetes probes use)."""
    port = free_port()
    extra = {}
    if name in TLS_SERVICES:
        health = free_port()
        extra = {**tls_env(pki), "CLEARWAY_HEALTH_PORT": str(health)}
        if name == "ingest":
            extra["CLEARWAY_ADMIN_PORT"] = str(free_port())
        address = f"127.0.0.1:{health}"
    else:
        address = f"127.0.0.1:{port}"
    proc = spawn(name, port, endpoints, unique_name, **extra)
    try:
        await wait_serving(address, proc)
        if name in TLS_SERVICES:
            assert await reflected_services(address) == {
                "grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection",
            }
            services = await reflected_services(f"127.0.0.1:{port}", pki)
        else:
            services = await reflected_services(address)
        assert EXPECTED[name] in services
        assert "grpc.health.v1.Health" in services

        seen: list[int] = []
        async with grpc.aio.insecure_channel(address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=EXPECTED[name])
            )
            first = await watch.read()
            seen.append(first.status)
            proc.send_signal(signal.SIGTERM)
            try:
                while True:
                    reply = await asyncio.wait_for(watch.read(), 10)
                    if reply is grpc.aio.EOF:
                        break
                    seen.append(reply.status)
            except (grpc.aio.AioRpcError, TimeoutError):
                pass
        code = await asyncio.to_thread(proc.wait, 20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert seen[0] == health_pb2.HealthCheckResponse.SERVING
    assert health_pb2.HealthCheckResponse.NOT_SERVING in seen
    assert code == 0


@pytest.mark.parametrize("name", TLS_SERVICES)
async def test_a_service_with_authenticated_callers_refuses_to_start_without_mutual_tls(
    name, endpoints, unique_name
):
    proc = spawn(name, free_port(), endpoints, unique_name)
    code = await asyncio.to_thread(proc.wait, 60)
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert code == 1
    assert "CLEARWAY_TLS_CLIENT_CA" in output
