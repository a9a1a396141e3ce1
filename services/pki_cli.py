"""`clearway pki ...`: the scheme CA and its certificates for local runs and the demo.

    clearway pki init  [--dir D] [--server-name NAME ...] [--force]
    clearway pki issue party|role|device ID [--dir D] [--days N] [--force]
    clearway pki show  [--dir D]

`init` is idempotent: an existing CA is kept (replaced only with `--force`, which also
re-issues every client certificate for the same identities; the signing key is always
kept). `issue` keeps a client certificate that is still good unless `--force`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from clearway.auth import IDENTITY_KINDS, Principal
from clearway.pki import (
    LEAF_DAYS,
    Outcome,
    PkiError,
    default_pki_dir,
    describe_pki,
    init_pki,
    issue_identity,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clearway pki", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    directory = argparse.ArgumentParser(add_help=False)
    directory.add_argument(
        "--dir", type=Path, default=None, help=f"PKI directory (default {default_pki_dir()})"
    )
    init = commands.add_parser("init", parents=[directory], help="create the CA, server cert, keys")
    init.add_argument(
        "--server-name",
        action="append",
        default=[],
        metavar="NAME",
        help="another DNS name or IP address for the server certificate (repeatable)",
    )
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    issue = commands.add_parser("issue", parents=[directory], help="issue a client certificate")
    issue.add_argument("kind", choices=IDENTITY_KINDS)
    issue.add_argument("id", help="e.g. operator:LUL, operations, gate-KGX")
    issue.add_argument("--days", type=int, default=LEAF_DAYS, help="validity in days")
    issue.add_argument("--force", action="store_true", help="re-issue a certificate still good")
    commands.add_parser("show", parents=[directory], help="what the PKI directory holds")
    return parser


def _print(outcomes: Sequence[Outcome]) -> None:
    for outcome in outcomes:
        print(f"{outcome.action:<9} {outcome.path}")


def main(argv: Sequence[str]) -> int:
    """Run one `clearway pki` command; 0 on success, 1 when the PKI refuses, 2 on misuse."""
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        if args.command == "init":
            _print(init_pki(args.dir, server_names=args.server_name, force=args.force))
        elif args.command == "issue":
            try:
                principal = Principal(args.kind, args.id)
            except ValueError as exc:
                print(f"clearway pki: {exc}", file=sys.stderr)
                return 2
            _print([issue_identity(principal, args.dir, days=args.days, force=args.force)])
            print(f"identity  {principal.uri}")
        else:
            print("\n".join(describe_pki(args.dir)))
    except PkiError as exc:
        print(f"clearway pki: {exc}", file=sys.stderr)
        return 1
    return 0
