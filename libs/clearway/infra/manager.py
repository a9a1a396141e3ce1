"""The local infrastructure as a whole: bring Kafka, PostgreSQL and Redis up, down, or check.

A component whose address is given by its environment variable (CLEARWAY_KAFKA_BOOTSTRAP,
CLEARWAY_PG_DSN, CLEARWAY_REDIS_URL) is *external*: checked, never started or stopped.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import clearway
from clearway.infra.endpoints import (
    KAFKA_BOOTSTRAP_VAR,
    PG_DSN_VAR,
    REDIS_URL_VAR,
    Endpoints,
    LocalPorts,
)
from clearway.infra.kafka import LocalKafka, probe_kafka
from clearway.infra.postgres import LocalPostgres, probe_postgres
from clearway.infra.process import InfraError, ProcessRecord, describe_error, log
from clearway.infra.redis import LocalRedis, probe_redis

INFRA_DIR_VAR = "CLEARWAY_INFRA_DIR"
COMPONENTS = ("kafka", "postgres", "redis")


class LocalServer(Protocol):
    """What the manager needs from each locally run server."""

    name: str

    @property
    def address(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def probe(self) -> str | None: ...

    def running_record(self) -> ProcessRecord | None: ...


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    """One line of `clearway infra status`."""

    name: str
    address: str
    up: bool
    external: bool
    detail: str | None = None
    pid: int | None = None

    def render(self) -> str:
        """The status line a person reads."""
        state = "up" if self.up else "down"
        where = "external" if self.external else "local"
        extra = f", pid {self.pid}" if self.pid is not None else ""
        line = f"{self.name:<9}{state:<6}{_mask_password(self.address)} ({where}{extra})"
        return line if self.detail is None else f"{line}: {self.detail}"


def repo_root() -> Path:
    """The repository this code is installed from (libs/clearway -> repo)."""
    return Path(clearway.__file__).resolve().parents[2]


def default_base_dir(env: Mapping[str, str] | None = None) -> Path:
    """$CLEARWAY_INFRA_DIR, else <repo>/.infra."""
    env = os.environ if env is None else env
    override = env.get(INFRA_DIR_VAR)
    return Path(override).resolve() if override else repo_root() / ".infra"


class LocalInfra:
    """The servers of one local instance (a base directory and its ports)."""

    def __init__(
        self,
        base_dir: Path | None = None,
        ports: LocalPorts | None = None,
        env: Mapping[str, str] | None = None,
        components: Sequence[str] = COMPONENTS,
    ) -> None:
        env = dict(os.environ if env is None else env)
        self._env = env
        unknown = set(components) - set(COMPONENTS)
        if unknown:
            raise InfraError(f"unknown components {sorted(unknown)}; choose from {COMPONENTS}")
        self.base_dir = (base_dir or default_base_dir(env)).resolve()
        self.ports = ports or LocalPorts.from_env(env)
        self.components = tuple(c for c in COMPONENTS if c in components)
        root = repo_root()
        self.servers: dict[str, LocalServer] = {
            "kafka": LocalKafka(self.base_dir, root, self.ports.kafka, self.ports.kafka_controller),
            "postgres": LocalPostgres(self.base_dir, self.ports.postgres),
            "redis": LocalRedis(self.base_dir, self.ports.redis),
        }
        self.external: dict[str, str] = {
            name: env[var]
            for name, var in (
                ("kafka", KAFKA_BOOTSTRAP_VAR),
                ("postgres", PG_DSN_VAR),
                ("redis", REDIS_URL_VAR),
            )
            if env.get(var)
        }

    @property
    def endpoints(self) -> Endpoints:
        """Addresses of all three components: external ones as given, else ours."""
        local = Endpoints.local(self.ports)
        return Endpoints(
            kafka_bootstrap=self.external.get("kafka", local.kafka_bootstrap),
            pg_dsn=self.external.get("postgres", local.pg_dsn),
            redis_url=self.external.get("redis", local.redis_url),
        )

    def up(self) -> Endpoints:
        """Start what is missing (in parallel), verify everything answers; idempotent."""
        with self._exclusive():
            log(f"instance {self.base_dir}")
            errors = _in_parallel({name: self._up_one(name) for name in self.components})
        if errors:
            raise InfraError("; ".join(f"{name}: {err}" for name, err in errors.items()))
        return self.endpoints

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One `up` or `down` at a time per instance (tests and people run them at once)."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with (self.base_dir / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _up_one(self, name: str) -> Callable[[], None]:
        def work() -> None:
            if name in self.external:
                reason = _probe_external(name, self.external[name])
                if reason is not None:
                    address = _mask_password(self.external[name])
                    raise InfraError(f"external server {address} is down: {reason}")
                log(f"{name}: external server {_mask_password(self.external[name])} answers")
                return
            self.servers[name].start()

        return work

    def down(self) -> None:
        """Stop what `up` started here (never external servers or others'); keep data."""

        def stop_one(name: str) -> Callable[[], None]:
            def work() -> None:
                if name in self.external:
                    log(f"{name}: external; not ours to stop")
                else:
                    self.servers[name].stop()

            return work

        with self._exclusive():
            errors = _in_parallel({name: stop_one(name) for name in self.components})
        if errors:
            raise InfraError("; ".join(f"{name}: {err}" for name, err in errors.items()))

    def clean(self) -> None:
        """Stop every component of this instance, then delete all its data.

        All components, whatever `components` says: the data of all of them goes.
        PostgreSQL's data kept outside the instance directory goes too.
        """
        LocalInfra(self.base_dir, self.ports, self._env, COMPONENTS).down()
        with self._exclusive():
            pg_link = self.base_dir / "postgres"
            if pg_link.is_symlink():
                outside = pg_link.resolve()
                log(f"postgres: deleting {outside.parent}")
                shutil.rmtree(outside.parent, ignore_errors=True)
            log(f"deleting {self.base_dir}")
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def status(self) -> list[ComponentStatus]:
        """Each component's state, found by really connecting to it."""
        with ThreadPoolExecutor(max_workers=len(self.components) or 1) as pool:
            return list(pool.map(self._status_one, self.components))

    def _status_one(self, name: str) -> ComponentStatus:
        if name in self.external:
            address = self.external[name]
            reason = _probe_external(name, address)
            return ComponentStatus(name, address, reason is None, True, reason)
        server = self.servers[name]
        reason = server.probe()
        record = server.running_record()
        if reason is None and record is None:
            reason = "answers, but not started by this instance"
            return ComponentStatus(name, server.address, True, False, reason)
        pid = record.pid if record is not None else None
        return ComponentStatus(name, server.address, reason is None, False, reason, pid)


def _probe_external(name: str, address: str) -> str | None:
    probes = {"kafka": probe_kafka, "postgres": probe_postgres, "redis": probe_redis}
    return probes[name](address)


def _in_parallel(work: Mapping[str, Callable[[], None]]) -> dict[str, str]:
    """Run each callable in its own thread; the errors by name."""
    errors: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=len(work) or 1) as pool:
        futures = {name: pool.submit(fn) for name, fn in work.items()}
        for name, future in futures.items():
            exc = future.exception()
            if isinstance(exc, InfraError):
                errors[name] = str(exc)
            elif exc is not None:
                errors[name] = describe_error(exc)
    return errors


def _mask_password(address: str) -> str:
    return re.sub(r"(//[^:/@]+:)[^@]+@", r"\1***@", address)
