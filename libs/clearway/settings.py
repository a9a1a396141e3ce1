"""Typed settings read once from environment variables, with developer-machine defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from clearway.infra.endpoints import Endpoints
from clearway.kafka import Topics

DEFAULT_PORTS = {"ingest": 50051, "fares": 50052, "settlement": 50053, "accounts": 50054}
HEALTH_PORT_OFFSET = 1000  # the plaintext health port beside a TLS gRPC port
ADMIN_PORT_OFFSET = 2000  # the mutual-TLS admin port of a service with operations-only RPCs
METRICS_PORT_OFFSET = 3000  # the plaintext HTTP port serving /metrics
# Worker i of `clearway serve --workers N` serves /metrics on the port + 100 * i: every
# worker keeps its own counters, so each must be scraped on its own.
WORKER_METRICS_PORT_STEP = 100
METRICS_OFF = -1  # `metrics_port` when CLEARWAY_METRICS_PORT=0: no /metrics
REPO_ROOT = Path(__file__).resolve().parents[2]


class SettingsError(ValueError):
    """An environment variable holds a value that cannot be used."""

    code = "BAD_SETTING"


def env_str(name: str, default: str) -> str:
    """The variable's value, or `default` when unset or empty."""
    value = os.environ.get(name, "").strip()
    return value or default


def metrics_port_of(configured: int | None, main_port: int, worker_index: int = 0) -> int | None:
    """Where a process serves /metrics: None when off (`configured` is METRICS_OFF);
    `configured`, or the main port + METRICS_PORT_OFFSET when not configured (0, any free
    port, when the main port is 0 too); worker i adds WORKER_METRICS_PORT_STEP * i."""
    if configured == METRICS_OFF:
        return None
    base = configured
    if base is None:
        base = main_port + METRICS_PORT_OFFSET if main_port else 0
    return base + WORKER_METRICS_PORT_STEP * worker_index if base else 0


def metrics_port_from_env() -> int | None:
    """CLEARWAY_METRICS_PORT as `metrics_port_of` takes it: None when unset, METRICS_OFF
    for 0."""
    configured = env_int("CLEARWAY_METRICS_PORT", -1)
    return None if configured < 0 else (configured or METRICS_OFF)


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    """An integer variable; a clear error when it is not one."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def env_int_triple(name: str, default: tuple[int, int, int]) -> tuple[int, int, int]:
    """Three comma-separated non-negative integers (e.g. `50000,50,100`)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise SettingsError(f"{name} must be three integers like 50000,50,100, got {raw!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def env_float_seconds(name: str, default: float) -> float:
    """A duration in seconds (fractions allowed: this is time, not money)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None


def refuse_inline_key_material(name: str, raw: str) -> None:
    """SettingsError when `raw`, the value of a variable that names a file, is a key or
    certificate itself: keys are read from files only (docs/security.md), and a PEM taken
    for a path would end up in the "no such file" error. The value is never repeated."""
    if "-----BEGIN" in raw or "\n" in raw or "\r" in raw:
        raise SettingsError(
            f"{name} must be the path of a file, not the key or certificate itself"
            " (its value is not repeated here)"
        )


def env_path(name: str) -> Path | None:
    """A file path variable, or None when unset or empty; key material given inline
    instead of a path is refused (`refuse_inline_key_material`)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    refuse_inline_key_material(name, raw)
    return Path(raw)


def tls_from_env() -> tuple[Path | None, Path | None, Path | None]:
    """`CLEARWAY_TLS_CERT`, `CLEARWAY_TLS_KEY` and `CLEARWAY_TLS_CLIENT_CA` (paths); a
    certificate without its key, or a client CA without a certificate, is an error, not a
    silent plaintext port."""
    cert, key = env_path("CLEARWAY_TLS_CERT"), env_path("CLEARWAY_TLS_KEY")
    client_ca = env_path("CLEARWAY_TLS_CLIENT_CA")
    if (cert is None) != (key is None):
        raise SettingsError("CLEARWAY_TLS_CERT and CLEARWAY_TLS_KEY must be set together")
    if client_ca is not None and cert is None:
        raise SettingsError("CLEARWAY_TLS_CLIENT_CA needs CLEARWAY_TLS_CERT and CLEARWAY_TLS_KEY")
    return cert, key, client_ca


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """What every service needs: where it listens and where the infrastructure is."""

    service: str
    grpc_host: str
    grpc_port: int
    endpoints: Endpoints
    log_level: str
    grace_seconds: float
    otlp_endpoint: str | None
    topics: Topics
    db_schema: str
    consumer_group: str
    topic_partitions: int = 6
    consumer_max_records: int = 10000
    pg_pool_size: int = 8
    gc_thresholds: tuple[int, int, int] = (50_000, 50, 100)
    # TLS on the gRPC port when cert and key are set; mutual TLS when the client CA is too.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    # The plaintext health-and-reflection port served beside a TLS port (probes cannot do
    # TLS); None = the gRPC port + 1000 (0 when the gRPC port is 0).
    health_port: int | None = None
    # The mutual-TLS admin port of a service with operations-only gRPC services (ingest's
    # device registry); None = the gRPC port + 2000 (0 when the gRPC port is 0).
    admin_port: int | None = None
    # The plaintext HTTP port serving /metrics; None = the gRPC port + 3000 (any free port
    # when the gRPC port is 0); METRICS_OFF: none (CLEARWAY_METRICS_PORT=0).
    metrics_port: int | None = None
    worker_index: int = 0  # CLEARWAY_WORKER_INDEX: which worker of `serve --workers N`

    @property
    def tls_enabled(self) -> bool:
        """True when the gRPC port is served with TLS."""
        return self.tls_cert is not None and self.tls_key is not None

    @property
    def plaintext_health_port(self) -> int:
        """Where the plaintext health port listens when TLS is on."""
        if self.health_port is not None:
            return self.health_port
        return self.grpc_port + HEALTH_PORT_OFFSET if self.grpc_port else 0

    @property
    def mutual_tls_admin_port(self) -> int:
        """Where the admin port listens (services with operations-only gRPC services)."""
        if self.admin_port is not None:
            return self.admin_port
        return self.grpc_port + ADMIN_PORT_OFFSET if self.grpc_port else 0

    @property
    def http_metrics_port(self) -> int | None:
        """Where /metrics listens (0: any free port), or None when it is off; worker i of
        `serve --workers N` adds 100 * i."""
        return metrics_port_of(self.metrics_port, self.grpc_port, self.worker_index)

    @classmethod
    def from_env(cls, service: str) -> ServiceSettings:
        """Read `CLEARWAY_*` variables for `service`."""
        tls_cert, tls_key, tls_client_ca = tls_from_env()
        health_port = env_int("CLEARWAY_HEALTH_PORT", -1)
        admin_port = env_int("CLEARWAY_ADMIN_PORT", -1)
        return cls(
            service=service,
            grpc_host=env_str("CLEARWAY_GRPC_HOST", "127.0.0.1"),
            grpc_port=env_int("CLEARWAY_GRPC_PORT", DEFAULT_PORTS.get(service, 50050)),
            endpoints=Endpoints.from_env(),
            log_level=env_str("CLEARWAY_LOG_LEVEL", "INFO").upper(),
            grace_seconds=env_float_seconds("CLEARWAY_GRACE_SECONDS", 10.0),
            otlp_endpoint=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
            topics=Topics(env_str("CLEARWAY_TOPIC_PREFIX", "")),
            db_schema=env_str("CLEARWAY_DB_SCHEMA", service),
            consumer_group=env_str("CLEARWAY_CONSUMER_GROUP", f"clearway-{service}"),
            topic_partitions=env_int("CLEARWAY_TOPIC_PARTITIONS", 6, minimum=1),
            consumer_max_records=env_int("CLEARWAY_CONSUMER_MAX_RECORDS", 10000, minimum=1),
            pg_pool_size=env_int("CLEARWAY_PG_POOL_SIZE", 8, minimum=2),
            gc_thresholds=env_int_triple("CLEARWAY_GC_THRESHOLDS", (50_000, 50, 100)),
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_client_ca=tls_client_ca,
            health_port=None if health_port < 0 else health_port,
            admin_port=None if admin_port < 0 else admin_port,
            metrics_port=metrics_port_from_env(),
            worker_index=env_int("CLEARWAY_WORKER_INDEX", 0),
        )
