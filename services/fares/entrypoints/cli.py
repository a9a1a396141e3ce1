"""`clearway fares simulate`: price a JSON-lines file of taps offline against a GTFS feed.

See docs/fares-simulate.md for the input and output formats.
"""

from __future__ import annotations

import argparse
import gc
import json
import json.scanner
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, timedelta
from json.encoder import encode_basestring
from pathlib import Path
from typing import IO, Any

from clearway.money import Money
from services.fares.adapters.gtfs_reader import load_fare_data
from services.fares.domain import (
    FareCatalog,
    FareData,
    FaresError,
    FeedError,
    PricedJourney,
    PricedLeg,
    Tap,
    TapKind,
    check_tap,
    price_card,
)
from services.fares.domain.frozen import fast_builder

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


_CANONICAL = frozenset(_ALIASES)
_CANONICAL_OF = {alias: name for name, aliases in _ALIASES.items() for alias in aliases}
_REQUIRED = ("card", "time", "stop", "kind")
_KINDS = {kind.value: kind for kind in TapKind}
_new_tap = fast_builder(Tap)  # a Tap per line: without a frozen dataclass's per-field setattr


def _canonical(record: dict[str, Any], line: int) -> dict[str, Any]:
    """Rename alias keys (card_token, tapped_at, ...) to the canonical ones; drop unknown keys."""
    result: dict[str, Any] = {}
    for key, value in record.items():
        name = _CANONICAL_OF.get(key)
        if name is None or value is None:
            continue
        if name in result:
            raise TapInputError(line, f"{key} repeats {name}")
        result[name] = value
    return result


def _check_strings(record: dict[str, Any], line: int) -> None:
    for name in _REQUIRED:
        if name not in record:
            raise TapInputError(line, f"missing {' or '.join(_ALIASES[name])}")
    for name, value in record.items():
        if value.__class__ is not str or not value:
            raise TapInputError(line, f"{name} must be a non-empty string")


# The C scanner behind json.loads (typeshed types its argument as the scanner itself).
_SCAN: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(
    json.JSONDecoder()  # type: ignore[arg-type]
)


def _decode(text: str, line: int) -> Any:
    """json.loads without its per-call Python overhead; the same errors."""
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        value, end = None, -1
    except json.JSONDecodeError as exc:
        raise TapInputError(line, f"not JSON: {exc.msg}") from None
    if end < 0 or text[end:].strip():
        try:
            return json.loads(text)  # leading blanks, trailing garbage: let json say what
        except json.JSONDecodeError as exc:
            raise TapInputError(line, f"not JSON: {exc.msg}") from None
    return value


def parse_tap(text: str, line: int) -> Tap:
    """One JSON line -> Tap; TapInputError naming the line when malformed."""
    record = _decode(text, line)
    if record.__class__ is not dict:
        raise TapInputError(line, "not a JSON object")
    if not record.keys() <= _CANONICAL or None in record.values():
        record = _canonical(record, line)
    _check_strings(record, line)
    get = record.get
    time_text: str = record["time"]
    try:
        tapped_at = datetime.fromisoformat(time_text)
    except ValueError:
        raise TapInputError(line, f"time {time_text!r} is not ISO 8601") from None
    if tapped_at.utcoffset() is None:
        raise TapInputError(line, f"time {time_text!r} has no UTC offset")
    kind_text: str = record["kind"]
    kind = _KINDS.get(kind_text)
    if kind is None:
        raise TapInputError(line, f"kind {kind_text!r} is not entry, exit or board")
    return _new_tap(
        get("tap_id") or f"line-{line}",
        record["card"],
        tapped_at,
        record["stop"],
        kind,
        get("route"),
        get("operator"),
        get("rider_category"),
        get("fare_media"),
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
                "standalone_fare": (
                    _money(leg.standalone_fare) if leg.standalone_fare is not None else None
                ),
                "reference_fare": (
                    _money(leg.reference_fare) if leg.reference_fare is not None else None
                ),
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


_STR = encode_basestring  # the C string escaper behind json.dumps(ensure_ascii=False)

# Output fragments recur (the same stops, products, notes, amounts and instants over and
# over): each is encoded once, then looked up. A memo is emptied when it grows past the
# limit, so unbounded input cannot exhaust memory.
_MEMO_LIMIT = 50_000
_STRINGS: dict[str | None, str] = {}
_MONEY: dict[tuple[int, str], str] = {}
_INSTANTS: dict[tuple[datetime, timedelta | None], str] = {}
_EXPLANATIONS: dict[tuple[str, ...], str] = {}
_JOURNEY_HEADS: dict[tuple[Any, ...], str] = {}
_LEG_HEADS: dict[tuple[str, str | None, str | None, str, str | None], str] = {}
_LEG_MIDDLES: dict[tuple[Any, ...], str] = {}


def _remember(memo: dict[Any, str], key: Any, encoded: str) -> str:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[key] = encoded
    return encoded


def _s(value: str | None) -> str:
    """A JSON string or null (ids and notes repeat: remembered)."""
    escaped = _STRINGS.get(value)
    if escaped is None:
        escaped = _remember(_STRINGS, value, "null" if value is None else _STR(value))
    return escaped


def _m(m: Money) -> str:
    # _amount(m.amount_minor, m.currency), inline: several per leg.
    key = (m.amount_minor, m.currency)
    encoded = _MONEY.get(key)
    if encoded is None:
        encoded = _amount(m.amount_minor, m.currency)
    return encoded


def _amount(amount_minor: int, currency: str) -> str:
    """The JSON of Money(amount_minor, currency), without making the Money."""
    key = (amount_minor, currency)
    encoded = _MONEY.get(key)
    if encoded is None:
        encoded = _remember(
            _MONEY, key, f'{{"amount_minor":{amount_minor},"currency":{_STR(currency)}}}'
        )
    return encoded


def _m_or_null(m: Money | None) -> str:
    return "null" if m is None else _m(m)


def _instant(at: datetime) -> str:
    # Equal instants with other UTC offsets print differently: the offset is in the key.
    key = (at, at.utcoffset())
    encoded = _INSTANTS.get(key)
    if encoded is None:
        encoded = _remember(_INSTANTS, key, _STR(at.isoformat()))
    return encoded


def _explanation(lines: tuple[str, ...]) -> str:
    encoded = _EXPLANATIONS.get(lines)
    if encoded is None:
        encoded = _remember(_EXPLANATIONS, lines, ",".join([_STR(e) for e in lines]))
    return encoded


def _leg_json(leg: PricedLeg) -> str:
    head_key = (leg.operator_id, leg.network_id, leg.route_id, leg.from_stop_id, leg.to_stop_id)
    head = _LEG_HEADS.get(head_key)
    if head is None:
        head = _remember(
            _LEG_HEADS,
            head_key,
            f'"operator":{_STR(leg.operator_id)},"network":{_s(leg.network_id)},'
            f'"route":{_s(leg.route_id)},"from_stop":{_STR(leg.from_stop_id)},'
            f'"to_stop":{_s(leg.to_stop_id)},"entry_at":',
        )
    middle_key = (
        leg.fare_product_id,
        leg.leg_group_id,
        leg.transfer_rule_id,
        leg.transfer_product_id,
        leg.maximum_fare,
        leg.incomplete,
        leg.distance_m,
    )
    middle = _LEG_MIDDLES.get(middle_key)
    if middle is None:
        distance = "null" if leg.distance_m is None else str(leg.distance_m)
        middle = _remember(
            _LEG_MIDDLES,
            middle_key,
            f',"fare_product":{_s(leg.fare_product_id)},"leg_group":{_s(leg.leg_group_id)},'
            f'"transfer_rule":{_s(leg.transfer_rule_id)},'
            f'"transfer_product":{_s(leg.transfer_product_id)},'
            f'"maximum_fare":{"true" if leg.maximum_fare else "false"},'
            f'"incomplete":{"true" if leg.incomplete else "false"},"distance_m":{distance},'
            '"fare":',
        )
    exit_at = "null" if leg.exit_at is None else _instant(leg.exit_at)
    fare_money = leg.fare
    fare = _m(fare_money)
    # The engine shares one Money between equal amounts: then reuse the encoding.
    charge = fare if leg.charge is fare_money else _m_or_null(leg.charge)
    standalone, reference = leg.standalone_fare, leg.reference_fare
    alone = fare if standalone is fare_money else _m_or_null(standalone)
    ref = alone if reference is standalone else _m_or_null(reference)
    taps = ",".join(map(_STR, leg.tap_ids))
    return (
        f'{{"leg_id":{_STR(leg.leg_id)},{head}{_instant(leg.entry_at)},"exit_at":{exit_at}'
        f'{middle}{fare},"charge":{charge},"standalone_fare":{alone},'
        f'"reference_fare":{ref},"tap_ids":[{taps}]}}'
    )


def _journey_head(journey: PricedJourney, revision: int) -> str:
    """From `"service_day"` to `"amount_before_caps":`: the same few values over and over."""
    key = (
        journey.service_day,
        revision,
        journey.fare_version,
        journey.rider_category_id,
        journey.fare_media_id,
        journey.incomplete,
        journey.no_fare_reason,
    )
    head = _JOURNEY_HEADS.get(key)
    if head is None:
        head = _remember(
            _JOURNEY_HEADS,
            key,
            f'"service_day":"{journey.service_day.isoformat()}",'
            f'"revision":{revision},"fare_version":{_s(journey.fare_version)},'
            f'"rider_category":{_s(journey.rider_category_id or None)},'
            f'"fare_media":{_s(journey.fare_media_id or None)},'
            f'"incomplete":{"true" if journey.incomplete else "false"},'
            f'"no_fare_reason":{_s(journey.no_fare_reason)},"amount_before_caps":',
        )
    return head


def journey_json(journey: PricedJourney, revision: int = 1, card: str | None = None) -> str:
    """`journey_record` encoded as compact JSON, built directly (the hot path of simulate).
    `card`: the card token already encoded, when the caller has it."""
    caps = (
        ",".join([f'{{"cap_id":{_s(c.cap_id)},"saved":{_m(c.saved)}}}' for c in journey.caps])
        if journey.caps
        else ""
    )
    legs = journey.legs
    legs_json = _leg_json(legs[0]) if len(legs) == 1 else ",".join(map(_leg_json, legs))
    return (
        f'{{"type":"journey","journey_id":{_STR(journey.journey_id)},'
        f'"card":{card or _STR(journey.card_token)},{_journey_head(journey, revision)}'
        f'{_m(journey.amount_before_caps)},"caps":[{caps}],'
        f'"charge":{_m(journey.charge)},"legs":[{legs_json}],'
        f'"explanation":[{_explanation(journey.explanation)}]}}'
    )


def _total_json(card: str, day: date, group: list[PricedJourney]) -> str:
    """The total line of one card's service day, as `output_records` has it."""
    currency = group[0].charge.currency
    before = charge = 0
    for journey in group:
        before += journey.amount_before_caps.amount_minor
        charge += journey.charge.amount_minor
    return (
        f'{{"type":"total","card":{_STR(card)},"service_day":"{day.isoformat()}",'
        f'"journeys":{len(group)},"amount_before_caps":{_amount(before, currency)},'
        f'"charge":{_amount(charge, currency)}}}'
    )


def output_lines(journeys: list[PricedJourney]) -> Iterator[str]:
    """Compact JSON of each journey, then one total per card per service day (sorted)."""
    totals: dict[tuple[str, date], list[PricedJourney]] = {}
    cards: dict[str, str] = {}  # each card token encoded once (usually one card)
    for journey in journeys:
        token = journey.card_token
        totals.setdefault((token, journey.service_day), []).append(journey)
        card = cards.get(token)
        if card is None:
            card = cards[token] = _STR(token)
        yield journey_json(journey, 1, card)
    for (token, day), group in sorted(totals.items()):
        yield _total_json(token, day, group)


def simulate(
    fare_data: FareData | FareCatalog, taps: list[Tap], out: IO[str], as_of: datetime | None = None
) -> int:
    """Price `taps` card by card (cards in token order) and write JSON lines to `out`: each
    card's journeys, then its totals per service day. Returns the number of journeys."""
    by_card: dict[str, list[Tap]] = {}
    for tap in taps:
        by_card.setdefault(tap.card_token, []).append(tap)
    write = out.write
    count = 0
    for card in sorted(by_card):
        journeys = price_card(fare_data, by_card[card], as_of=as_of)
        count += len(journeys)
        write("\n".join(output_lines(journeys)))
        write("\n")
    return count


def simulate_file(
    fare_data: FareData | FareCatalog, taps_path: Path, out: IO[str], as_of: datetime | None = None
) -> int:
    """The whole door after the feed is loaded: parse and check every tap (TapInputError on
    the first bad line), then price and write. Returns the number of journeys."""
    with open(taps_path, encoding="utf-8-sig") as handle:
        taps = parse_taps(handle)
    passes = _passes_checks(fare_data)
    for number, tap in enumerate(taps, start=1):
        if passes(tap):
            continue
        try:
            check_tap(fare_data, tap)
        except FaresError as exc:
            raise TapInputError(number, f"{exc.code}: {exc}") from None
    # The parsed taps live until the end: keep the cyclic GC from rescanning them.
    gc.freeze()
    try:
        return simulate(fare_data, taps, out, as_of)
    finally:
        gc.unfreeze()


def _passes_checks(fare_data: FareData | FareCatalog) -> Callable[[Tap], bool]:
    """A quick test that a parsed tap (its time has an offset) passes `check_tap` against
    one fare data version: in force, known stop, known route or none. False means "ask
    check_tap", which says why (and decides alone for several versions)."""
    if len(fare_data.versions) != 1:
        return lambda tap: False
    data = fare_data.versions[0]
    start, stops, routes = data.index.in_force_from, data.stops, data.routes
    return lambda tap: (
        (start is None or tap.tapped_at >= start)
        and tap.stop_id in stops
        and (tap.route_id is None or tap.route_id in routes)
    )


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
        if args.out:
            with open(args.out, "w", encoding="utf-8") as out:
                simulate_file(fare_data, args.taps, out, as_of)
        else:
            simulate_file(fare_data, args.taps, sys.stdout, as_of)
    except TapInputError as exc:
        print(f"clearway fares: {name}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"clearway fares: cannot read {name}: {exc}", file=sys.stderr)
        return 2
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
