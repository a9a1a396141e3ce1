"""`clearway reports usage --period YYYY-MM-DD|YYYY-MM (--out DIR | --packs DIR)
[--council funder:X] [--scheme FILE] [--feed DIR] [--topic-prefix P] [--bootstrap HOST:PORT]`
and `clearway reports councils --period P [--scheme FILE]`.

Reads the journeys and benefits topics from the beginning and writes the usage evidence
of a council's area (or the whole network) for a service day or a month (docs/reports.md):
a CSV, an SVG and a PNG chart per report, report.md and index.html; into `--out`, or as
the evidence pack `<packs>/<council>/<period>/` the portal shows the council's officers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from clearway.errors import ClearwayError
from clearway.infra.endpoints import Endpoints
from clearway.kafka import Topics
from clearway.money import CurrencyMismatchError
from clearway.scheme.file import load_scheme
from clearway.scheme.model import Scheme
from clearway.settings import REPO_ROOT
from services.reports.adapters.benefits import read_postings
from services.reports.adapters.feed import DEFAULT_TIMEZONE, NetworkPlaces, network_places
from services.reports.adapters.files import write_pack, write_reports
from services.reports.adapters.journeys import read_journeys
from services.reports.adapters.topics import TopicNotFoundError
from services.reports.domain.reports import ReportScope, UsageReports, build_reports
from services.reports.domain.scope import (
    BadPeriodError,
    Council,
    Period,
    council_of,
    councils_in,
)

SCHEME_FILE_VAR = "CLEARWAY_SCHEME_FILE"
DEFAULT_SCHEME = REPO_ROOT / "examples" / "schemes" / "london.toml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clearway reports", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    usage = sub.add_parser("usage", help="usage evidence of a service day or a month")
    usage.add_argument(
        "--period", required=True, help="a service day YYYY-MM-DD or a month YYYY-MM"
    )
    where = usage.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="directory to write into")
    where.add_argument(
        "--packs",
        type=Path,
        help="evidence packs' directory: writes DIR/<council>/<period>/ (funder_camden, or "
        "network without --council), replacing that period's pack as a whole",
    )
    usage.add_argument(
        "--council",
        default=None,
        help="a funder party (funder:camden): its area's journeys and its benefits "
        "(default: the whole network); needs --feed",
    )
    usage.add_argument(
        "--scheme",
        type=Path,
        default=Path(os.environ.get(SCHEME_FILE_VAR, DEFAULT_SCHEME)),
        help=f"scheme file (default: ${SCHEME_FILE_VAR}, else examples/schemes/london.toml)",
    )
    usage.add_argument(
        "--topic-prefix",
        default=os.environ.get("CLEARWAY_TOPIC_PREFIX", ""),
        help="prefix of the topic names (default: $CLEARWAY_TOPIC_PREFIX)",
    )
    usage.add_argument(
        "--feed",
        type=Path,
        default=None,
        help="GTFS feed: stops' fare areas and the timezone "
        f"(default: by stop, {DEFAULT_TIMEZONE})",
    )
    usage.add_argument("--bootstrap", default=None, help="Kafka bootstrap (default: from env)")
    councils = sub.add_parser(
        "councils",
        help="the councils (funder parties) in force in a period, one a line: what "
        "`usage --council` accepts for it",
    )
    councils.add_argument(
        "--period", required=True, help="a service day YYYY-MM-DD or a month YYYY-MM"
    )
    councils.add_argument(
        "--scheme",
        type=Path,
        default=Path(os.environ.get(SCHEME_FILE_VAR, DEFAULT_SCHEME)),
        help=f"scheme file (default: ${SCHEME_FILE_VAR}, else examples/schemes/london.toml)",
    )
    return parser


async def read_usage(
    bootstrap: str,
    topic_prefix: str,
    period: Period,
    *,
    scheme: Scheme,
    places: NetworkPlaces,
    council: Council | None = None,
) -> UsageReports:
    """Read the journeys and benefits topics and build the reports of `period` (of
    `council`'s area, or the whole network)."""
    topics = Topics(topic_prefix)
    funder_id = council.funder_id if council is not None else None
    journeys, postings = await asyncio.gather(
        read_journeys(bootstrap, topics.journeys, period),
        read_postings(bootstrap, topics.benefits, period, funder_id),
    )
    scope = ReportScope(
        period=period,
        timezone=places.timezone,
        currency=scheme.currency,
        council=council,
        stop_areas=places.stop_areas,
        entitlement_schemes=scheme.entitlement_schemes,
    )
    return build_reports(journeys, postings, scope)


async def usage_reports(
    bootstrap: str,
    topic_prefix: str,
    period: Period,
    out: Path,
    *,
    scheme: Scheme,
    places: NetworkPlaces,
    council: Council | None = None,
) -> list[Path]:
    """Read the journeys and benefits topics and write the reports of `period` (of
    `council`'s area, or the whole network) into `out`."""
    reports = await read_usage(
        bootstrap, topic_prefix, period, scheme=scheme, places=places, council=council
    )
    return write_reports(reports, out)


def _fail(message: str, status: int) -> int:
    print(f"clearway reports: {message}", file=sys.stderr)
    return status


def _councils(scheme_file: Path, period_text: str) -> int:
    """`clearway reports councils`: the councils in force in the period, one a line."""
    try:
        period = Period.parse(period_text)
    except BadPeriodError as exc:
        return _fail(f"--period: {exc}", 2)
    try:
        scheme = load_scheme(scheme_file)
    except ClearwayError as exc:
        return _fail(str(exc), 2)
    for funder_id in councils_in(scheme, period):
        print(funder_id)
    return 0


def main(argv: list[str]) -> int:
    """Entry point of `clearway reports`."""
    args = _parser().parse_args(argv)
    if args.command == "councils":
        return _councils(args.scheme, args.period)
    return _usage(args)


def _usage(args: argparse.Namespace) -> int:
    """`clearway reports usage`."""
    try:
        period = Period.parse(args.period)
    except BadPeriodError as exc:
        return _fail(f"--period: {exc}", 2)
    if args.council is not None and args.feed is None:
        return _fail("--council needs --feed: a council's area is found from its stops", 2)
    try:
        scheme = load_scheme(args.scheme)
        places = network_places(args.feed)
        council = council_of(scheme, args.council, period) if args.council else None
    except ClearwayError as exc:  # a refused scheme file or feed, an unknown council
        return _fail(str(exc), 2)
    if council is not None:
        if not council.area_ids:
            print(
                f"clearway reports: warning: {council.funder_id} declares no areas in "
                f"{args.scheme}: no journey is in its area",
                file=sys.stderr,
            )
        unknown = sorted(council.area_ids - places.area_ids)
        if unknown:
            print(
                f"clearway reports: warning: areas {', '.join(unknown)} of "
                f"{council.funder_id} are not in the feed {args.feed}",
                file=sys.stderr,
            )
    bootstrap = args.bootstrap or Endpoints.from_env().kafka_bootstrap
    try:
        reports = asyncio.run(
            read_usage(
                bootstrap, args.topic_prefix, period, scheme=scheme, places=places, council=council
            )
        )
    except TopicNotFoundError as exc:
        return _fail(f"no topic {exc} on {bootstrap}", 1)
    except CurrencyMismatchError as exc:
        return _fail(f"a posting is not in the scheme's currency {scheme.currency}: {exc}", 1)
    # Written only once both topics are read: a refused run leaves no files.
    paths = write_pack(reports, args.packs) if args.packs else write_reports(reports, args.out)
    for path in paths:
        print(path)
    return 0
