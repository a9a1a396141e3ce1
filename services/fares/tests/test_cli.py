"""The `clearway fares simulate` door."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.fares.domain import load_fare_data, price_card
from services.fares.entrypoints.cli import journey_json, journey_record, main

from .conftest import EXAMPLE_FEEDS
from .taps import bus, tap, trip

TAPS = [
    {
        "card": "c1",
        "time": "2025-03-03T08:00:00+00:00",
        "stop": "CMD",
        "kind": "entry",
        "tap_id": "a",
    },
    {
        "card": "c1",
        "time": "2025-03-03T08:20:00+00:00",
        "stop": "OXC",
        "kind": "exit",
        "tap_id": "b",
    },
    {
        "card": "c1",
        "time": "2025-03-03T10:00:00Z",
        "stop": "BUS_A1",
        "kind": "board",
        "route": "BUS_73",
    },
    {
        "card": "c2",
        "time": "2025-03-03T10:00:00+00:00",
        "stop": "KGX",
        "kind": "entry",
        "fare_media": "OYSTER",
        "rider_category": "ADULT",
    },
]


def write_taps(path: Path, records: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_simulate_writes_journeys_then_daily_totals(tmp_path: Path) -> None:
    taps = write_taps(tmp_path / "taps.jsonl", TAPS)
    out = tmp_path / "out.jsonl"
    code = main(
        [
            "simulate",
            "--feed",
            str(EXAMPLE_FEEDS / "london"),
            "--taps",
            str(taps),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    journeys = [r for r in lines if r["type"] == "journey"]
    totals = [r for r in lines if r["type"] == "total"]
    assert [j["charge"] for j in journeys] == [
        {"amount_minor": 350, "currency": "GBP"},
        {"amount_minor": 175, "currency": "GBP"},
        {"amount_minor": 940, "currency": "GBP"},
    ]
    assert journeys[0]["journey_id"] == "j-a" and journeys[0]["revision"] == 1
    assert journeys[0]["legs"][0]["fare_product"] == "Z12_PEAK"
    assert journeys[2]["incomplete"] and journeys[2]["fare_media"] == "OYSTER"
    assert totals == [
        {
            "type": "total",
            "card": "c1",
            "service_day": "2025-03-03",
            "journeys": 2,
            "amount_before_caps": {"amount_minor": 525, "currency": "GBP"},
            "charge": {"amount_minor": 525, "currency": "GBP"},
        },
        {
            "type": "total",
            "card": "c2",
            "service_day": "2025-03-03",
            "journeys": 1,
            "amount_before_caps": {"amount_minor": 940, "currency": "GBP"},
            "charge": {"amount_minor": 940, "currency": "GBP"},
        },
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: not JSON"),
        (
            '{"card": "c1", "time": "2025-03-03T08:00:00", "stop": "KGX", "kind": "entry"}',
            "line 2: time",
        ),
        (
            '{"card": "c1", "time": "2025-03-03T08:00:00Z", "stop": "KGX", "kind": "in"}',
            "line 2: kind",
        ),
        (
            '{"time": "2025-03-03T08:00:00Z", "stop": "KGX", "kind": "entry"}',
            "line 2: missing card",
        ),
        (
            '{"card": "c1", "time": "2025-03-03T08:00:00Z", "stop": "ZZZ", "kind": "entry"}',
            "line 2: UNKNOWN_STOP",
        ),
    ],
)
def test_bad_input_line_is_named_and_exit_code_is_nonzero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, message: str
) -> None:
    taps = tmp_path / "taps.jsonl"
    taps.write_text(json.dumps(TAPS[0]) + "\n" + line + "\n", encoding="utf-8")
    code = main(["simulate", "--feed", str(EXAMPLE_FEEDS / "london"), "--taps", str(taps)])
    assert code == 2
    assert message in capsys.readouterr().err


def test_broken_feed_is_reported_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    feed = tmp_path / "feed"
    feed.mkdir()
    (feed / "agency.txt").write_text(
        "agency_id,agency_timezone\nA,Nowhere/City\n", encoding="utf-8"
    )
    taps = write_taps(tmp_path / "taps.jsonl", TAPS[:1])
    assert main(["simulate", "--feed", str(feed), "--taps", str(taps)]) == 2
    err = capsys.readouterr().err
    assert "agency.txt:2: agency_timezone" in err
    assert "stops.txt: required file is missing" in err


def test_fast_journey_json_equals_the_record_encoded_with_json() -> None:
    data = load_fare_data(EXAMPLE_FEEDS / "london")
    taps = [
        *trip("2025-03-03 08:00", "CMD", "2025-03-03 08:20", "OXC", card='ç"1'),
        bus("2025-03-03 10:00", card='ç"1'),
        bus("2025-03-03 10:20", "BUS_B1", "BUS_390", card='ç"1'),
        tap("2025-03-03 11:00", "KGX", "entry", card='ç"1'),
        tap("2025-03-03 12:00", "NOPE", "exit", card='ç"1'),
        *[bus(f"2025-03-03 {h}:00", card='ç"1') for h in (13, 15, 17, 19)],
    ]
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    journeys = price_card(data, taps)
    assert any(j.caps for j in journeys)
    for journey in journeys:
        assert journey_json(journey, 3) == encode(journey_record(journey, 3))


def test_byte_order_mark_and_blank_padding_are_accepted(tmp_path: Path) -> None:
    taps = tmp_path / "taps.jsonl"
    lines = [json.dumps(TAPS[0]), "   " + json.dumps(TAPS[1]) + "  ", "", json.dumps(TAPS[2])]
    taps.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())
    out = tmp_path / "out.jsonl"
    assert (
        main(
            [
                "simulate",
                "--feed",
                str(EXAMPLE_FEEDS / "london"),
                "--taps",
                str(taps),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["type"] for r in records] == ["journey", "journey", "total"]


def test_trailing_garbage_on_a_line_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taps = tmp_path / "taps.jsonl"
    taps.write_text(json.dumps(TAPS[0]) + " x\n", encoding="utf-8")
    assert main(["simulate", "--feed", str(EXAMPLE_FEEDS / "london"), "--taps", str(taps)]) == 2
    assert "line 1: not JSON" in capsys.readouterr().err
