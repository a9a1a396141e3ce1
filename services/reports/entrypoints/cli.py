"""`clearway reports usage --period YYYY-MM-DD|YYYY-MM (--out DIR | --packs DIR)
[--council funder:X] [--scheme FILE] [--feed DIR]
([--topic-prefix P] [--bootstrap HOST:PORT] | --archive DIR)`,
`clearway reports archive --into DIR [--topic-prefix P] [--bootstrap HOST:PORT]` and
`clearway reports councils --period P [--scheme FILE]`.

`usage` reads the journeys and benefits topics from the beginning (or, with `--archive`,
the day archive's files of the period) and writes the usage evidence of a council's area
(or the whole network) for a service day or a month (docs/reports.md): a CSV, an SVG and a
PNG chart per report, report.md and index.html; into `--out`, or as the evidence pack
`<packs>/<council>/<period>/` the portal shows the council's officers. `archive` reads both
topics once and merges every service day they hold into the day archive.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from clearway.errors import ClearwayError
from clearway.infra.endpoints import Endpoints
from clearway.kafka import Topics
from clearway.money import CurrencyMismatchError
from clearway.scheme.file import load_scheme
from clearway.scheme.model import Scheme
from clearway.settings import REPO_ROOT
from services.reports.adapters.archive import (
    ArchiveError,
    ArchiveRun,
    prune_archive,
    read_archive,
    write_archive,
)
from services.reports.adapters.benefits import read_postings
from services.reports.adapters.feed import DEFAULT_TIMEZONE, NetworkPlaces, network_places
from services.reports.adapters.files import write_pack, write_reports
from services.reports.adapters.journeys import read_journeys
from services.reports.adapters.topics import TopicNotFoundError
from services.reports.domain.archive import day_ranges
from services.reports.domain.benefits import Posting
from services.reports.domain.reports import ReportScope, Source, UsageReports, build_reports
from services.reports.domain.scope import (
    BadPeriodError,
    Council,
    Period,
    council_of,
    councils_in,
)
from services.reports.domain.usage import Journey

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
    _topic_arguments(usage)
    usage.add_argument(
        "--archive",
        type=Path,
        default=None,
        help="read the period's days from this day archive (written by `clearway reports "
        "archive`) instead of the topics; not with --topic-prefix or --bootstrap",
    )
    usage.add_argument(
        "--feed",
        type=Path,
        default=None,
        help="GTFS feed: stops' fare areas and the timezone "
        f"(default: by stop, {DEFAULT_TIMEZONE})",
    )
    archive = sub.add_parser(
        "archive",
        help="read the journeys and benefits topics once and merge every service day they "
        "hold into the day archive DIR/<YYYY-MM-DD>/",
    )
    archive.add_argument(
        "--into", type=Path, required=True, help="the day archive's directory (created)"
    )
    archive.add_argument(
        "--keep-days",
        type=_positive_days,
        default=None,
        help="then remove the archive's days older than N days before today (UTC); "
        "default: keep every day",
    )
    _topic_arguments(archive)
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


class _Given(argparse.Action):
    """Store the value, and note that the option was given (not left to its default)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        namespace.topics_given = True


def _topic_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(topics_given=False)
    parser.add_argument(
        "--topic-prefix",
        action=_Given,
        default=os.environ.get("CLEARWAY_TOPIC_PREFIX", ""),
        help="prefix of the topic names (default: $CLEARWAY_TOPIC_PREFIX)",
    )
    parser.add_argument(
        "--bootstrap", action=_Given, default=None, help="Kafka bootstrap (default: from env)"
    )


async def read_usage(
    bootstrap: str, topic_prefix: str, period: Period | None, funder_id: str | None = None
) -> tuple[list[Journey], list[Posting]]:
    """The journeys (the latest revision of each, withdrawn ones too) and the benefit
    postings paid by `funder_id` (or anyone; each once) of `period` (None: of every day)
    on the journeys and benefits topics, each read whole once."""
    topics = Topics(topic_prefix)
    journeys, postings = await asyncio.gather(
        read_journeys(bootstrap, topics.journeys, period),
        read_postings(bootstrap, topics.benefits, period, funder_id),
    )
    return journeys, postings


def report_scope(
    period: Period,
    *,
    scheme: Scheme,
    places: NetworkPlaces,
    council: Council | None = None,
    source: Source = Source.TOPICS,
    days_without_data: tuple[date, ...] = (),
) -> ReportScope:
    """What the reports of `period` cover, and what they know of the network and scheme."""
    return ReportScope(
        period=period,
        timezone=places.timezone,
        currency=scheme.currency,
        council=council,
        stop_areas=places.stop_areas,
        entitlement_schemes=scheme.entitlement_schemes,
        source=source,
        days_without_data=days_without_data,
    )


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
    funder_id = council.funder_id if council is not None else None
    journeys, postings = await read_usage(bootstrap, topic_prefix, period, funder_id)
    scope = report_scope(period, scheme=scheme, places=places, council=council)
    return write_reports(build_reports(journeys, postings, scope), out)


def archive_topics(bootstrap: str, topic_prefix: str, into: Path) -> ArchiveRun:
    """Read the journeys and benefits topics once and merge every service day they hold
    into the day archive `into`."""
    journeys, postings = asyncio.run(read_usage(bootstrap, topic_prefix, None))
    return write_archive(into, journeys, postings)


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
    if args.command == "archive":
        return _archive(args)
    return _usage(args)


def _positive_days(text: str) -> int:
    days = int(text) if text.isdigit() else 0
    if days < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days of 1 or more")
    return days


def _today() -> date:
    """Today's date in UTC (the clock `--keep-days` counts back from)."""
    return datetime.now(UTC).date()


def _archive(args: argparse.Namespace) -> int:
    """`clearway reports archive`."""
    bootstrap = args.bootstrap or Endpoints.from_env().kafka_bootstrap
    try:
        run = archive_topics(bootstrap, args.topic_prefix, args.into)
        removed = (
            prune_archive(args.into, _today() - timedelta(days=args.keep_days))
            if args.keep_days is not None
            else ()
        )
    except TopicNotFoundError as exc:
        return _fail(f"no topic {exc} on {bootstrap}: nothing archived", 1)
    except (ArchiveError, OSError) as exc:  # a damaged day file is left as it was
        return _fail(f"archive {args.into}: {exc}", 1)
    for path in run.written:
        if path.exists():  # not a day --keep-days removed again
            print(path)
    if run.skipped:
        print(
            f"clearway reports: warning: {run.skipped} records without a valid service day "
            "not archived",
            file=sys.stderr,
        )
    if removed:
        print(
            f"clearway reports: archive {args.into}: removed service days "
            f"{day_ranges(removed)} (older than {args.keep_days} days)",
            file=sys.stderr,
        )
    days = f"service days {day_ranges(run.days)}" if run.days else "no service day"
    print(
        f"clearway reports: archive {args.into}: {days} on the topics; "
        f"{len(run.written)} day files written, {run.unchanged} unchanged",
        file=sys.stderr,
    )
    return 0


class _BadArgumentError(Exception):
    """An argument `usage` refuses (exit status 2)."""


def _usage(args: argparse.Namespace) -> int:
    """`clearway reports usage`."""
    try:
        scope = _usage_scope(args)
    except _BadArgumentError as exc:
        return _fail(str(exc), 2)
    try:
        if args.archive is not None:
            reports = _reports_from_archive(args.archive, scope)
        else:
            reports = _reports_from_topics(args, scope)
    except TopicNotFoundError as exc:
        return _fail(f"no topic {exc}", 1)
    except (ArchiveError, OSError) as exc:
        return _fail(f"archive {args.archive}: {exc}", 1)
    except CurrencyMismatchError as exc:
        return _fail(f"a posting is not in the scheme's currency {scope.currency}: {exc}", 1)
    # Written only once everything is read: a refused run leaves no files.
    paths = write_pack(reports, args.packs) if args.packs else write_reports(reports, args.out)
    for path in paths:
        print(path)
    return 0


def _usage_scope(args: argparse.Namespace) -> ReportScope:
    """The scope `usage`'s arguments ask for (warnings about its council on stderr);
    _BadArgumentError for a bad period, council, scheme file, feed or source."""
    try:
        period = Period.parse(args.period)
    except BadPeriodError as exc:
        raise _BadArgumentError(f"--period: {exc}") from exc
    if args.council is not None and args.feed is None:
        raise _BadArgumentError("--council needs --feed: a council's area is found from its stops")
    if args.archive is not None and args.topics_given:
        raise _BadArgumentError("--archive reads no topic: no --topic-prefix or --bootstrap")
    if args.archive is not None and not args.archive.is_dir():
        raise _BadArgumentError(f"--archive: no directory {args.archive}")
    try:
        scheme = load_scheme(args.scheme)
        places = network_places(args.feed)
        council = council_of(scheme, args.council, period) if args.council else None
    except ClearwayError as exc:  # a refused scheme file or feed, an unknown council
        raise _BadArgumentError(str(exc)) from exc
    if council is not None:
        _warn_about_areas(council, places, args)
    return report_scope(period, scheme=scheme, places=places, council=council)


def _warn_about_areas(council: Council, places: NetworkPlaces, args: argparse.Namespace) -> None:
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


def _reports_from_topics(args: argparse.Namespace, scope: ReportScope) -> UsageReports:
    """The reports of `scope` from the journeys and benefits topics, read whole."""
    bootstrap = args.bootstrap or Endpoints.from_env().kafka_bootstrap
    funder_id = scope.council.funder_id if scope.council is not None else None
    try:
        journeys, postings = asyncio.run(
            read_usage(bootstrap, args.topic_prefix, scope.period, funder_id)
        )
    except TopicNotFoundError as exc:
        raise TopicNotFoundError(f"{exc} on {bootstrap}") from exc
    return build_reports(journeys, postings, scope)


def _reports_from_archive(archive: Path, scope: ReportScope) -> UsageReports:
    """The reports of `scope` from the day archive's files of its period; the days it has
    no files for are warned about and named in the reports."""
    archived = read_archive(archive, scope.period)
    if archived.days_without_data:
        print(
            f"clearway reports: warning: days without data in {archive}: "
            f"{day_ranges(archived.days_without_data)} (not counted in {scope.period.label})",
            file=sys.stderr,
        )
    scope = replace(scope, source=Source.ARCHIVE, days_without_data=archived.days_without_data)
    return build_reports(archived.journeys, archived.postings, scope)
