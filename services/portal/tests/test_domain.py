"""The portal's pure rules: CSRF tokens, journey views, the CSV, the messages."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from clearway.money import Money
from services.portal.domain.csrf import csrf_token, csrf_valid
from services.portal.domain.journeys import (
    CSV_HEADER,
    JourneyView,
    LegView,
    format_money,
    journeys_csv,
    signed_money,
)
from services.portal.domain.messages import message_for, notice_for

SECRET = b"s" * 32
T0 = datetime(2026, 11, 20, 7, 30, tzinfo=UTC)


def view(**overrides: object) -> JourneyView:
    fields: dict[str, object] = {
        "journey_id": "j-1",
        "service_day": "2026-11-20",
        "legs": (
            LegView("940GZZLUKSX", "940GZZLUOXC", T0, T0, incomplete=False),
            LegView("490000001", "", T0, None, incomplete=True),
        ),
        "charge": Money(280, "GBP"),
        "caps_saved": Money(40, "GBP"),
        "incomplete": True,
        "revision": 2,
        "delta": Money(-50, "GBP"),
    }
    fields.update(overrides)
    return JourneyView(**fields)  # type: ignore[arg-type]


def test_csrf_token_is_bound_to_seed_and_session() -> None:
    token = csrf_token(SECRET, "seed", "session")
    assert csrf_valid(SECRET, "seed", "session", token)
    assert not csrf_valid(SECRET, "other-seed", "session", token)
    assert not csrf_valid(SECRET, "seed", "", token)  # a token from before sign-in
    assert not csrf_valid(b"x" * 32, "seed", "session", token)
    assert not csrf_valid(SECRET, "", "session", csrf_token(SECRET, "", "session"))
    assert not csrf_valid(SECRET, "seed", "session", "")


def test_money_is_shown_with_symbol_and_sign() -> None:
    assert format_money(Money(250, "GBP")) == "£2.50"
    assert format_money(Money(-40, "GBP")) == "-£0.40"
    assert format_money(Money(1234, "CHF")) == "12.34 CHF"
    assert signed_money(Money(50, "GBP")) == "+£0.50"
    assert signed_money(Money(-50, "GBP")) == "-£0.50"


def test_journey_view_route_start_and_adjustment() -> None:
    j = view()
    assert j.route == "940GZZLUKSX → 940GZZLUOXC; 490000001 → (no exit)"
    assert j.started_at == T0
    assert j.adjustment == Money(-50, "GBP")
    assert view(revision=1, delta=Money(280, "GBP")).adjustment is None


def test_csv_has_header_and_one_row_per_journey() -> None:
    text = journeys_csv([view(), view(journey_id="j-2", revision=1, incomplete=False)])
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_HEADER
    first = dict(zip(CSV_HEADER, rows[1], strict=True))
    assert first["charge"] == "2.80" and first["caps_saved"] == "0.40"
    assert first["incomplete"] == "yes" and first["adjustment"] == "-0.50"
    second = dict(zip(CSV_HEADER, rows[2], strict=True))
    assert (second["journey_id"], second["adjustment"], second["incomplete"]) == ("j-2", "", "no")
    assert journeys_csv([view()], header=False).count("\n") == 1


def test_csv_text_cells_never_start_a_formula() -> None:
    rows = list(csv.reader(io.StringIO(journeys_csv([view(journey_id="=HYPERLINK(1)")]))))
    assert rows[1][2] == "'=HYPERLINK(1)"


def test_reason_codes_and_notices_have_friendly_text() -> None:
    assert "do not match" in message_for("BAD_CREDENTIALS")
    assert "15 minutes" in message_for("SIGN_IN_RATE_LIMITED")
    assert (
        message_for("SOMETHING_NEW")
        == message_for(None)
        == "Something went wrong. Please try again."
    )
    assert notice_for("signed-out") == "You have signed out."
    assert notice_for("<script>") is None
