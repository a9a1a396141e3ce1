"""Bank-card mode: a bank card (`bk_` token) has no stored value. Each service day's
journeys are aggregated into one charge, taken through the payment gateway once the day
is over; a decline starts debt recovery and deny-lists the card until it is paid.

Pure rules, no I/O:
- **aggregation**: a day's total is the sum of its journeys' latest revisions' charges,
  kept as a running sum of revision deltas (`day_deltas`); each charge bills the
  difference between that total and what the day was billed so far (`amount_to_bill`),
  so a revision arriving after the day was charged bills an adjustment or a refund;
- **when**: day D is due at D+1 at the service day's start (local) + a delay (`day_due_at`);
- **recovery**: after a decline, at most 6 retries, all within 14 days of the first
  decline (`RecoverySchedule`), then the debt is `unrecovered` (still owed, still listed);
- **deny list**: a card is listed while any of its charges is in debt (`deny_list_change`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from clearway.card_tokens import CardTokenForm
from clearway.errors import ClearwayError, ErrorKind

MAX_RETRIES = 6
RECOVERY_WINDOW = timedelta(days=14)
# Offsets of the retries from the first decline (card-scheme transit rules: at most 6
# merchant-initiated retries within 14 days).
DEFAULT_RETRY_OFFSETS: tuple[timedelta, ...] = (
    timedelta(hours=1),
    timedelta(hours=6),
    timedelta(days=1),
    timedelta(days=3),
    timedelta(days=7),
    timedelta(days=13),
)


class BankChargeStatus(StrEnum):
    """Where a bank charge stands."""

    PENDING = "pending"  # not attempted yet, or an attempt's outcome is unknown
    CHARGED = "charged"  # approved on its first attempt (refunds: paid out)
    DECLINED = "declined"  # the first attempt was declined; retries scheduled
    RECOVERING = "recovering"  # one or more retries declined; more scheduled
    RECOVERED = "recovered"  # a retry (or the traveller's pay-now) was approved
    UNRECOVERED = "unrecovered"  # every retry declined: still owed, the card stays listed


IN_DEBT = frozenset(
    {BankChargeStatus.DECLINED, BankChargeStatus.RECOVERING, BankChargeStatus.UNRECOVERED}
)
SETTLED = frozenset({BankChargeStatus.CHARGED, BankChargeStatus.RECOVERED})


def is_bank_card(card_token: str) -> bool:
    """True for a tokenised bank card (`bk_`), which has no stored value."""
    return card_token.startswith(CardTokenForm.BANK_CARD.value)


class NoStoredValueError(ClearwayError):
    """A top-up of a bank card, which pays for its journeys by day charges instead."""

    kind = ErrorKind.FAILED_PRECONDITION
    code = "BANK_CARD_NO_STORED_VALUE"


def day_due_at(service_day: date, timezone: str, day_start: time, delay: timedelta) -> datetime:
    """When service day `service_day` is charged: the next day's start, local, + `delay`."""
    local = datetime.combine(service_day + timedelta(days=1), day_start, ZoneInfo(timezone))
    return local + delay


@dataclass(frozen=True, slots=True)
class DayDelta:
    """A change of one journey's charge, as the bank-card day total sees it."""

    card_token: str
    service_day: date
    amount_minor: int  # + more charged, - less


def day_deltas(changes: Iterable[DayDelta]) -> dict[tuple[str, date], int]:
    """The net change of each (card, service day) total; days that net to zero are kept
    (the day exists and is billed, maybe nothing)."""
    totals: dict[tuple[str, date], int] = {}
    for change in changes:
        key = (change.card_token, change.service_day)
        totals[key] = totals.get(key, 0) + change.amount_minor
    return totals


def amount_to_bill(total_minor: int, billed_minor: int) -> int:
    """What a due day's next charge is: its total minus what it was billed before
    (positive: a charge or an adjustment; negative: a refund; zero: nothing)."""
    return total_minor - billed_minor


class BankChargeKind(StrEnum):
    """A day's first charge, or a later difference (late taps, claims)."""

    CHARGE = "charge"
    ADJUSTMENT = "adjustment"
    REFUND = "refund"


def charge_kind(sequence: int, amount_minor: int) -> BankChargeKind:
    """The kind of a day's `sequence`-th charge (1-based) of `amount_minor`."""
    if amount_minor < 0:
        return BankChargeKind.REFUND
    return BankChargeKind.CHARGE if sequence == 1 else BankChargeKind.ADJUSTMENT


def attempt_key(charge_id: str, attempt: int) -> str:
    """The idempotency key of one attempt: the same on a retry of an unknown outcome."""
    return f"{charge_id}:{attempt}"


@dataclass(frozen=True, slots=True)
class RecoverySchedule:
    """Retries after a first decline, at `offsets` from it, all within `window`, each
    stretched by `scale` (tests shrink days to seconds)."""

    offsets: tuple[timedelta, ...] = DEFAULT_RETRY_OFFSETS
    window: timedelta = RECOVERY_WINDOW
    scale: float = 1.0

    def __post_init__(self) -> None:
        if len(self.offsets) > MAX_RETRIES:
            raise ValueError(f"at most {MAX_RETRIES} retries, got {len(self.offsets)}")
        if list(self.offsets) != sorted(self.offsets) or any(
            o <= timedelta(0) or o >= self.window for o in self.offsets
        ):
            raise ValueError("retry offsets must be increasing, positive and within the window")
        if self.scale <= 0:
            raise ValueError("scale must be > 0")

    def retry_at(self, first_declined_at: datetime, retries_done: int) -> datetime | None:
        """When the next retry is due, or None when every retry was used."""
        if retries_done >= len(self.offsets):
            return None
        return first_declined_at + self.offsets[retries_done] * self.scale

    def within_window(self, first_declined_at: datetime, at: datetime) -> bool:
        """True while `at` is inside the recovery window of the first decline."""
        return at < first_declined_at + self.window * self.scale


@dataclass(frozen=True, slots=True)
class ChargeState:
    """A charge's recovery state."""

    status: BankChargeStatus = BankChargeStatus.PENDING
    retries: int = 0  # automatic retries done (the first attempt is not a retry)
    first_declined_at: datetime | None = None
    next_attempt_at: datetime | None = None


def after_outcome(
    state: ChargeState,
    approved: bool,
    at: datetime,
    schedule: RecoverySchedule,
    *,
    automatic: bool = True,
) -> ChargeState:
    """The state after an attempt's outcome at `at`. An automatic attempt after a decline
    is a retry (counted); a traveller's pay-now is not, and a decline of it changes
    nothing. No retry is scheduled past the window: the charge is then unrecovered."""
    in_debt = state.status in IN_DEBT
    if approved:
        status = BankChargeStatus.RECOVERED if in_debt else BankChargeStatus.CHARGED
        return replace(state, status=status, next_attempt_at=None)
    if not automatic:
        return state
    if state.first_declined_at is None:  # the first decline: recovery starts
        first = at
        retries = 0
    else:
        first = state.first_declined_at
        retries = state.retries + 1 if in_debt else state.retries
    nxt = schedule.retry_at(first, retries)
    if nxt is not None and not schedule.within_window(first, nxt):
        nxt = None
    if nxt is None:
        status = BankChargeStatus.UNRECOVERED
    elif retries == 0:
        status = BankChargeStatus.DECLINED
    else:
        status = BankChargeStatus.RECOVERING
    return ChargeState(status, retries, first, nxt)


def deny_list_change(listed: bool, statuses: Iterable[BankChargeStatus]) -> bool | None:
    """True to add the card to the deny list, False to remove it, None for no change:
    listed while any of its charges is in debt."""
    owes = any(s in IN_DEBT for s in statuses)
    if owes and not listed:
        return True
    if not owes and listed:
        return False
    return None


def outstanding_minor(charges: Mapping[str, tuple[BankChargeStatus, int]]) -> int:
    """What a card owes: the sum of its charges in debt ({charge id: (status, amount)})."""
    return sum(amount for status, amount in charges.values() if status in IN_DEBT)
