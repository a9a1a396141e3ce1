"""Unit tests of the accounts domain: paging, page tokens, history order, stored form."""

from __future__ import annotations

import base64
import json
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clearway.events.v1.events_pb2 import PricedJourney
from services.accounts.domain.errors import InvalidJourneyError, PageSizeError, PageTokenError
from services.accounts.domain.history import (
    JourneyRevision,
    history_page,
    journey_revision,
    latest_revisions,
    newest_first,
)
from services.accounts.domain.paging import (
    DEFAULT_PAGE_SIZE,
    MAX_JOURNEY_ID_CHARS,
    MAX_PAGE_SIZE,
    HistoryPosition,
    decode_page_token,
    effective_page_size,
    encode_page_token,
)

CARD = "card-tok-A"


def _rev(
    journey_id: str, started_at_us: int, revision: int = 1, card: str = CARD
) -> JourneyRevision:
    return JourneyRevision(
        card_token=card,
        journey_id=journey_id,
        revision=revision,
        started_at_us=started_at_us,
        started_from_legs=True,
        service_day=None,
        body=f"{journey_id}@{revision}".encode(),
    )


def _journey(**fields: object) -> PricedJourney:
    j = PricedJourney(journey_id="j1", card_token=CARD, revision=1, service_day="2026-11-20")
    for name, value in fields.items():
        setattr(j, name, value)
    return j


# --- page size ---------------------------------------------------------------------


def test_page_size_zero_means_default() -> None:
    assert effective_page_size(0) == DEFAULT_PAGE_SIZE == 20


def test_page_size_above_maximum_is_capped() -> None:
    assert effective_page_size(101) == MAX_PAGE_SIZE == 100
    assert effective_page_size(100) == 100
    assert effective_page_size(7) == 7


def test_negative_page_size_is_refused_with_code() -> None:
    with pytest.raises(PageSizeError) as err:
        effective_page_size(-1)
    assert err.value.code == "BAD_PAGE_SIZE"


# --- page tokens -------------------------------------------------------------------


def test_empty_token_means_first_page() -> None:
    assert decode_page_token("", CARD) is None


def test_longest_journey_id_of_widest_characters_round_trips() -> None:
    pos = HistoryPosition(-1, "\U0010ffff" * MAX_JOURNEY_ID_CHARS)
    assert decode_page_token(encode_page_token(pos, CARD), CARD) == pos


def test_token_round_trips_the_position() -> None:
    pos = HistoryPosition(1_763_625_600_123_456, "journey:ü:42")
    token = encode_page_token(pos, CARD)
    assert decode_page_token(token, CARD) == pos
    assert CARD not in token


@given(st.integers(min_value=-(2**62), max_value=2**62), st.text(max_size=MAX_JOURNEY_ID_CHARS))
def test_any_position_round_trips(started_at_us: int, journey_id: str) -> None:
    pos = HistoryPosition(started_at_us, journey_id)
    assert decode_page_token(encode_page_token(pos, CARD), CARD) == pos


@pytest.mark.parametrize(
    "garbage",
    ["x", ".", "abc.", ".abc", "!!!!.0123456789abcdef", "a" * 3000, "eyJ9.0000000000000000"],
)
def test_garbage_tokens_are_refused_with_code(garbage: str) -> None:
    with pytest.raises(PageTokenError) as err:
        decode_page_token(garbage, CARD)
    assert err.value.code == "BAD_PAGE_TOKEN"


def test_edited_token_is_refused() -> None:
    token = encode_page_token(HistoryPosition(1000, "j1"), CARD)
    body, _, checksum = token.partition(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload[1] = 999_999_999
    edited = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    with pytest.raises(PageTokenError):
        decode_page_token(f"{edited}.{checksum}", CARD)
    flipped = checksum[:-1] + ("0" if checksum[-1] != "0" else "1")
    with pytest.raises(PageTokenError):
        decode_page_token(f"{body}.{flipped}", CARD)


def test_token_of_another_card_is_refused() -> None:
    token = encode_page_token(HistoryPosition(1000, "j1"), "card-tok-B")
    with pytest.raises(PageTokenError, match="another card"):
        decode_page_token(token, CARD)


# --- history order and pages --------------------------------------------------------


def test_newest_first_by_start_then_journey_id_descending() -> None:
    revs = [_rev("a", 100), _rev("b", 300), _rev("c", 200), _rev("d", 300)]
    assert [r.journey_id for r in newest_first(revs)] == ["d", "b", "c", "a"]


def test_latest_revision_wins_in_any_arrival_order() -> None:
    arrivals = [_rev("j1", 100, 2), _rev("j1", 100, 1), _rev("j2", 50, 1), _rev("j1", 100, 3)]
    latest = {r.journey_id: r.revision for r in latest_revisions(arrivals)}
    assert latest == {"j1": 3, "j2": 1}


def test_history_page_with_more_rows_points_after_the_last_served() -> None:
    rows = newest_first([_rev("a", 100), _rev("b", 200), _rev("c", 300)])
    page = history_page(rows, 2, CARD)
    assert page.bodies == (b"c@1", b"b@1")
    assert decode_page_token(page.next_page_token, CARD) == HistoryPosition(200, "b")


def test_last_page_has_no_token() -> None:
    rows = newest_first([_rev("a", 100), _rev("b", 200)])
    assert history_page(rows, 2, CARD).next_page_token == ""
    assert history_page([], 5, CARD) == history_page([], 5, CARD)
    assert history_page([], 5, CARD).bodies == ()


# --- stored form of an event --------------------------------------------------------


def test_revision_starts_at_first_leg_entry_truncated_to_microseconds() -> None:
    j = _journey()
    leg = j.legs.add(leg_id="l1")
    leg.entry_at.seconds, leg.entry_at.nanos = 1_763_625_600, 123_456_789
    later = j.legs.add(leg_id="l2")
    later.entry_at.seconds = 1_763_629_200
    rev = journey_revision(j, CARD.encode(), j.SerializeToString())
    assert rev.started_at_us == 1_763_625_600_123_456
    assert rev.started_from_legs is True
    assert rev.service_day == date(2026, 11, 20)
    assert PricedJourney.FromString(rev.body) == j


def test_revision_without_legs_starts_at_service_day_midnight_utc() -> None:
    j = _journey(revision=2)
    rev = journey_revision(j, None, j.SerializeToString())
    assert rev.started_from_legs is False
    assert rev.started_at_us == 1_795_132_800 * 1_000_000  # 2026-11-20T00:00:00Z


@pytest.mark.parametrize(
    ("fields", "key", "code"),
    [
        ({"journey_id": ""}, None, "MISSING_JOURNEY_ID"),
        ({"card_token": ""}, None, "MISSING_CARD_TOKEN"),
        ({}, b"someone-else", "CARD_TOKEN_MISMATCH"),
        ({"revision": 0}, None, "BAD_REVISION"),
        ({"journey_id": "j" * 257}, None, "JOURNEY_ID_TOO_LONG"),
        ({"service_day": "20/11/2026"}, None, "BAD_SERVICE_DAY"),
    ],
)
def test_unstorable_events_carry_a_reason(
    fields: dict[str, object], key: bytes | None, code: str
) -> None:
    j = _journey(**fields)
    with pytest.raises(InvalidJourneyError) as err:
        journey_revision(j, key, j.SerializeToString())
    assert err.value.code == code
