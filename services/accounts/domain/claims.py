"""Disputes: a traveller's claim of a missing touch-out on an incomplete journey.

Pure rules, no I/O: which leg a claim completes, when the claimed exit may be, how late a
claim may come, and what the re-priced revision means for the claim. The claim itself
becomes a correction tap (an EXIT at the claimed stop and time) that fares prices like
any late tap; the refund is the adjustment fares publishes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from clearway.errors import ClearwayError, ErrorKind

CLAIM_DEVICE_ID = "claims-accounts"
MAX_STOP_ID_CHARS = 64
_STOP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]*")


class ClaimError(ClearwayError):
    """Base of the claim refusals; `code` is stable."""


class MissingJourneyIdError(ClaimError):
    """The claim names no journey."""

    code = "MISSING_JOURNEY_ID"


class BadExitStopError(ClaimError):
    """The exit stop is empty or not shaped like a GTFS stop id."""

    code = "BAD_EXIT_STOP"


class UnknownStopError(ClaimError):
    """The exit stop is not a stop of the fare data (as fares' QuoteFare says)."""

    code = "UNKNOWN_STOP"


class BadExitTimeError(ClaimError):
    """The claimed exit time is not after the entry, too long after it, after the card's
    next tap, or in the future."""

    code = "BAD_EXIT_TIME"


class UnknownJourneyError(ClaimError):
    """No journey of this id on this card (whether it exists elsewhere is not said)."""

    code = "UNKNOWN_JOURNEY"
    kind = ErrorKind.NOT_FOUND


class ClaimExistsError(ClaimError):
    """The journey was claimed before: one claim per journey."""

    code = "CLAIM_EXISTS"
    kind = ErrorKind.ALREADY_EXISTS


class NotIncompleteError(ClaimError):
    """The journey has no leg with an entry and no exit."""

    code = "NOT_INCOMPLETE"
    kind = ErrorKind.FAILED_PRECONDITION


class ClaimTooLateError(ClaimError):
    """The journey's entry is older than the claim window."""

    code = "CLAIM_TOO_LATE"
    kind = ErrorKind.FAILED_PRECONDITION


class JourneyChangedError(ClaimError):
    """The journey was re-priced while the claim was being checked: claim again."""

    code = "JOURNEY_CHANGED"
    kind = ErrorKind.FAILED_PRECONDITION


class FaresUnavailableError(ClaimError):
    """fares did not answer the stop check; nothing was recorded: retry."""

    code = "FARES_UNAVAILABLE"
    kind = ErrorKind.UNAVAILABLE


class ClaimStatus(StrEnum):
    """Where a claim stands."""

    PENDING = "pending"  # the correction tap is on its way to fares
    REFUNDED = "refunded"  # fares re-priced the journey lower: the difference came back
    REJECTED = "rejected"  # fares re-priced it, but not lower


@dataclass(frozen=True, slots=True)
class ClaimRules:
    """The scheme's dispute rules (documented in docs/accounts.md)."""

    window_days: int = 28
    # The default exit time: entry + a typical journey (20 minutes).
    default_journey: timedelta = timedelta(minutes=20)
    # The longest claimed journey: must not exceed the fare data's `incomplete_after`
    # (7200 s in the example feed), or fares would not pair the exit with the entry.
    max_journey: timedelta = timedelta(minutes=120)


@dataclass(frozen=True, slots=True)
class OpenEntry:
    """The leg a claim completes: an entry without an exit."""

    leg_index: int
    stop_id: str
    entry_at: datetime
    operator_id: str
    route_id: str


@dataclass(frozen=True, slots=True)
class LegView:
    """What the rules need of one priced leg."""

    incomplete: bool
    from_stop_id: str
    to_stop_id: str
    entry_at: datetime | None
    exit_at: datetime | None
    operator_id: str
    route_id: str


def check_exit_stop(stop_id: str) -> str:
    """The claimed stop id, if shaped like one (BAD_EXIT_STOP otherwise)."""
    if not stop_id or len(stop_id) > MAX_STOP_ID_CHARS or not _STOP_ID.fullmatch(stop_id):
        raise BadExitStopError(
            f"exit_stop_id must be 1-{MAX_STOP_ID_CHARS} of [A-Za-z0-9._:-], a stop of the fares"
        )
    return stop_id


def check_claimed_fare(fare_product_ids: Sequence[str]) -> None:
    """BAD_EXIT_STOP unless fares' quote of the claimed journey priced each leg by a fare
    product. A leg no fare rule matches (an Underground entry, a bus stop's exit) is
    charged nothing, so the claim would refund the whole maximum fare."""
    if not fare_product_ids or not all(fare_product_ids):
        raise BadExitStopError(
            "no fare goes from the entry's stop to this exit stop: claim the stop where you left"
        )


def open_entry(legs: list[LegView]) -> OpenEntry:
    """The first leg with an entry and no exit (NOT_INCOMPLETE when there is none: a
    complete journey, or one whose only incomplete leg is an exit without entry)."""
    for i, leg in enumerate(legs):
        if leg.incomplete and leg.entry_at is not None and not leg.to_stop_id:
            return OpenEntry(i, leg.from_stop_id, leg.entry_at, leg.operator_id, leg.route_id)
    raise NotIncompleteError("this journey has no entry without an exit to claim")


def check_in_window(entry: OpenEntry, now: datetime, rules: ClaimRules) -> None:
    """CLAIM_TOO_LATE once `window_days` have passed since the entry."""
    if now - entry.entry_at > timedelta(days=rules.window_days):
        raise ClaimTooLateError(
            f"a missing exit can be claimed within {rules.window_days} days of the entry"
        )


def claimed_exit_at(
    entry: OpenEntry,
    asked: datetime | None,
    next_tap_at: datetime | None,
    now: datetime,
    rules: ClaimRules,
) -> tuple[datetime, bool]:
    """The exit time of the correction tap and whether it was estimated.

    Without `asked`: entry + the typical journey, or halfway to the card's next tap when
    that comes sooner. An asked time must be after the entry, within `max_journey` of it,
    before the card's next tap and not in the future (BAD_EXIT_TIME), since otherwise the
    exit would not pair with this entry.
    """
    if asked is None:
        at = entry.entry_at + rules.default_journey
        if next_tap_at is not None and next_tap_at <= at:
            at = entry.entry_at + (next_tap_at - entry.entry_at) / 2
        return min(at, max(now, entry.entry_at + timedelta(seconds=1))), True
    if asked <= entry.entry_at:
        raise BadExitTimeError("exited_at must be after the entry")
    if asked - entry.entry_at > rules.max_journey:
        minutes = int(rules.max_journey.total_seconds() // 60)
        raise BadExitTimeError(f"exited_at must be within {minutes} minutes of the entry")
    if next_tap_at is not None and asked >= next_tap_at:
        raise BadExitTimeError("exited_at must be before the card's next tap")
    if asked > now:
        raise BadExitTimeError("exited_at is in the future")
    return asked, False


@dataclass(frozen=True, slots=True)
class ClaimOutcome:
    """What a re-priced revision that holds the correction tap means for the claim."""

    status: ClaimStatus
    refund_minor: int
    reason: str


def claim_outcome(claimed_charge_minor: int, result_charge_minor: int) -> ClaimOutcome:
    """Refunded by the difference when the revision charges less than the claimed one;
    rejected otherwise (the claimed exit does not make the journey cheaper)."""
    refund = claimed_charge_minor - result_charge_minor
    if refund > 0:
        return ClaimOutcome(ClaimStatus.REFUNDED, refund, "")
    return ClaimOutcome(ClaimStatus.REJECTED, 0, "NO_LOWER_FARE")


def correction_tap_id(sequence_number: int) -> str:
    """The correction tap's id, as ingest names taps: `<device_id>:<sequence_number>`."""
    return f"{CLAIM_DEVICE_ID}:{sequence_number}"
