"""The `clearway` console script: one door to every tool and service.

Subcommands import their module lazily so `clearway infra status` does not pay for
the fare engine, and a missing optional piece fails with a clear message.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

# subcommand -> (module, function taking argv, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "infra": ("clearway.infra.cli", "main", "local Kafka/PostgreSQL/Redis: up | down | status"),
    "serve": (
        "services.serve",
        "main",
        "run one service: serve ingest|fares|settlement|accounts|portal",
    ),
    "fares": ("services.fares.entrypoints.cli", "main", "fare engine tools: fares simulate ..."),
    "simulate": ("services.ingest.simulator.cli", "main", "drive validator streams"),
    "journeys": ("services.accounts.entrypoints.cli", "main", "a card's journey history"),
    "benefits": (
        "services.accounts.entrypoints.benefits_cli",
        "main",
        "council officers and providers' devices: benefits officers add | devices register ...",
    ),
    "demo": ("services.demo", "main", "run a simulated network day end to end"),
    "faults": ("services.faults.cli", "main", "a network day under kill -9 and server restarts"),
    "soak": (
        "services.soak.run",
        "main",
        "steady traffic for a bounded time, judged: soak --minutes M --rate R --seed S",
    ),
    "health": ("services.healthcheck", "main", "gRPC health check: health HOST:PORT [SERVICE]"),
    "pki": ("services.pki_cli", "main", "scheme CA and certificates: pki init | issue | show"),
    "devices": (
        "services.ingest.entrypoints.devices_cli",
        "main",
        "validators: devices keygen | register | add-key | retire-key | revoke | show | list",
    ),
    "reports": (
        "services.reports.entrypoints.cli",
        "main",
        "council usage reports: reports usage --period P --out DIR | archive --into DIR | councils",
    ),
    "verify-settlement": (
        "services.settlement.entrypoints.verify_cli",
        "main",
        "check a party's signed settlement file set: verify-settlement DIR --scheme --public-key",
    ),
}


def _usage() -> str:
    lines = ["usage: clearway <command> [args]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch `clearway <command> ...` to the command's module."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"clearway: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name, _ = COMMANDS[name]
    func: Callable[[list[str]], int] = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
