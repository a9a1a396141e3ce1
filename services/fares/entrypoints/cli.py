"""`clearway fares simulate`: price a JSON-lines file of taps offline against a GTFS feed.

See docs/fares-simulate.md for the input and output formats.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

from clearway.money import Money
from services.fares.domain import (
    FareCatalog,
    FareData,
    FaresError,
    FeedError,
    PricedJourney,
    Tap,
    TapKind,
    check_tap,
    load_fare_data,
    price_card,
)

_ALIASES = {
    "card": ("card", "card_token"),
    "time": ("time", "tapped_at"),
    "stop": ("stop", "stop_id"),
    "kind": ("kind",),
    "route": ("route", "route_id"),
    "operator": ("operator", "operator_id"),
    "rider_category": ("rider_category", "rider_category_id"),
    "fare_media": ("fare_media", "fare_media_id"),
    "tap_id": ("tap_id", "id"),
}


class TapInputError(ValueError):
    """A line of the taps file is not a valid tap."""

    code = "BAD_TAP"

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        super().__init__(f"line {line}: {message}")


def _field(record: dict[str, Any], name: str, line: int, *, required: bool) -> str | None:
    for key in _ALIASES[name]:
        value = record.get(key)
        if value is not None:
            if not isinstance(value, str) or not value:
                raise TapInputError(line, f"{key} must be a non-empty string")
            return value
    if required:
        raise TapInputError(line, f"missing {' or '.join(_ALIASES[name])}")
    return None


def parse_tap(text: str, line: int) -> Tap:
    """One JSON line -> Tap; TapInputError naming the line when malformed."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TapInputError(line, f"not JSON: {exc.msg}") from None
    if not isinstance(record, dict):
        raise TapInputError(line, "not a JSON object")
    time_text = _field(record, "time", line, required=True)
    assert time_text is not None
    try:
        tapped_at = datetime.fromisoformat(time_text)
    except ValueError:
        raise TapInputError(line, f"time {time_text!r} is not ISO 8601") from None
    if tapped_at.utcoffset() is None:
        raise TapInputError(line, f"time {time_text!r} has no UTC offset")
    kind_text = _field(record, "kind", line, required=True) or ""
    try:
        kind = TapKind(kind_text)
    except ValueError:
        raise TapInputError(line, f"kind {kind_text!r} is not entry, exit or board") from None
    card = _field(record, "card", line, required=True)
    stop = _field(record, "stop", line, required=True)
    assert card is not None and stop is not None
    return Tap(
        tap_id=_field(record, "tap_id", line, required=False) or f"line-{line}",
        card_token=card,
        tapped_at=tapped_at,
        stop_id=stop,
        kind=kind,
        route_id=_field(record, "route", line, required=False),
        operator_id=_field(record, "operator", line, required=False),
        rider_category_id=_field(record, "rider_category", line, required=False),
        fare_media_id=_field(record, "fare_media", line, required=False),
    )


def parse_taps(lines: Iterable[str]) -> list[Tap]:
    """Parse JSON-lines taps (blank lines skipped); TapInputError on the first bad line."""
    taps: list[Tap] = []
    for number, text in enumerate(lines, start=1):
        if text.strip():
            taps.append(parse_tap(text, number))
    return taps


def _money(m: Money) -> dict[str, Any]:
    return {"amount_minor": m.amount_minor, "currency": m.currency}


def journey_record(journey: PricedJourney, revision: int = 1) -> dict[str, Any]:
    """The JSON shape of one priced journey."""
    return {
        "type": "journey",
        "journey_id": journey.journey_id,
        "card": journey.card_token,
        "service_day": journey.service_day.isoformat(),
        "revision": revision,
        "fare_version": journey.fare_version,
        "rider_category": journey.rider_category_id or None,
        "fare_media": journey.fare_media_id or None,
        "incomplete": journey.incomplete,
        "no_fare_reason": journey.no_fare_reason,
        "amount_before_caps": _money(journey.amount_before_caps),
        "caps": [{"cap_id": c.cap_id, "saved": _money(c.saved)} for c in journey.caps],
        "charge": _money(journey.charge),
        "legs": [
            {
                "leg_id": leg.leg_id,
                "operator": leg.operator_id,
                "network": leg.network_id,
                "route": leg.route_id,
                "from_stop": leg.from_stop_id,
                "to_stop": leg.to_stop_id,
                "entry_at": leg.entry_at.isoformat(),
                "exit_at": leg.exit_at.isoformat() if leg.exit_at else None,
                "fare_product": leg.fare_product_id,
                "leg_group": leg.leg_group_id,
                "transfer_rule": leg.transfer_rule_id,
                "transfer_product": leg.transfer_product_id,
                "maximum_fare": leg.maximum_fare,
                "incomplete": leg.incomplete,
                "distance_m": leg.distance_m,
                "fare": _money(leg.fare),
                "charge": _money(leg.charge) if leg.charge is not None else None,
                "tap_ids": list(leg.tap_ids),
            }
            for leg in journey.legs
        ],
        "explanation": list(journey.explanation),
    }


def output_records(journeys: list[PricedJourney]) -> Iterator[dict[str, Any]]:
    """Journey records, then one total per card per service day (sorted)."""
    totals: dict[tuple[str, date], list[PricedJourney]] = {}
    for journey in journeys:
        totals.setdefault((journey.card_token, journey.service_day), []).append(journey)
        yield journey_record(journey)
    for (card, day), group in sorted(totals.items()):
        currency = group[0].charge.currency
        yield {
            "type": "total",
            "card": card,
            "service_day": day.isoformat(),
            "journeys": len(group),
            "amount_before_caps": _money(
                Money(sum(j.amount_before_caps.amount_minor for j in group), currency)
            ),
            "charge": _money(Money(sum(j.charge.amount_minor for j in group), currency)),
        }


def simulate(
    fare_data: FareData | FareCatalog, taps: list[Tap], out: IO[str], as_of: datetime | None = None
) -> int:
    """Price `taps` and write JSON lines to `out`; returns the number of journeys."""
    journeys = price_card(fare_data, taps, as_of=as_of)
    write = out.write
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    for record in output_records(journeys):
        write(dumps(record))
        write("\n")
    return len(journeys)


def _load_catalog(feeds: list[Path]) -> FareData | FareCatalog:
    versions = [load_fare_data(path) for path in feeds]
    return versions[0] if len(versions) == 1 else FareCatalog.of(versions)


def _run_simulate(args: argparse.Namespace) -> int:
    try:
        fare_data = _load_catalog(args.feed)
    except FeedError as exc:
        print(f"clearway fares: feed refused ({len(exc.problems)} problem(s)):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    as_of = None
    if args.as_of:
        as_of = datetime.fromisoformat(args.as_of)
        if as_of.utcoffset() is None:
            print("clearway fares: --as-of needs a UTC offset", file=sys.stderr)
            return 2
    name = str(args.taps)
    try:
        with open(args.taps, encoding="utf-8") as handle:
            taps = parse_taps(handle)
        for number, tap in enumerate(taps, start=1):
            try:
                check_tap(fare_data, tap)
            except FaresError as exc:
                raise TapInputError(number, f"{exc.code}: {exc}") from None
    except TapInputError as exc:
        print(f"clearway fares: {name}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"clearway fares: cannot read {name}: {exc}", file=sys.stderr)
        return 2
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            simulate(fare_data, taps, out, as_of)
    else:
        simulate(fare_data, taps, sys.stdout, as_of)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of `clearway fares`."""
    parser = argparse.ArgumentParser(prog="clearway fares", description="Fare engine tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="price a JSON-lines taps file against a GTFS feed")
    sim.add_argument(
        "--feed",
        type=Path,
        action="append",
        required=True,
        help="GTFS feed directory or .zip; repeat for several fare versions",
    )
    sim.add_argument("--taps", type=Path, required=True, help="taps, one JSON object per line")
    sim.add_argument("--out", type=Path, help="write JSON lines here instead of stdout")
    sim.add_argument(
        "--as-of", help="ISO 8601 instant: leave entries whose exit may still come pending"
    )
    return parser


def main(argv: list[str]) -> int:
    """Entry point of `clearway fares ...`; returns the process exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "simulate":
        return _run_simulate(args)
    return 2  # pragma: no cover - argparse rejects unknown commands
