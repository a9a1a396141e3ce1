"""Plumbing shared by the local servers: installs, pid records, waiting, stopping."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
PROBE_THREAD_NAME = "clearway-infra-probe"

_apt_updated = False
_apt_lock = threading.Lock()


class InfraError(RuntimeError):
    """A local server could not be installed, started, checked or stopped."""


def log(message: str) -> None:
    """One progress line for a person watching `clearway infra`.

    One write per line: the three servers start and stop in parallel threads, and
    print() writes the text and the newline separately, so lines used to interleave.
    """
    try:
        sys.stdout.write(f"infra: {message}\n")
        sys.stdout.flush()
    except OSError:
        pass  # progress output is best effort: a closed pipe must not stop a shutdown


def apt_install(packages: Sequence[str]) -> None:
    """Install Debian packages (running `apt-get update` once per process first)."""
    global _apt_updated  # noqa: PLW0603 - one update per process is the point
    if os.geteuid() != 0:
        raise InfraError(f"need root to install {' '.join(packages)}: run `apt-get install`")
    if shutil.which("apt-get") is None:
        raise InfraError(f"no apt-get here; install {' '.join(packages)} by hand")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with _apt_lock:
        if not _apt_updated:
            log("apt-get update")
            _run_quiet(["apt-get", "update"], env)
            _apt_updated = True
        log(f"apt-get install -y {' '.join(packages)}")
        _run_quiet(["apt-get", "install", "-y", "--no-install-recommends", *packages], env)


def _run_quiet(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise InfraError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def which_or_install(command: str, package: str) -> str:
    """Path of `command`, installing its Debian `package` when it is missing."""
    found = shutil.which(command)
    if found is None:
        apt_install([package])
        found = shutil.which(command)
    if found is None:
        raise InfraError(f"{command} still missing after installing {package}")
    return found


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a private loop in a worker thread.

    The worker thread keeps this safe to call from code that already has an event
    loop (pytest-asyncio fixtures), which `asyncio.run` is not.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def work() -> None:
        try:
            result.append(asyncio.run(factory()))
        except BaseException as exc:  # handed to the caller's thread below
            error.append(exc)

    thread = threading.Thread(target=work, name=PROBE_THREAD_NAME, daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def cmdline(pid: int) -> str | None:
    """The command line of a live (non-zombie) process, arguments joined by spaces."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # The state letter follows the parenthesised command name.
    if stat[stat.rfind(")") + 2 :].startswith("Z"):
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """A process we started: its pid and strings its command line must contain."""

    pid: int
    markers: tuple[str, ...]

    def is_ours_and_alive(self) -> bool:
        """Whether the pid is alive and still the process we started (not a reused pid)."""
        line = cmdline(self.pid)
        return line is not None and all(m in line for m in self.markers)

    def save(self, path: Path) -> None:
        """Write the record as JSON."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": self.pid, "markers": list(self.markers)}))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ProcessRecord | None:
        """The record at `path`, or None when there is none (or it is unreadable)."""
        try:
            data = json.loads(path.read_text())
            return cls(pid=int(data["pid"]), markers=tuple(str(m) for m in data["markers"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @classmethod
    def live(cls, path: Path) -> ProcessRecord | None:
        """The record at `path` if its process is alive and still ours, else None."""
        record = cls.load(path)
        return record if record is not None and record.is_ours_and_alive() else None


def stop_process(
    record: ProcessRecord, name: str, steps: Sequence[tuple[signal.Signals, float]]
) -> None:
    """Signal our process with each (signal, seconds to wait) in turn until it is gone."""
    if not record.is_ours_and_alive():
        line = cmdline(record.pid)
        if line is not None:
            log(f"{name}: pid {record.pid} is no longer ours ({line[:80]!r}); leaving it alone")
        return
    for sig, wait in steps:
        log(f"{name}: sending {sig.name} to pid {record.pid}")
        try:
            os.kill(record.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not record.is_ours_and_alive():
                return
            time.sleep(0.1)
    if record.is_ours_and_alive():
        raise InfraError(f"{name}: pid {record.pid} survived {', '.join(s.name for s, _ in steps)}")


def stop_recorded(
    record_path: Path, name: str, steps: Sequence[tuple[signal.Signals, float]]
) -> None:
    """Stop the process recorded at `record_path` if it is still ours; forget the record.

    A process we did not start (no record, or a reused pid) is never signalled.
    """
    record = ProcessRecord.load(record_path)
    if record is None:
        log(f"{name}: not started by us; nothing to stop")
    elif not record.is_ours_and_alive():
        log(f"{name}: already stopped")
    else:
        stop_process(record, name, steps)
        log(f"{name}: stopped (data kept)")
    record_path.unlink(missing_ok=True)


def wait_until(
    name: str,
    healthy: Callable[[], str | None],
    alive: Callable[[], bool],
    timeout: float,
    log_file: Path,
) -> None:
    """Poll `healthy` (None means healthy, else a reason) until it passes or time runs out."""
    deadline = time.monotonic() + timeout
    reason: str | None = "not checked yet"
    while time.monotonic() < deadline:
        reason = healthy()
        if reason is None:
            return
        if not alive():
            raise InfraError(
                f"{name} exited during start-up; last lines of {log_file}:\n{tail(log_file)}"
            )
        time.sleep(0.5)
    raise InfraError(
        f"{name} not healthy after {timeout:.0f}s ({reason}); last lines of {log_file}:\n"
        f"{tail(log_file)}"
    )


def describe_error(exc: BaseException) -> str:
    """A one-line reason for a failed probe."""
    lines = str(exc).strip().splitlines()
    kind = type(exc).__name__
    if not lines:
        return kind
    return lines[0] if lines[0].startswith(kind) else f"{kind}: {lines[0]}"


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports of 127.0.0.1 that nobody listens on right now (all bound
    at once, then released): for servers that cannot be told to pick their own."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()
