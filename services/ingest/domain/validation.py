"""Validation of taps submitted by validators. Pure: no I/O, no clock reads."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

MAX_BATCH_TAPS = 5_000
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_TAP_AGE = timedelta(days=35)
MAX_ID_LENGTH = 128
_TOKEN = re.compile(r"^[A-Za-z0-9_\-:.]{8,128}$")
_DIGITS = re.compile(r"^[0-9 -]{12,23}$")


class RejectReason(StrEnum):
    """Stable reason codes carried on REJECTED acks and dead letters."""

    MISSING_DEVICE_ID = "MISSING_DEVICE_ID"
    MISSING_SEQUENCE_NUMBER = "MISSING_SEQUENCE_NUMBER"
    MISSING_CARD_TOKEN = "MISSING_CARD_TOKEN"
    RAW_CARD_NUMBER = "RAW_CARD_NUMBER"
    BAD_CARD_TOKEN = "BAD_CARD_TOKEN"
    MISSING_STOP_ID = "MISSING_STOP_ID"
    UNKNOWN_TAP_KIND = "UNKNOWN_TAP_KIND"
    MISSING_TAPPED_AT = "MISSING_TAPPED_AT"
    CLOCK_SKEW = "CLOCK_SKEW"
    TAP_TOO_OLD = "TAP_TOO_OLD"
    BAD_UTC_OFFSET = "BAD_UTC_OFFSET"
    FIELD_TOO_LONG = "FIELD_TOO_LONG"
    BATCH_TOO_LARGE = "BATCH_TOO_LARGE"


@dataclass(frozen=True, slots=True)
class TapSubmission:
    """The fields of a submitted tap that validation looks at."""

    device_id: str
    sequence_number: int
    card_token: str
    tapped_at: datetime | None
    utc_offset_minutes: int
    stop_id: str
    kind: str  # "entry" | "exit" | "board" | anything else a broken validator sent
    route_id: str = ""
    operator_id: str = ""


def looks_like_card_number(value: str) -> bool:
    """True when `value` is a plausible raw PAN (12-19 digits passing Luhn): never accept those."""
    if not _DIGITS.match(value):
        return False
    digits = [int(c) for c in value if c.isdigit()]
    if not 12 <= len(digits) <= 19:
        return False
    checksum = 0
    for i, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if i % 2 == 1 else digit
        checksum += doubled - 9 if doubled > 9 else doubled
    return checksum % 10 == 0


def validate_tap(tap: TapSubmission, received_at: datetime) -> tuple[RejectReason, str] | None:
    """None when `tap` is acceptable, else (reason code, human detail without personal data)."""
    checks: list[tuple[bool, RejectReason, str]] = [
        (not tap.device_id, RejectReason.MISSING_DEVICE_ID, "device_id is empty"),
        (tap.sequence_number <= 0, RejectReason.MISSING_SEQUENCE_NUMBER, "sequence_number < 1"),
        (not tap.card_token, RejectReason.MISSING_CARD_TOKEN, "card_token is empty"),
        (
            bool(tap.card_token) and looks_like_card_number(tap.card_token),
            RejectReason.RAW_CARD_NUMBER,
            "card_token looks like a raw card number; send the token",
        ),
        (
            bool(tap.card_token) and not _TOKEN.match(tap.card_token),
            RejectReason.BAD_CARD_TOKEN,
            "card_token must be 8-128 characters of [A-Za-z0-9_-:.]",
        ),
        (not tap.stop_id, RejectReason.MISSING_STOP_ID, "stop_id is empty"),
        (
            tap.kind not in {"entry", "exit", "board"},
            RejectReason.UNKNOWN_TAP_KIND,
            "kind must be ENTRY, EXIT or BOARD",
        ),
        (tap.tapped_at is None, RejectReason.MISSING_TAPPED_AT, "tapped_at is missing"),
        (
            not -14 * 60 <= tap.utc_offset_minutes <= 14 * 60,
            RejectReason.BAD_UTC_OFFSET,
            "utc_offset_minutes outside -840..840",
        ),
        (
            any(
                len(v) > MAX_ID_LENGTH
                for v in (tap.device_id, tap.stop_id, tap.route_id, tap.operator_id)
            ),
            RejectReason.FIELD_TOO_LONG,
            f"an id is longer than {MAX_ID_LENGTH} characters",
        ),
    ]
    for failed, reason, detail in checks:
        if failed:
            return reason, detail
    assert tap.tapped_at is not None
    if tap.tapped_at - received_at > MAX_CLOCK_SKEW:
        return RejectReason.CLOCK_SKEW, "tapped_at is more than 5 minutes in the future"
    if received_at - tap.tapped_at > MAX_TAP_AGE:
        return RejectReason.TAP_TOO_OLD, "tapped_at is more than 35 days old"
    return None
