"""The dispute rules (pure): which leg a claim completes, the claim window, the exit time,
and what the re-priced revision means for the claim."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.accounts.domain.claims import (
    BadExitStopError,
    BadExitTimeError,
    ClaimRules,
    ClaimStatus,
    ClaimTooLateError,
    LegView,
    NotIncompleteError,
    check_claimed_fare,
    check_exit_stop,
    check_in_window,
    claim_outcome,
    claimed_exit_at,
    correction_tap_id,
    open_entry,
)

ENTRY_AT = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
RULES = ClaimRules()


def leg(incomplete: bool, to_stop: str = "", exit_at: datetime | None = None) -> LegView:
    return LegView(incomplete, "CMD", to_stop, ENTRY_AT, exit_at, "LUL", "")


def entry():
    return open_entry([leg(True)])


def test_the_claim_completes_the_first_entry_without_exit():
    found = open_entry([leg(False, "KGX", ENTRY_AT), leg(True)])
    assert (found.leg_index, found.stop_id, found.operator_id) == (1, "CMD", "LUL")


def test_a_complete_journey_or_an_exit_without_entry_is_not_incomplete():
    with pytest.raises(NotIncompleteError):
        open_entry([leg(False, "KGX", ENTRY_AT)])
    exit_only = LegView(True, "", "KGX", None, ENTRY_AT, "LUL", "")
    with pytest.raises(NotIncompleteError):
        open_entry([exit_only])


def test_a_claim_after_the_window_is_too_late():
    check_in_window(entry(), ENTRY_AT + timedelta(days=28), RULES)
    with pytest.raises(ClaimTooLateError) as caught:
        check_in_window(entry(), ENTRY_AT + timedelta(days=28, seconds=1), RULES)
    assert caught.value.code == "CLAIM_TOO_LATE"


def test_without_a_time_the_exit_is_estimated_a_typical_journey_after_the_entry():
    now = ENTRY_AT + timedelta(days=1)
    assert claimed_exit_at(entry(), None, None, now, RULES) == (
        ENTRY_AT + timedelta(minutes=20),
        True,
    )


def test_the_estimate_stays_before_the_cards_next_tap():
    now = ENTRY_AT + timedelta(days=1)
    next_tap = ENTRY_AT + timedelta(minutes=10)
    assert claimed_exit_at(entry(), None, next_tap, now, RULES) == (
        ENTRY_AT + timedelta(minutes=5),
        True,
    )


@pytest.mark.parametrize(
    "asked",
    [
        ENTRY_AT,  # not after the entry
        ENTRY_AT - timedelta(minutes=1),
        ENTRY_AT + timedelta(minutes=121),  # fares would not pair it with the entry
        ENTRY_AT + timedelta(minutes=40),  # after the card's next tap
    ],
)
def test_an_exit_time_that_would_not_pair_with_the_entry_is_refused(asked):
    now = ENTRY_AT + timedelta(days=1)
    with pytest.raises(BadExitTimeError):
        claimed_exit_at(entry(), asked, ENTRY_AT + timedelta(minutes=30), now, RULES)


def test_an_exit_time_in_the_future_is_refused():
    with pytest.raises(BadExitTimeError):
        claimed_exit_at(
            entry(), ENTRY_AT + timedelta(minutes=10), None, ENTRY_AT + timedelta(minutes=5), RULES
        )


def test_an_asked_exit_time_is_kept():
    asked = ENTRY_AT + timedelta(minutes=35)
    assert claimed_exit_at(entry(), asked, None, ENTRY_AT + timedelta(days=1), RULES) == (
        asked,
        False,
    )


@pytest.mark.parametrize("stop", ["", " KGX", "KGX\x00", "x" * 65, "../etc"])
def test_a_malformed_exit_stop_is_refused(stop):
    with pytest.raises(BadExitStopError):
        check_exit_stop(stop)


def test_a_claimed_leg_fares_quotes_without_a_fare_product_is_refused() -> None:
    check_claimed_fare(["Z1_OFFPEAK"])
    # An Underground entry and a bus stop's exit: no fare rule, charged nothing, so the
    # claim would refund the whole maximum fare.
    for products in ([""], ["Z1_OFFPEAK", ""], []):
        with pytest.raises(BadExitStopError):
            check_claimed_fare(products)


def test_a_lower_revision_refunds_the_difference_and_anything_else_is_rejected():
    assert claim_outcome(940, 330).status is ClaimStatus.REFUNDED
    assert claim_outcome(940, 330).refund_minor == 610
    assert claim_outcome(940, 940).status is ClaimStatus.REJECTED
    assert claim_outcome(940, 1000).refund_minor == 0


def test_correction_taps_are_named_like_ingests_taps():
    assert correction_tap_id(17) == "claims-accounts:17"
