"""The fault run's own Kafka, PostgreSQL and Redis: it restarts them mid-stream, so it never
uses the shared ones (other runs, a soak, a demo may be using those)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from clearway.infra.endpoints import (
    KAFKA_BOOTSTRAP_VAR,
    PG_DSN_VAR,
    REDIS_URL_VAR,
    Endpoints,
    LocalPorts,
)
from clearway.infra.manager import COMPONENTS, INFRA_DIR_VAR, LocalInfra, default_base_dir
from clearway.infra.process import InfraError, free_ports


@dataclass
class OwnInfra:
    """A Kafka, PostgreSQL and Redis of the run's own, in `base_dir`, on free ports."""

    infra: LocalInfra

    @classmethod
    def create(cls, base_dir: Path) -> OwnInfra:
        """Prepare (not start) the servers; Kafka reuses the jars `infra up` fetched."""
        kafka, controller, pg, redis = free_ports(4)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {KAFKA_BOOTSTRAP_VAR, PG_DSN_VAR, REDIS_URL_VAR}
        }
        env[INFRA_DIR_VAR] = str(base_dir)
        fetched = default_base_dir() / "kafka" / "libs"
        if fetched.is_dir():
            (base_dir / "kafka").mkdir(parents=True, exist_ok=True)
            (base_dir / "kafka" / "libs").symlink_to(fetched)
        ports = LocalPorts(kafka, controller, pg, redis)
        return cls(LocalInfra(base_dir, ports, env, COMPONENTS))

    @property
    def endpoints(self) -> Endpoints:
        """Where the servers are."""
        return self.infra.endpoints

    def up(self) -> Endpoints:
        """Start all three; their addresses."""
        for attempt in range(3):
            try:
                return self.infra.up()
            except InfraError:
                # Seen here: a JVM just started is briefly taken for exited (its command
                # line read while the launcher re-executes); `start` adopts it if it lives.
                if attempt == 2:
                    raise
                time.sleep(2.0)
        raise AssertionError("unreachable")

    def restart(self, component: str) -> float:
        """Stop one server (gracefully: Kafka's controlled shutdown, PostgreSQL's fast
        shutdown, Redis saving its data) and start it again; seconds it was away."""
        server = self.infra.servers[component]
        started = time.monotonic()
        server.stop()
        for attempt in range(3):
            try:
                server.start()
                break
            except InfraError:
                if attempt == 2:
                    raise
                time.sleep(2.0)
        return time.monotonic() - started

    def remove(self) -> None:
        """Stop every server and delete its data."""
        self.infra.clean()
