"""A local Redis from Debian's redis-server, with its own config and data under .infra."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from clearway.infra.endpoints import LOCAL_HOST
from clearway.infra.process import (
    InfraError,
    ProcessRecord,
    describe_error,
    log,
    port_open,
    run_async,
    stop_recorded,
    wait_until,
    which_or_install,
)

START_TIMEOUT_S = 20.0


async def check_redis(url: str, wait_s: float = 3.0) -> None:
    """PING the server at `url`; raises when it does not answer PONG."""
    from redis.asyncio import Redis  # noqa: PLC0415 - keep `clearway infra --help` light

    client = Redis.from_url(url, socket_connect_timeout=wait_s, socket_timeout=wait_s)
    try:
        if not await client.ping():
            raise InfraError(f"redis at {url} did not answer PING")
    finally:
        await client.aclose()


def probe_redis(url: str) -> str | None:
    """None when Redis at `url` answers PING, else the reason it does not."""
    try:
        run_async(lambda: check_redis(url))
    except Exception as exc:  # every failure is a "down" with its reason
        return describe_error(exc)
    return None


class LocalRedis:
    """redis-server on 127.0.0.1:`port`, data and logs in `base_dir`/redis."""

    name = "redis"

    def __init__(self, base_dir: Path, port: int) -> None:
        self.root = base_dir / "redis"
        self.port = port
        self.url = f"redis://{LOCAL_HOST}:{port}/0"
        self.record_path = base_dir / "run" / "redis.json"
        self.log_file = self.root / "redis.log"

    @property
    def address(self) -> str:
        """Where clients connect."""
        return self.url

    def probe(self) -> str | None:
        """None when healthy, else why not."""
        return probe_redis(self.url)

    def _markers(self) -> tuple[str, ...]:
        # redis-server rewrites its process title to "redis-server 127.0.0.1:<port>".
        return ("redis-server", f"{LOCAL_HOST}:{self.port}")

    def running_record(self) -> ProcessRecord | None:
        """Our live process, if there is one."""
        return ProcessRecord.live(self.record_path)

    def start(self) -> None:
        """Start redis-server unless ours already runs; wait until it answers PING."""
        running = self.running_record()
        if running is not None:
            # It may still be starting (another `up` just launched it): wait, don't fail.
            wait_until(
                "redis", self.probe, running.is_ours_and_alive, START_TIMEOUT_S, self.log_file
            )
            log(f"redis: already up at {self.url}")
            return
        if port_open(LOCAL_HOST, self.port):
            raise InfraError(
                f"redis: port {self.port} is taken by a server we did not start; stop it, or "
                f"use it by setting CLEARWAY_REDIS_URL"
            )
        server = which_or_install("redis-server", "redis-server")
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self._write_config()
        log(f"redis: starting {server} on {LOCAL_HOST}:{self.port}")
        done = subprocess.run([server, str(conf)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise InfraError(f"redis-server failed to start: {done.stderr or done.stdout}")
        pid = self._read_pidfile()
        record = ProcessRecord(pid=pid, markers=self._markers())
        record.save(self.record_path)
        wait_until("redis", self.probe, record.is_ours_and_alive, START_TIMEOUT_S, self.log_file)
        log(f"redis: up at {self.url} (pid {pid})")

    def _read_pidfile(self) -> int:
        pidfile = self.root / "redis.pid"
        for _ in range(100):
            try:
                return int(pidfile.read_text().strip())
            except (OSError, ValueError):
                time.sleep(0.05)
        raise InfraError(f"redis-server wrote no pidfile {pidfile}; see {self.log_file}")

    def _write_config(self) -> Path:
        conf = self.root / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    "# Written by `clearway infra up`; rewritten on every start.",
                    f"bind {LOCAL_HOST}",
                    "protected-mode yes",
                    f"port {self.port}",
                    f"dir {self.root.resolve()}",
                    "daemonize yes",
                    f"pidfile {(self.root / 'redis.pid').resolve()}",
                    f"logfile {self.log_file.resolve()}",
                    "loglevel notice",
                    "appendonly yes",
                    "appendfsync everysec",
                    "save 3600 1 300 100 60 10000",
                    "databases 16",
                    "",
                ]
            )
        )
        return conf

    def stop(self) -> None:
        """Stop our redis-server (it saves on SIGTERM); leave any other one alone."""
        stop_recorded(self.record_path, "redis", [(signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)])
