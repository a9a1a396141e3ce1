"""The pure stored-value rules: top-up amounts and keys, revision deltas, deny-list
transitions. No servers."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.accounts.domain.balance import (
    BadAmountError,
    BadIdempotencyKeyError,
    CardBalance,
    ChargedRevision,
    CurrencyMismatchError,
    DenyListTransition,
    JourneyStanding,
    Movement,
    MovementKind,
    StoredValueRules,
    check_idempotency_key,
    check_sold_amount,
    check_top_up_amount,
    journey_movements,
    post_movements,
)
from services.accounts.domain.errors import PageTokenError
from services.accounts.domain.paging import (
    decode_movements_token,
    decode_page_token,
    encode_movements_token,
)
from services.accounts.service_layer.stored_value import ServiceDayClock

RULES = StoredValueRules()


def rev(journey: str, revision: int, charge: int, card: str = "tok_card0001") -> ChargedRevision:
    return ChargedRevision(card, journey, revision, charge)


def test_top_up_amount_must_be_positive_capped_and_in_the_schemes_currency() -> None:
    assert check_top_up_amount(2000, "GBP", RULES).amount_minor == 2000
    assert check_top_up_amount(50_000, "GBP", RULES).amount_minor == 50_000
    for bad in (0, -1, 50_001, 10**15):
        with pytest.raises(BadAmountError):
            check_top_up_amount(bad, "GBP", RULES)
    with pytest.raises(CurrencyMismatchError):
        check_top_up_amount(1000, "EUR", RULES)
    with pytest.raises(BadAmountError):
        check_top_up_amount(1000, "", RULES)


def test_a_sold_top_up_has_no_maximum_but_must_be_positive_gbp() -> None:
    assert check_sold_amount(100_000, "GBP", RULES).amount_minor == 100_000
    with pytest.raises(BadAmountError):
        check_sold_amount(0, "GBP", RULES)
    with pytest.raises(CurrencyMismatchError):
        check_sold_amount(100, "EUR", RULES)


def test_idempotency_keys_are_short_and_plain() -> None:
    assert check_idempotency_key("order-42:a.b_c") == "order-42:a.b_c"
    for bad in ("", "a" * 129, "has space", "nul\x00", "é"):
        with pytest.raises(BadIdempotencyKeyError):
            check_idempotency_key(bad)


def test_each_revision_debits_its_delta_and_a_withdrawal_refunds() -> None:
    standing: dict[str, JourneyStanding] = {}
    moves = journey_movements(standing, [rev("j1", 1, 280), rev("j1", 2, 170), rev("j1", 3, 0)])
    assert [(m.revision, m.amount_minor) for m in moves] == [(1, -280), (2, 110), (3, 170)]
    assert all(m.kind is MovementKind.JOURNEY for m in moves)
    assert standing["j1"] == JourneyStanding(3, 0)


def test_a_replayed_or_older_revision_moves_nothing() -> None:
    standing = {"j1": JourneyStanding(2, 170)}
    assert journey_movements(standing, [rev("j1", 1, 280), rev("j1", 2, 170)]) == []
    assert standing["j1"] == JourneyStanding(2, 170)


def test_a_revision_with_the_same_charge_moves_nothing_but_advances() -> None:
    standing = {"j1": JourneyStanding(1, 280)}
    assert journey_movements(standing, [rev("j1", 2, 280)]) == []
    assert standing["j1"] == JourneyStanding(2, 280)


@given(st.lists(st.tuples(st.integers(1, 6), st.integers(0, 900)), max_size=12))
def test_debits_always_sum_to_minus_the_latest_charge(revs: list[tuple[int, int]]) -> None:
    """Whatever the order and repeats, what was debited is the latest applied charge."""
    standing: dict[str, JourneyStanding] = {}
    moves = journey_movements(standing, [rev("j", n, c) for n, c in revs])
    total = sum(m.amount_minor for m in moves)
    assert total == -(standing["j"].charged_minor if "j" in standing else 0)


def move(amount: int, card: str = "tok_card0001") -> Movement:
    kind = MovementKind.TOP_UP if amount > 0 else MovementKind.JOURNEY
    return Movement(card, kind, "s", 0, amount)


def test_going_negative_adds_once_and_coming_back_removes_once() -> None:
    posting = post_movements({}, [move(500), move(-400), move(-300), move(-100), move(200)])
    assert [p.balance_after_minor for p in posting.posted] == [500, 100, -200, -300, -100]
    assert posting.transitions == (DenyListTransition("tok_card0001", add=True),)
    assert posting.balances["tok_card0001"] == CardBalance(-100, deny_listed=True)
    back = post_movements(posting.balances, [move(50), move(50), move(1000)])
    assert back.transitions == (DenyListTransition("tok_card0001", add=False),)
    assert back.balances["tok_card0001"] == CardBalance(1000, deny_listed=False)


def test_exactly_zero_is_not_debt() -> None:
    posting = post_movements({"c": CardBalance(-250, True)}, [move(250, "c")])
    assert posting.transitions == (DenyListTransition("c", add=False),)
    assert post_movements({}, [move(0, "d")]).transitions == ()


def test_service_day_starts_at_half_past_four_london_time() -> None:
    clock = ServiceDayClock("Europe/London", time(4, 30))
    assert clock.service_day(datetime(2026, 7, 1, 3, 0, tzinfo=UTC)) == date(2026, 6, 30)
    assert clock.service_day(datetime(2026, 7, 1, 3, 31, tzinfo=UTC)) == date(2026, 7, 1)


def test_movement_tokens_are_per_card_and_not_history_tokens() -> None:
    token = encode_movements_token(42, "tok_card0001")
    assert decode_movements_token(token, "tok_card0001") == 42
    assert decode_movements_token("", "tok_card0001") is None
    with pytest.raises(PageTokenError):
        decode_movements_token(token, "tok_card0002")
    with pytest.raises(PageTokenError):
        decode_page_token(token, "tok_card0001")
    with pytest.raises(PageTokenError):
        decode_movements_token(token[:-1] + "x", "tok_card0001")
