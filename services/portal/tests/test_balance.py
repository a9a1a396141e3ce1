"""The top-up amount a traveller types, how balance movements are described, the stops a
claim may name, and where claims and caps stand."""

from __future__ import annotations

from pathlib import Path

import pytest

from clearway.money import Money
from services.portal.app import DEFAULT_FEED
from services.portal.domain.balance import (
    AmountError,
    MovementKind,
    MovementView,
    parse_amount,
)
from services.portal.domain.claims import CapView, ClaimState, ClaimView, load_stops
from services.portal.domain.messages import top_up_message

MAX = 50_000


@pytest.mark.parametrize(
    ("text", "minor"),
    [
        ("10", 1000),
        ("10.00", 1000),
        ("10.5", 1050),
        ("0.01", 1),
        (" £10.00 ", 1000),
        ("500.00", 50_000),
        ("1,000.00", 100_000),
    ],
)
def test_amounts_in_pounds_and_pence(text: str, minor: int) -> None:
    assert parse_amount(text, 200_000) == minor


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "MISSING_AMOUNT"),
        ("£", "MISSING_AMOUNT"),
        ("0", "BAD_AMOUNT"),
        ("0.00", "BAD_AMOUNT"),
        ("-5", "BAD_AMOUNT"),
        ("500.01", "BAD_AMOUNT"),
        ("99999999999", "AMOUNT_FORMAT"),
        ("10.001", "AMOUNT_FORMAT"),
        ("1e3", "AMOUNT_FORMAT"),
        ("ten", "AMOUNT_FORMAT"),
        ("10,00", "AMOUNT_FORMAT"),
        ("+10", "AMOUNT_FORMAT"),
        ("\u0661\u0660", "AMOUNT_FORMAT"),  # digits of another script are not pence
        ("10.\x00", "AMOUNT_FORMAT"),
    ],
)
def test_amounts_refused(text: str, code: str) -> None:
    with pytest.raises(AmountError) as refused:
        parse_amount(text, MAX)
    assert refused.value.code == code


def test_top_up_messages_name_the_maximum() -> None:
    assert top_up_message("BAD_AMOUNT", "£500.00") == "Enter an amount from £0.01 up to £500.00."
    assert "already used" in top_up_message("IDEMPOTENCY_KEY_REUSED", "£500.00")
    assert "pounds and pence" in top_up_message("AMOUNT_FORMAT", "£500.00")


def test_movements_say_what_they_were() -> None:
    def movement(kind: MovementKind, amount: int, revision: int = 1) -> MovementView:
        return MovementView(kind, "x", revision, Money(amount, "GBP"), Money(0, "GBP"), None)

    assert movement(MovementKind.TOP_UP, 1000, 0).description == "Top-up"
    assert movement(MovementKind.JOURNEY, -280).description == "Journey charge"
    assert movement(MovementKind.JOURNEY, -50, 2).description == "Journey adjustment"
    assert movement(MovementKind.JOURNEY, 120, 2).description == "Journey refund (adjustment)"
    assert movement(MovementKind.OTHER, 5).description == "Balance change"


def test_stops_of_a_feed_by_name(tmp_path: Path) -> None:
    (tmp_path / "stops.txt").write_text(
        "\ufeffstop_id,stop_name,location_type\n"
        "OXC,Oxford Circus,1\n"
        "KGX,King's Cross St Pancras,\n"
        "E1,Oxford Circus entrance,2\n"
        "X,,0\n",
        encoding="utf-8",
    )
    assert [s.stop_id for s in load_stops(tmp_path)] == ["KGX", "OXC"]
    assert load_stops(tmp_path / "missing") == ()
    assert [s.name for s in load_stops(DEFAULT_FEED)][:1] == ["Bond Street"]


def test_claims_and_caps_say_where_they_stand() -> None:
    gbp = Money(0, "GBP")
    claim = ClaimView(
        "c", "j", "KGX", None, "OXC", None, True, ClaimState.PENDING, "", gbp, gbp, None
    )
    assert claim.outcome == "Being checked"
    cap = CapView("d", "Daily", "day", Money(890, "GBP"), Money(890, "GBP"), gbp, "")
    assert cap.reached
    assert not CapView("d", "Daily", "day", Money(890, "GBP"), gbp, Money(890, "GBP"), "").reached
