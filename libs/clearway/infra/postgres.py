"""A local PostgreSQL from Debian's packages, in its own data directory under .infra.

PostgreSQL refuses to run as root, so as root we run initdb and the server as the
unprivileged `postgres` user. That user must be able to reach the data directory; when
the repository sits under a directory it cannot traverse (a clone in /root, mode 700),
the data lives under /var/lib/clearway-infra/<hash of the path> with a symlink from
.infra/postgres.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pwd
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

from clearway.infra.endpoints import LOCAL_HOST, PG_DATABASE, PG_PASSWORD, PG_USER
from clearway.infra.process import (
    InfraError,
    ProcessRecord,
    apt_install,
    describe_error,
    log,
    port_open,
    run_async,
    stop_recorded,
    tail,
    wait_until,
)

OS_USER = "postgres"
SHARED_DATA_ROOT = Path("/var/lib/clearway-infra")
START_TIMEOUT_S = 60.0
# A unix socket path must fit in sockaddr_un.sun_path (108 bytes with the NUL).
MAX_SOCKET_PATH = 100


async def check_postgres(dsn: str, wait_s: float = 5.0) -> None:
    """Connect to `dsn` and run SELECT 1; raises on any failure."""
    # Imported lazily (keeps `clearway infra --help` light) and as Any: asyncpg ships no types.
    asyncpg: Any = importlib.import_module("asyncpg")
    conn = await asyncpg.connect(dsn, timeout=wait_s)
    try:
        value = await conn.fetchval("SELECT 1", timeout=wait_s)
        if value != 1:
            raise InfraError(f"SELECT 1 returned {value!r}")
    finally:
        await conn.close()


def probe_postgres(dsn: str) -> str | None:
    """None when PostgreSQL at `dsn` answers SELECT 1, else the reason it does not."""
    try:
        run_async(lambda: check_postgres(dsn))
    except Exception as exc:  # every failure is a "down" with its reason
        return describe_error(exc)
    return None


def find_bindir() -> Path | None:
    """The bin directory of the newest PostgreSQL installed from Debian packages."""
    found: list[tuple[int, Path]] = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        if (candidate / "postgres").exists() and re.fullmatch(r"\d+", candidate.parent.name):
            found.append((int(candidate.parent.name), candidate))
    return max(found)[1] if found else None


class LocalPostgres:
    """A PostgreSQL cluster on 127.0.0.1:`port` with role and database `clearway`."""

    name = "postgres"

    def __init__(self, base_dir: Path, port: int) -> None:
        self.base_dir = base_dir
        self.link = base_dir / "postgres"
        self.port = port
        self.dsn = f"postgresql://{PG_USER}:{PG_PASSWORD}@{LOCAL_HOST}:{port}/{PG_DATABASE}"
        self.record_path = base_dir / "run" / "postgres.json"
        self.as_root = os.geteuid() == 0

    @property
    def address(self) -> str:
        """Where clients connect."""
        return self.dsn

    @property
    def root(self) -> Path:
        """The real directory holding data, socket and log (through the symlink if any)."""
        return self.link.resolve()

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        """The server log."""
        return self.root / "postgres.log"

    def probe(self) -> str | None:
        """None when healthy, else why not."""
        return probe_postgres(self.dsn)

    def _markers(self) -> tuple[str, ...]:
        return ("postgres", f"-D {self.data_dir}")

    def running_record(self) -> ProcessRecord | None:
        """Our live postmaster: from our record, else from the cluster's postmaster.pid."""
        record = ProcessRecord.live(self.record_path)
        if record is not None:
            return record
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        record = ProcessRecord(pid=pid, markers=self._markers())
        if record.is_ours_and_alive():
            record.save(self.record_path)
            return record
        return None

    def start(self) -> None:
        """Create the cluster once, start it unless ours runs, ensure role and database."""
        running = self.running_record()
        if running is not None:
            bindir = self._bindir()
            # It may still be starting (another `up` just launched it): wait, don't fail.
            wait_until(
                "postgres",
                lambda: self._accepting(bindir),
                running.is_ours_and_alive,
                START_TIMEOUT_S,
                self.log_file,
            )
            self._ensure_role_and_database(bindir)
            wait_until("postgres", self.probe, running.is_ours_and_alive, 15.0, self.log_file)
            log(f"postgres: already up at {LOCAL_HOST}:{self.port}")
            return
        if port_open(LOCAL_HOST, self.port):
            raise InfraError(
                f"postgres: port {self.port} is taken by a server we did not start; stop it, "
                f"or use it by setting CLEARWAY_PG_DSN"
            )
        bindir = self._bindir()
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bindir)
        self._write_config()
        log(f"postgres: starting {bindir / 'postgres'} on {LOCAL_HOST}:{self.port}")
        started = self._run(
            [
                str(bindir / "pg_ctl"),
                "start",
                "-w",
                "-t",
                str(int(START_TIMEOUT_S)),
                "-s",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
            ]
        )
        if started.returncode != 0:
            raise InfraError(
                f"pg_ctl start failed: {started.stderr.strip()}\nlast lines of {self.log_file}:"
                f"\n{tail(self.log_file)}"
            )
        record = self.running_record()
        if record is None:
            raise InfraError(f"postgres started but no live postmaster for {self.data_dir}")
        self._ensure_role_and_database(bindir)
        wait_until("postgres", self.probe, record.is_ours_and_alive, 15.0, self.log_file)
        log(f"postgres: up at {LOCAL_HOST}:{self.port} (pid {record.pid})")

    def stop(self) -> None:
        """Fast-shut-down our server (SIGINT), escalating; leave any other one alone."""
        self.running_record()  # adopts our postmaster from postmaster.pid if the record was lost
        stop_recorded(
            self.record_path,
            "postgres",
            [(signal.SIGINT, 30.0), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 5.0)],
        )

    # -- steps -----------------------------------------------------------------------

    def _bindir(self) -> Path:
        bindir = find_bindir()
        if bindir is None:
            apt_install(["postgresql"])
            bindir = find_bindir()
        if bindir is None:
            raise InfraError("no /usr/lib/postgresql/*/bin/postgres after installing postgresql")
        return bindir

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", OS_USER, "--"] if self.as_root else []
        return subprocess.run(prefix + argv, capture_output=True, text=True, check=False, cwd="/")

    def _ensure_os_user(self) -> pwd.struct_passwd:
        try:
            return pwd.getpwnam(OS_USER)
        except KeyError:
            log(f"postgres: creating system user {OS_USER!r}")
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    "/var/lib/postgresql",
                    "--shell",
                    "/usr/sbin/nologin",
                    OS_USER,
                ],
                check=True,
            )
            return pwd.getpwnam(OS_USER)

    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if not self.as_root:
            (self.link / "run").mkdir(parents=True, exist_ok=True)
            self.link.chmod(0o700)
            return
        user = self._ensure_os_user()
        if not self.link.exists() and not self._reachable_by_os_user(self.base_dir):
            shared = SHARED_DATA_ROOT / _path_hash(self.base_dir) / "postgres"
            log(
                f"postgres: user {OS_USER!r} cannot traverse {self.base_dir}; keeping data in "
                f"{shared} (symlinked from {self.link})"
            )
            shared.mkdir(parents=True, exist_ok=True)
            for parent in (SHARED_DATA_ROOT, shared.parent):
                parent.chmod(0o755)
            if self.link.is_symlink():
                self.link.unlink()
            self.link.symlink_to(shared, target_is_directory=True)
        root = self.root
        (root / "run").mkdir(parents=True, exist_ok=True)
        for path in (root, root / "run"):
            os.chown(path, user.pw_uid, user.pw_gid)
        root.chmod(0o700)

    def _reachable_by_os_user(self, directory: Path) -> bool:
        probe = self._run(["test", "-x", str(directory.resolve())])
        return probe.returncode == 0

    def _initdb(self, bindir: Path) -> None:
        log(f"postgres: initdb {self.data_dir}")
        done = self._run(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                OS_USER,
                "-E",
                "UTF8",
                "--no-locale",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
            ]
        )
        if done.returncode != 0:
            raise InfraError(f"initdb failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as out:
            out.write("\n# Local settings written by `clearway infra up`.\n")
            out.write("include_if_exists = 'clearway.conf'\n")

    def _socket_dir(self) -> Path:
        preferred = self.root / "run"
        if len(f"{preferred}/.s.PGSQL.{self.port}") <= MAX_SOCKET_PATH:
            return preferred
        return Path("/tmp") / f"clearway-pg-{_path_hash(self.base_dir)}"  # noqa: S108

    def _write_config(self) -> None:
        sockets = self._socket_dir()
        sockets.mkdir(parents=True, exist_ok=True)
        lines = [
            "# Rewritten by `clearway infra up` on every start.",
            f"listen_addresses = '{LOCAL_HOST}'",
            f"port = {self.port}",
            f"unix_socket_directories = '{sockets}'",
            "max_connections = 200",
            "shared_buffers = 256MB",
            # Bulk catch-up writes a lot of WAL: fewer, later checkpoints (durability is
            # unchanged: every commit is still flushed).
            "max_wal_size = 4GB",
            "checkpoint_timeout = 15min",
            "logging_collector = off",
            "log_min_messages = warning",
            "log_connections = off",
            "timezone = 'UTC'",
        ]
        conf = self.data_dir / "clearway.conf"
        conf.write_text("\n".join(lines) + "\n")
        if self.as_root:
            user = self._ensure_os_user()
            for path in (conf, sockets):
                os.chown(path, user.pw_uid, user.pw_gid)

    def _psql(self, bindir: Path, sql: str) -> str:
        done = self._run(
            [
                str(bindir / "psql"),
                "-h",
                str(self._socket_dir()),
                "-p",
                str(self.port),
                "-U",
                OS_USER,
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-X",
                "-tA",
                "-c",
                sql,
            ]
        )
        if done.returncode != 0:
            raise InfraError(f"psql failed ({sql[:60]}...): {done.stderr.strip()}")
        return done.stdout.strip()

    def _accepting(self, bindir: Path) -> str | None:
        try:
            self._psql(bindir, "SELECT 1")
        except InfraError as exc:
            return str(exc)
        return None

    def _ensure_role_and_database(self, bindir: Path) -> None:
        self._psql(
            bindir,
            f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PG_USER}') "
            f"THEN CREATE ROLE {PG_USER} LOGIN CREATEDB PASSWORD '{PG_PASSWORD}'; END IF; END$$;",
        )
        query = f"SELECT 1 FROM pg_database WHERE datname = '{PG_DATABASE}'"  # noqa: S608 - constants
        exists = self._psql(bindir, query)
        if exists != "1":
            log(f"postgres: creating role and database {PG_DATABASE!r}")
            self._psql(bindir, f"CREATE DATABASE {PG_DATABASE} OWNER {PG_USER}")


def _path_hash(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
