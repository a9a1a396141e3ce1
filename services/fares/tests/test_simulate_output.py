"""The fast JSON writer of `clearway fares simulate` says exactly what `json` would."""

from __future__ import annotations

import io
import json
from datetime import datetime

from services.fares.domain import Tap, TapKind, load_fare_data, price_card
from services.fares.entrypoints.cli import output_lines, output_records, simulate

from .conftest import EXAMPLE_FEEDS
from .taps import bus, tap, trip

ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _tap(tap_id: str, when: str, stop: str, kind: TapKind, card: str = "c-offsets") -> Tap:
    return Tap(tap_id, card, datetime.fromisoformat(when), stop, kind)


def test_equal_instants_with_other_offsets_are_written_with_their_own_offset() -> None:
    data = load_fare_data(EXAMPLE_FEEDS / "london")
    # The same two instants, once in UTC and once at +01:00 (a remembered text must not leak).
    taps = [
        _tap("a", "2025-03-03T08:00:00+00:00", "CMD", TapKind.ENTRY, "c1"),
        _tap("b", "2025-03-03T08:20:00+00:00", "OXC", TapKind.EXIT, "c1"),
        _tap("c", "2025-03-03T09:00:00+01:00", "CMD", TapKind.ENTRY, "c2"),
        _tap("d", "2025-03-03T09:20:00+01:00", "OXC", TapKind.EXIT, "c2"),
    ]
    out = io.StringIO()
    simulate(data, taps, out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    legs = [line["legs"][0] for line in lines if line["type"] == "journey"]
    assert [(leg["entry_at"], leg["exit_at"]) for leg in legs] == [
        ("2025-03-03T08:00:00+00:00", "2025-03-03T08:20:00+00:00"),
        ("2025-03-03T09:00:00+01:00", "2025-03-03T09:20:00+01:00"),
    ]


def test_output_lines_equal_the_records_encoded_with_json_twice_over() -> None:
    data = load_fare_data(EXAMPLE_FEEDS / "london")
    taps = [
        *trip("2025-03-03 08:00", "CMD", "2025-03-03 08:20", "OXC", card='é"2'),
        bus("2025-03-03 10:00", card='é"2'),
        bus("2025-03-03 10:20", "BUS_B1", "BUS_390", card='é"2'),
        tap("2025-03-03 11:00", "KGX", "entry", card='é"2'),
        tap("2025-03-03 12:00", "NOPE", "exit", card='é"2'),
        *[bus(f"2025-03-03 {h}:00", card='é"2') for h in (13, 15, 17, 19)],
        *trip("2025-03-04 08:00", "CMD", "2025-03-04 08:20", "OXC", card='é"2'),
    ]
    journeys = price_card(data, taps)
    expected = [ENCODE(record) for record in output_records(journeys)]
    # The second pass reads remembered fragments: it must say the same.
    assert list(output_lines(journeys)) == expected
    assert list(output_lines(journeys)) == expected
