"""`clearway health HOST:PORT [SERVICE]`: ask a server's standard gRPC health service.

Container runtimes run this as a healthcheck (docker compose), so it must be quick,
print one line, and say everything through its exit code: 0 only when SERVING.
Kubernetes uses its native gRPC probes against the same health service instead.
Neither can do TLS: a service served with TLS answers health in plaintext on its health
port (`CLEARWAY_HEALTH_PORT`, default the gRPC port + 1000), which is where to point both.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

USAGE = "usage: clearway health HOST:PORT [SERVICE]"
TIMEOUT_SECONDS = 3.0
EXIT_SERVING = 0
EXIT_UNHEALTHY = 1
EXIT_USAGE = 2


def parse_target(target: str) -> str | None:
    """Return `target` when it is HOST:PORT (IPv6 as [::1]:PORT), else None."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return target


def check(target: str, service: str = "", timeout: float = TIMEOUT_SECONDS) -> str:
    """Return the serving status name `target` reports for `service` ("" = the server)."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        response = stub.Check(request, timeout=timeout)
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return name


def main(argv: list[str]) -> int:
    """Print the health status of HOST:PORT; exit 0 when SERVING, 1 if not, 2 on misuse."""
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return EXIT_SERVING
    if len(argv) not in (1, 2) or parse_target(argv[0]) is None:
        print(USAGE, file=sys.stderr)
        return EXIT_USAGE
    target = argv[0]
    service = argv[1] if len(argv) == 2 else ""
    try:
        status = check(target, service)
    except grpc.RpcError as error:
        # A grpc.Call carries the status code; a bare RpcError does not.
        code = error.code().name if isinstance(error, grpc.Call) else "UNKNOWN"
        print(f"{code}: {target} {service}".rstrip(), file=sys.stderr)
        return EXIT_UNHEALTHY
    print(status)
    return EXIT_SERVING if status == "SERVING" else EXIT_UNHEALTHY
