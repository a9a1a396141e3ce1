"""`clearway reports usage --period YYYY-MM-DD --out DIR [--topic-prefix P] [--feed DIR]`.

Reads the journeys topic from the beginning and writes the council usage reports
(docs/reports.md): three CSVs and an SVG chart.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

from clearway.infra.endpoints import Endpoints
from clearway.kafka import Topics
from services.reports.adapters.journeys import TopicNotFoundError, read_journeys, write_reports
from services.reports.domain.usage import build_reports

DEFAULT_TIMEZONE = "Europe/London"


def _stop_areas_and_timezone(feed: Path | None) -> tuple[dict[str, str], ZoneInfo]:
    """Each stop's fare area (several areas joined by '+') and the network timezone."""
    if feed is None:
        return {}, ZoneInfo(DEFAULT_TIMEZONE)
    from services.fares.domain import load_fare_data  # noqa: PLC0415 - only with --feed

    data = load_fare_data(feed)
    areas = {s.stop_id: "+".join(sorted(s.area_ids)) for s in data.stops.values() if s.area_ids}
    return areas, data.timezone


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clearway reports", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    usage = sub.add_parser("usage", help="usage reports of one service day")
    usage.add_argument("--period", required=True, help="service day, YYYY-MM-DD")
    usage.add_argument("--out", required=True, type=Path, help="directory to write into")
    usage.add_argument(
        "--topic-prefix",
        default=os.environ.get("CLEARWAY_TOPIC_PREFIX", ""),
        help="prefix of the topic names (default: $CLEARWAY_TOPIC_PREFIX)",
    )
    usage.add_argument(
        "--feed",
        type=Path,
        default=None,
        help="GTFS feed: origin-destination by fare area and its timezone "
        f"(default: by stop, {DEFAULT_TIMEZONE})",
    )
    usage.add_argument("--bootstrap", default=None, help="Kafka bootstrap (default: from env)")
    return parser


async def usage_reports(
    bootstrap: str,
    topic_prefix: str,
    period: str,
    out: Path,
    feed: Path | None = None,
) -> list[Path]:
    """Read the journeys topic and write the reports of `period` into `out`."""
    areas, timezone = _stop_areas_and_timezone(feed)
    journeys = await read_journeys(bootstrap, Topics(topic_prefix).journeys, period)
    reports = build_reports(journeys, period, timezone, areas)
    return write_reports(reports, out)


def main(argv: list[str]) -> int:
    """Entry point of `clearway reports`."""
    args = _parser().parse_args(argv)
    try:
        date.fromisoformat(args.period)
    except ValueError:
        print(
            f"clearway reports: --period must be YYYY-MM-DD, not {args.period!r}", file=sys.stderr
        )
        return 2
    bootstrap = args.bootstrap or Endpoints.from_env().kafka_bootstrap
    try:
        paths = asyncio.run(
            usage_reports(bootstrap, args.topic_prefix, args.period, args.out, args.feed)
        )
    except TopicNotFoundError as exc:
        print(f"clearway reports: no topic {exc} on {bootstrap}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0
