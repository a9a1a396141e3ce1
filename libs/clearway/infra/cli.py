"""`clearway infra up | down | status | env | clean`: the local Kafka, PostgreSQL and Redis."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from clearway.infra.endpoints import LocalPorts
from clearway.infra.manager import COMPONENTS, INFRA_DIR_VAR, LocalInfra
from clearway.infra.process import InfraError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clearway infra",
        description=(
            "Run Kafka, PostgreSQL and Redis locally without Docker. A component whose "
            "CLEARWAY_KAFKA_BOOTSTRAP / CLEARWAY_PG_DSN / CLEARWAY_REDIS_URL is set is "
            "external: checked, never started or stopped."
        ),
    )
    parser.add_argument(
        "action",
        choices=["up", "down", "status", "env", "clean"],
        help="up: start and verify (idempotent); down: stop what up started, keep data; "
        "status: connect to each and report (exit 1 if any is down); env: print the "
        "CLEARWAY_* variables for these servers; clean: down, then delete all local data",
    )
    parser.add_argument(
        "--dir", type=Path, help=f"instance directory (${INFRA_DIR_VAR}, default <repo>/.infra)"
    )
    parser.add_argument(
        "--only",
        default=",".join(COMPONENTS),
        help="comma-separated subset of kafka,postgres,redis (default: all)",
    )
    parser.add_argument("--kafka-port", type=int)
    parser.add_argument("--kafka-controller-port", type=int)
    parser.add_argument("--pg-port", type=int)
    parser.add_argument("--redis-port", type=int)
    return parser


def _ports(args: argparse.Namespace) -> LocalPorts:
    ports = LocalPorts.from_env()
    overrides = {
        "kafka": args.kafka_port,
        "kafka_controller": args.kafka_controller_port,
        "postgres": args.pg_port,
        "redis": args.redis_port,
    }
    return replace(ports, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: list[str]) -> int:
    """Entry point of `clearway infra`; returns the process exit code."""
    args = _parser().parse_args(argv)
    components = [c.strip() for c in args.only.split(",") if c.strip()]
    try:
        infra = LocalInfra(base_dir=args.dir, ports=_ports(args), components=components)
        if args.action == "up":
            began = time.monotonic()
            infra.up()
            print(f"infra: up in {time.monotonic() - began:.1f}s", flush=True)
            return _print_status(infra)
        if args.action == "down":
            infra.down()
            return 0
        if args.action == "clean":
            infra.clean()
            return 0
        if args.action == "env":
            for key, value in infra.endpoints.as_env().items():
                print(f"export {key}={value}")
            return 0
        return _print_status(infra)
    except InfraError as exc:
        print(f"infra: error: {exc}", flush=True)
        return 1


def _print_status(infra: LocalInfra) -> int:
    statuses = infra.status()
    for status in statuses:
        print(status.render(), flush=True)
    return 0 if all(s.up for s in statuses) else 1
