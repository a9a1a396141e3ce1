"""`clearway serve <name>`: run one service as its own process."""

from __future__ import annotations

import importlib
import sys

from clearway.runtime import run

SERVICES = ("ingest", "fares", "settlement", "accounts")


def main(argv: list[str]) -> int:
    """Build the named service from environment settings and run it until SIGTERM."""
    if len(argv) != 1 or argv[0] not in SERVICES:
        print(f"usage: clearway serve {{{'|'.join(SERVICES)}}}", file=sys.stderr)
        return 2
    app = importlib.import_module(f"services.{argv[0]}.app")
    return run(app.build_from_env())
