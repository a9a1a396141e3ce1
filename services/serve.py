"""`clearway serve <name> [--workers N]`: run one service as its own process, or as N
worker processes behind the same ports.

With N > 1 (or `CLEARWAY_WORKERS`), this process only supervises: it starts N copies of the
service, each binding the same gRPC, health and admin ports (SO_REUSEPORT: the kernel
spreads connections between them) with `CLEARWAY_WORKER_INDEX` set, forwards SIGTERM and
SIGINT to them, and exits when they have stopped. If one worker exits on its own, the others
are stopped too and the supervisor exits non-zero, so an orchestrator restarts the whole
set rather than leave a degraded one serving. A Python process uses one core; workers let
a service such as ingest use them all.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import subprocess
import sys
import time

from clearway.runtime import run
from clearway.settings import env_int

SERVICES = ("ingest", "fares", "settlement", "accounts", "portal")


def main(argv: list[str]) -> int:
    """Build the named service from environment settings and run it until SIGTERM."""
    parser = argparse.ArgumentParser(prog="clearway serve")
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes behind the same ports (default CLEARWAY_WORKERS, or 1)",
    )
    args = parser.parse_args(argv)
    workers = args.workers if args.workers is not None else env_int("CLEARWAY_WORKERS", 1)
    if workers > 1 and "CLEARWAY_WORKER_INDEX" not in os.environ:
        return supervise(args.service, workers)
    app = importlib.import_module(f"services.{args.service}.app")
    if args.service == "portal":  # HTTP, not gRPC: its own runner (services/portal/app.py)
        return int(app.run_from_env())
    return run(app.build_from_env())


def supervise(service: str, workers: int) -> int:
    """Run `workers` copies of `service` and stop them together."""
    children = []
    for index in range(workers):
        env = {**os.environ, "CLEARWAY_WORKER_INDEX": str(index), "CLEARWAY_WORKERS": "1"}
        children.append(
            subprocess.Popen([sys.executable, "-m", "services.cli", "serve", service], env=env)
        )
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while all(child.poll() is None for child in children):
        time.sleep(0.2)
    if not stopping:  # a worker died on its own: stop the rest
        forward(signal.SIGTERM, None)
    codes = [child.wait() for child in children]
    return 0 if stopping and all(code == 0 for code in codes) else max(1, *codes)
