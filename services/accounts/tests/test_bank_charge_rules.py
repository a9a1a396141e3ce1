"""Bank-card mode's pure rules: aggregation, when a day is due, the recovery schedule, the
deny-list transitions; and the simulated acquirer's idempotency and configurable declines."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from clearway.money import Money
from services.accounts.adapters.simulated_acquirer import SimulatedAcquirer
from services.accounts.domain.bank_charges import (
    DEFAULT_RETRY_OFFSETS,
    MAX_RETRIES,
    BankChargeKind,
    BankChargeStatus,
    ChargeState,
    DayDelta,
    RecoverySchedule,
    after_outcome,
    amount_to_bill,
    attempt_key,
    charge_kind,
    day_deltas,
    day_due_at,
    deny_list_change,
    is_bank_card,
    outstanding_minor,
)

T = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
D = date(2026, 11, 20)
BK = "bk_" + "A" * 43


def test_only_bk_tokens_are_bank_cards() -> None:
    assert is_bank_card(BK)
    assert not is_bank_card("sc_04a2b9c1d25e80")
    assert not is_bank_card("tok_abcdef12")


def test_a_days_total_is_the_sum_of_its_journeys_revision_deltas() -> None:
    deltas = day_deltas(
        [
            DayDelta(BK, D, 280),  # journey a, revision 1
            DayDelta(BK, D, 350),  # journey b, revision 1
            DayDelta(BK, D, -110),  # journey a, revision 2 (an adjustment down)
            DayDelta(BK, D + timedelta(days=1), 170),
            DayDelta("bk_other", D, 100),
            DayDelta("bk_other", D, -100),  # withdrawn: the day nets to zero, still known
        ]
    )
    assert deltas == {(BK, D): 520, (BK, D + timedelta(days=1)): 170, ("bk_other", D): 0}


def test_a_day_bills_the_difference_to_what_it_was_billed() -> None:
    assert amount_to_bill(630, 0) == 630
    assert amount_to_bill(750, 630) == 120
    assert amount_to_bill(0, 750) == -750
    assert charge_kind(1, 630) is BankChargeKind.CHARGE
    assert charge_kind(2, 120) is BankChargeKind.ADJUSTMENT
    assert charge_kind(3, -750) is BankChargeKind.REFUND
    assert attempt_key("bc-1", 3) == "bc-1:3"


def test_a_day_is_due_after_the_next_days_start_plus_the_delay_in_local_time() -> None:
    winter = day_due_at(D, "Europe/London", time(4, 30), timedelta(hours=1))
    assert winter == datetime(2026, 11, 21, 5, 30, tzinfo=UTC)
    # Summer time: 04:30 BST is 03:30 UTC (and the clocks change on 2026-03-29).
    summer = day_due_at(date(2026, 3, 28), "Europe/London", time(4, 30), timedelta(0))
    assert summer == datetime(2026, 3, 29, 3, 30, tzinfo=UTC)


def test_the_schedule_has_six_retries_all_within_fourteen_days_of_the_first_decline() -> None:
    schedule = RecoverySchedule()
    times = [schedule.retry_at(T, n) for n in range(MAX_RETRIES + 1)]
    assert times[-1] is None
    retries = [t for t in times if t is not None]
    assert len(retries) == MAX_RETRIES
    assert retries == sorted(retries)
    assert all(schedule.within_window(T, t) for t in retries)
    assert retries[0] == T + timedelta(hours=1)
    assert retries[-1] == T + timedelta(days=13)


def test_a_scaled_schedule_shrinks_every_offset() -> None:
    schedule = RecoverySchedule(scale=1 / 86_400)  # a day becomes a second
    assert schedule.retry_at(T, 2) == T + timedelta(seconds=1)
    assert schedule.retry_at(T, 5) == T + timedelta(seconds=13)
    assert not schedule.within_window(T, T + timedelta(seconds=14))


@pytest.mark.parametrize(
    "offsets",
    [
        tuple(timedelta(hours=h) for h in range(1, 8)),  # seven retries
        (timedelta(days=1), timedelta(hours=1)),  # not increasing
        (timedelta(days=15),),  # outside the window
    ],
)
def test_a_schedule_beyond_the_card_scheme_rules_is_refused(
    offsets: tuple[timedelta, ...],
) -> None:
    with pytest.raises(ValueError):
        RecoverySchedule(offsets=offsets)


def test_a_first_decline_starts_recovery_and_six_more_declines_leave_it_unrecovered() -> None:
    schedule = RecoverySchedule()
    state = after_outcome(ChargeState(), False, T, schedule)
    assert state == ChargeState(BankChargeStatus.DECLINED, 0, T, T + timedelta(hours=1))
    seen = []
    for offset in DEFAULT_RETRY_OFFSETS:
        assert state.next_attempt_at == T + offset
        state = after_outcome(state, False, T + offset, schedule)
        seen.append((state.status, state.retries))
    assert seen == [(BankChargeStatus.RECOVERING, n) for n in range(1, 6)] + [
        (BankChargeStatus.UNRECOVERED, 6)
    ]
    assert state.next_attempt_at is None
    assert state.first_declined_at == T


def test_an_approval_settles_a_charge_charged_or_recovered() -> None:
    schedule = RecoverySchedule()
    assert after_outcome(ChargeState(), True, T, schedule).status is BankChargeStatus.CHARGED
    declined = after_outcome(ChargeState(), False, T, schedule)
    recovered = after_outcome(declined, True, T + timedelta(hours=1), schedule)
    assert (recovered.status, recovered.next_attempt_at) == (BankChargeStatus.RECOVERED, None)
    unrecovered = ChargeState(BankChargeStatus.UNRECOVERED, 6, T, None)
    paid = after_outcome(unrecovered, True, T + timedelta(days=20), schedule, automatic=False)
    assert paid.status is BankChargeStatus.RECOVERED


def test_a_declined_payment_by_the_traveller_changes_nothing() -> None:
    schedule = RecoverySchedule()
    declined = after_outcome(ChargeState(), False, T, schedule)
    assert after_outcome(declined, False, T, schedule, automatic=False) == declined


def test_a_card_is_listed_while_any_charge_is_in_debt() -> None:
    s = BankChargeStatus
    assert deny_list_change(False, [s.CHARGED, s.DECLINED]) is True
    assert deny_list_change(True, [s.CHARGED, s.RECOVERING]) is None
    assert deny_list_change(True, [s.UNRECOVERED]) is None
    assert deny_list_change(True, [s.CHARGED, s.RECOVERED, s.PENDING]) is False
    assert deny_list_change(False, [s.PENDING]) is None
    owed = {"a": (s.DECLINED, 630), "b": (s.CHARGED, 100), "c": (s.UNRECOVERED, 50)}
    assert outstanding_minor(owed) == 680


async def test_the_simulated_acquirer_answers_a_key_once_and_flips_on_request() -> None:
    acquirer = SimulatedAcquirer.from_env({"CLEARWAY_ACQUIRER_DECLINE_TOKENS": f"{BK}, "})
    gbp = Money(630, "GBP")
    first = await acquirer.charge(BK, gbp, "c:1")
    assert (first.approved, first.reason) == (False, "DO_NOT_HONOUR")
    acquirer.approve([BK])
    assert await acquirer.charge(BK, gbp, "c:1") == first  # same key: same outcome
    second = await acquirer.charge(BK, gbp, "c:2")
    assert second.approved and second.reference.startswith("sim-")
    assert len(acquirer.calls) == 2
    refund = await SimulatedAcquirer(decline_tokens={BK}).charge(BK, Money(-100, "GBP"), "r:1")
    assert refund.approved


def test_the_simulated_acquirer_can_decline_by_rule() -> None:
    acquirer = SimulatedAcquirer.from_env({"CLEARWAY_ACQUIRER_DECLINE_MOD": "1"})
    assert acquirer.declines(BK)
    acquirer.approve([BK])
    assert not acquirer.declines(BK)
    assert not SimulatedAcquirer.from_env({}).declines(BK)
