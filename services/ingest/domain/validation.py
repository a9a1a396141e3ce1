"""Validation of taps submitted by validators. Pure: no I/O, no clock reads.

`validate_tap` gives one `Verdict` per tap. It runs its checks in a fixed order, the order
in which `RejectReason` lists its codes, and the first failure wins. It never raises for
any values of `TapSubmission`'s declared types (huge strings, out-of-range integers,
unknown kinds) and rejects an oversize string by its length alone, without reading it.
A verdict's detail names the field and the rule; it never repeats what the tap sent.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType

from clearway.card_tokens import (
    card_token_form,
    is_or_contains_card_number,
    looks_like_card_number,
)

__all__ = [
    "DEFAULT_POLICY",
    "MAX_BATCH_TAPS",
    "MAX_ID_LENGTH",
    "REASON_FIELDS",
    "REASON_MEANINGS",
    "TAP_KINDS",
    "DeviceScope",
    "RejectReason",
    "TapSubmission",
    "ValidationPolicy",
    "Verdict",
    "classify_card_token",
    "id_problem",
    "looks_like_card_number",
    "tapped_at_of",
    "validate_batch_size",
    "validate_tap",
]

MAX_BATCH_TAPS = 5_000
MAX_ID_LENGTH = 128
MAX_SEQUENCE_NUMBER = 2**64 - 1  # the proto field is a uint64
# The range of google.protobuf.Timestamp: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799
MAX_TIMESTAMP_NANOS = 999_999_999
MAX_UTC_OFFSET_MINUTES = 14 * 60  # UTC-14:00 .. UTC+14:00 covers every timezone
TAP_KINDS = frozenset({"entry", "exit", "board"})
# Control, format, surrogate, line and paragraph separator characters are never part of an id.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RejectReason(StrEnum):
    """Stable reason codes carried on REJECTED acks and dead letters.

    Listed in the order `validate_tap` checks them (BATCH_TOO_LARGE concerns the whole
    batch and comes first); REASON_MEANINGS says what each one means.
    """

    BATCH_TOO_LARGE = "BATCH_TOO_LARGE"
    MISSING_DEVICE_ID = "MISSING_DEVICE_ID"
    BAD_DEVICE_ID = "BAD_DEVICE_ID"
    DEVICE_MISMATCH = "DEVICE_MISMATCH"
    MISSING_SEQUENCE_NUMBER = "MISSING_SEQUENCE_NUMBER"
    MISSING_CARD_TOKEN = "MISSING_CARD_TOKEN"
    RAW_CARD_NUMBER = "RAW_CARD_NUMBER"
    BAD_CARD_TOKEN = "BAD_CARD_TOKEN"
    MISSING_STOP_ID = "MISSING_STOP_ID"
    BAD_STOP_ID = "BAD_STOP_ID"
    STOP_NOT_ALLOWED = "STOP_NOT_ALLOWED"
    BAD_ROUTE_ID = "BAD_ROUTE_ID"
    ROUTE_NOT_ALLOWED = "ROUTE_NOT_ALLOWED"
    MISSING_OPERATOR_ID = "MISSING_OPERATOR_ID"
    BAD_OPERATOR_ID = "BAD_OPERATOR_ID"
    OPERATOR_MISMATCH = "OPERATOR_MISMATCH"
    UNKNOWN_TAP_KIND = "UNKNOWN_TAP_KIND"
    BAD_RIDER_CATEGORY = "BAD_RIDER_CATEGORY"
    BAD_FARE_MEDIA = "BAD_FARE_MEDIA"
    MISSING_TAPPED_AT = "MISSING_TAPPED_AT"
    BAD_TAPPED_AT = "BAD_TAPPED_AT"
    BAD_UTC_OFFSET = "BAD_UTC_OFFSET"
    CLOCK_SKEW = "CLOCK_SKEW"
    TAP_TOO_OLD = "TAP_TOO_OLD"


_R = RejectReason
_ID_RULE = (
    f"1-{MAX_ID_LENGTH} characters, no control or format characters, "
    "no leading or trailing whitespace"
)

REASON_FIELDS: Mapping[RejectReason, str] = MappingProxyType(
    {
        _R.BATCH_TOO_LARGE: "taps (the batch)",
        _R.MISSING_DEVICE_ID: "device_id",
        _R.BAD_DEVICE_ID: "device_id",
        _R.DEVICE_MISMATCH: "device_id",
        _R.MISSING_SEQUENCE_NUMBER: "sequence_number",
        _R.MISSING_CARD_TOKEN: "card_token",
        _R.RAW_CARD_NUMBER: "card_token",
        _R.BAD_CARD_TOKEN: "card_token",
        _R.MISSING_STOP_ID: "stop_id",
        _R.BAD_STOP_ID: "stop_id",
        _R.STOP_NOT_ALLOWED: "stop_id",
        _R.BAD_ROUTE_ID: "route_id",
        _R.ROUTE_NOT_ALLOWED: "route_id",
        _R.MISSING_OPERATOR_ID: "operator_id",
        _R.BAD_OPERATOR_ID: "operator_id",
        _R.OPERATOR_MISMATCH: "operator_id",
        _R.UNKNOWN_TAP_KIND: "kind",
        _R.BAD_RIDER_CATEGORY: "rider_category_id",
        _R.BAD_FARE_MEDIA: "fare_media_id",
        _R.MISSING_TAPPED_AT: "tapped_at",
        _R.BAD_TAPPED_AT: "tapped_at",
        _R.BAD_UTC_OFFSET: "utc_offset_minutes",
        _R.CLOCK_SKEW: "tapped_at",
        _R.TAP_TOO_OLD: "tapped_at",
    }
)
"""The tap field each reason code is about."""

REASON_MEANINGS: Mapping[RejectReason, str] = MappingProxyType(
    {
        _R.BATCH_TOO_LARGE: f"the batch holds more than {MAX_BATCH_TAPS} taps; every tap of it is "
        "rejected",
        _R.MISSING_DEVICE_ID: "device_id is empty",
        _R.BAD_DEVICE_ID: f"device_id is not an id ({_ID_RULE})",
        _R.DEVICE_MISMATCH: "device_id is not the device that signed the batch",
        _R.MISSING_SEQUENCE_NUMBER: "sequence_number is 0 (unset) or above 2^64-1",
        _R.MISSING_CARD_TOKEN: "card_token is empty",
        _R.RAW_CARD_NUMBER: "card_token is or contains a card number (PAN); it is never stored",
        _R.BAD_CARD_TOKEN: "card_token is none of the forms sc_..., bk_..., tok_...",
        _R.MISSING_STOP_ID: "stop_id is empty",
        _R.BAD_STOP_ID: f"stop_id is not an id ({_ID_RULE})",
        _R.STOP_NOT_ALLOWED: "stop_id is not a stop the device is registered at",
        _R.BAD_ROUTE_ID: f"route_id is set but not an id ({_ID_RULE})",
        _R.ROUTE_NOT_ALLOWED: "route_id is not a route of the device, or is set on a station gate",
        _R.MISSING_OPERATOR_ID: "operator_id is empty",
        _R.BAD_OPERATOR_ID: f"operator_id is not an id ({_ID_RULE})",
        _R.OPERATOR_MISMATCH: "operator_id is not the operator that owns the device",
        _R.UNKNOWN_TAP_KIND: "kind is not ENTRY, EXIT or BOARD",
        _R.BAD_RIDER_CATEGORY: f"rider_category_id is set but not an id ({_ID_RULE})",
        _R.BAD_FARE_MEDIA: f"fare_media_id is set but not an id ({_ID_RULE})",
        _R.MISSING_TAPPED_AT: "tapped_at is absent",
        _R.BAD_TAPPED_AT: "tapped_at is outside 0001-01-01..9999-12-31 UTC or its nanos outside "
        "0..999999999",
        _R.BAD_UTC_OFFSET: "utc_offset_minutes is outside -840..840",
        _R.CLOCK_SKEW: "tapped_at is more than max_clock_skew (default 5 minutes) in the future",
        _R.TAP_TOO_OLD: "tapped_at is more than max_tap_age (default 14 days) in the past",
    }
)
"""One line per reason code: what was wrong with the tap."""


@dataclass(frozen=True, slots=True)
class TapSubmission:
    """The raw fields of a submitted tap, as received (no conversion by the caller)."""

    device_id: str
    sequence_number: int
    card_token: str
    tapped_at_seconds: int | None  # None when the Timestamp field is absent
    tapped_at_nanos: int
    utc_offset_minutes: int
    stop_id: str
    kind: str  # "entry" | "exit" | "board" | anything else a broken validator sent
    route_id: str = ""
    operator_id: str = ""
    rider_category_id: str = ""
    fare_media_id: str = ""


@dataclass(frozen=True, slots=True)
class DeviceScope:
    """What the device registry says about the device that signed the batch."""

    device_id: str
    operator_id: str
    allowed_stop_ids: frozenset[str]
    allowed_route_ids: frozenset[str]  # empty: a station gate (taps must carry no route_id)


@dataclass(frozen=True, slots=True)
class ValidationPolicy:
    """How far a tap's time may be from the time ingest received it."""

    max_clock_skew: timedelta = timedelta(minutes=5)
    max_tap_age: timedelta = timedelta(days=14)
    late_after: timedelta = timedelta(minutes=15)


DEFAULT_POLICY = ValidationPolicy()


@dataclass(frozen=True, slots=True)
class Verdict:
    """What ingest makes of one tap."""

    reason: RejectReason | None  # None = acceptable
    # Names the field and the rule; never the card token or a card number, never the
    # content of an oversize field.
    detail: str
    late: bool = False  # acceptable, but tapped more than policy.late_after before received_at
    tapped_at: datetime | None = None  # the UTC instant, when representable

    @property
    def accepted(self) -> bool:
        """True when the tap is acceptable."""
        return self.reason is None


_Problem = tuple[RejectReason, str]


def id_problem(value: str) -> str | None:
    """Why `value` is not an id (a phrase such as "empty"), or None. Reads no more than
    MAX_ID_LENGTH characters of it, so a huge value costs nothing but its len()."""
    if not value:
        return "empty"
    if len(value) > MAX_ID_LENGTH:
        return f"longer than {MAX_ID_LENGTH} characters ({len(value)})"
    if value[0].isspace() or value[-1].isspace():
        return "leading or trailing whitespace"
    if value.isascii() and value.isprintable():  # the usual id: no character is forbidden
        return None
    if any(unicodedata.category(c) in _FORBIDDEN_CATEGORIES for c in value):
        return "a control or format character"
    return None


def _check_id(
    value: str, field: str, missing: RejectReason | None, bad: RejectReason
) -> _Problem | None:
    """A problem with a required (`missing` set) or optional id field, or None."""
    if not value:
        return None if missing is None else (missing, f"{field} is empty")
    problem = id_problem(value)
    return None if problem is None else (bad, f"{field}: {problem}")


def classify_card_token(value: str) -> tuple[RejectReason | None, str]:
    """(None, form) for a card token, else (MISSING_CARD_TOKEN | RAW_CARD_NUMBER |
    BAD_CARD_TOKEN, detail). The detail never repeats the value."""
    if not value:
        return _R.MISSING_CARD_TOKEN, "card_token is empty"
    form = card_token_form(value)
    if form is not None:
        return None, f"a {form.name.lower().replace('_', ' ')} token"
    if is_or_contains_card_number(value):
        return _R.RAW_CARD_NUMBER, (
            "card_token is or contains a card number; send the bk_ token computed at the edge"
        )
    return _R.BAD_CARD_TOKEN, (
        "card_token must be sc_ + 8, 14 or 20 lowercase hex digits, bk_ + 43 base64url "
        "characters, or tok_ + 8-64 characters of [A-Za-z0-9], and nothing else"
    )


def _check_device(tap: TapSubmission, device: DeviceScope) -> _Problem | None:
    problem = _check_id(tap.device_id, "device_id", _R.MISSING_DEVICE_ID, _R.BAD_DEVICE_ID)
    if problem is None and tap.device_id != device.device_id:
        return _R.DEVICE_MISMATCH, f"device_id is not {device.device_id}, which signed the batch"
    return problem


def _check_sequence_number(tap: TapSubmission, device: DeviceScope) -> _Problem | None:
    if 1 <= tap.sequence_number <= MAX_SEQUENCE_NUMBER:
        return None
    return _R.MISSING_SEQUENCE_NUMBER, "sequence_number must be 1..2^64-1"


def _check_card_token(tap: TapSubmission, device: DeviceScope) -> _Problem | None:
    reason, detail = classify_card_token(tap.card_token)
    return None if reason is None else (reason, detail)


def _check_stop(tap: TapSubmission, device: DeviceScope) -> _Problem | None:
    problem = _check_id(tap.stop_id, "stop_id", _R.MISSING_STOP_ID, _R.BAD_STOP_ID)
    if problem is None and tap.stop_id not in device.allowed_stop_ids:
        return _R.STOP_NOT_ALLOWED, f"stop_id is not a stop device {device.device_id} serves"
    return problem


def _check_route(tap: TapSubmission, device: DeviceScope) -> _Problem | None:
    problem = _check_id(tap.route_id, "route_id", None, _R.BAD_ROUTE_ID)
    if problem is not None or not tap.route_id:
        return problem
    if not device.allowed_route_ids:
        return _R.ROUTE_NOT_ALLOWED, f"device {device.device_id} is a station gate: no route_id"
    if tap.route_id not in device.allowed_route_ids:
        return _R.ROUTE_NOT_ALLOWED, f"route_id is not a route device {device.device_id} serves"
    return None


def _check_operator(tap: TapSubmission, device: DeviceScope) -> _Problem | None:
    problem = _check_id(tap.operator_id, "operator_id", _R.MISSING_OPERATOR_ID, _R.BAD_OPERATOR_ID)
    if problem is None and tap.operator_id != device.operator_id:
        return _R.OPERATOR_MISMATCH, f"operator_id is not {device.operator_id}, the device's owner"
    return problem


def _check_kind(tap: TapSubmission, device: DeviceScope) -> _Problem | None:
    # The length test first: a huge kind is refused without hashing it.
    if len(tap.kind) <= len("entry") and tap.kind in TAP_KINDS:
        return None
    return _R.UNKNOWN_TAP_KIND, "kind must be ENTRY, EXIT or BOARD"


def _check_fare_fields(tap: TapSubmission, device: DeviceScope) -> _Problem | None:
    return _check_id(
        tap.rider_category_id, "rider_category_id", None, _R.BAD_RIDER_CATEGORY
    ) or _check_id(tap.fare_media_id, "fare_media_id", None, _R.BAD_FARE_MEDIA)


_FIELD_CHECKS: tuple[Callable[[TapSubmission, DeviceScope], _Problem | None], ...] = (
    _check_device,
    _check_sequence_number,
    _check_card_token,
    _check_stop,
    _check_route,
    _check_operator,
    _check_kind,
    _check_fare_fields,
)


def tapped_at_of(seconds: int | None, nanos: int) -> datetime | None:
    """The UTC instant of a protobuf Timestamp's fields (to the microsecond), or None when
    absent or outside the Timestamp range."""
    if seconds is None or not MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS:
        return None
    if not 0 <= nanos <= MAX_TIMESTAMP_NANOS:
        return None
    return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)


def _check_time(
    tap: TapSubmission, tapped_at: datetime | None, received_at: datetime, policy: ValidationPolicy
) -> _Problem | None:
    if tap.tapped_at_seconds is None:
        return _R.MISSING_TAPPED_AT, "tapped_at is absent"
    if tapped_at is None:
        return _R.BAD_TAPPED_AT, (
            "tapped_at must be within 0001-01-01T00:00:00Z..9999-12-31T23:59:59Z "
            "with nanos 0..999999999"
        )
    if not -MAX_UTC_OFFSET_MINUTES <= tap.utc_offset_minutes <= MAX_UTC_OFFSET_MINUTES:
        return _R.BAD_UTC_OFFSET, "utc_offset_minutes must be within -840..840"
    # Differences, not sums: received_at + a timedelta may overflow, a difference cannot.
    if tapped_at - received_at > policy.max_clock_skew:
        return _R.CLOCK_SKEW, f"tapped_at is more than {policy.max_clock_skew} in the future"
    if received_at - tapped_at > policy.max_tap_age:
        return _R.TAP_TOO_OLD, f"tapped_at is more than {policy.max_tap_age} old"
    return None


def validate_tap(
    tap: TapSubmission,
    received_at: datetime,
    device: DeviceScope,
    policy: ValidationPolicy = DEFAULT_POLICY,
) -> Verdict:
    """The verdict on `tap`, received at `received_at` (timezone-aware) in a batch signed by
    `device`: the first failed check's reason, else acceptable (and maybe late)."""
    if received_at.utcoffset() is None:
        raise ValueError("received_at must be timezone-aware")
    tapped_at = tapped_at_of(tap.tapped_at_seconds, tap.tapped_at_nanos)
    for check in _FIELD_CHECKS:
        problem = check(tap, device)
        if problem is not None:
            return Verdict(problem[0], problem[1], tapped_at=tapped_at)
    problem = _check_time(tap, tapped_at, received_at, policy)
    if problem is not None:
        return Verdict(problem[0], problem[1], tapped_at=tapped_at)
    assert tapped_at is not None  # _check_time refused an absent or unrepresentable time
    if received_at - tapped_at > policy.late_after:
        return Verdict(
            None, f"late: tapped more than {policy.late_after} before receipt", True, tapped_at
        )
    return Verdict(None, "accepted", tapped_at=tapped_at)


def validate_batch_size(tap_count: int) -> Verdict | None:
    """BATCH_TOO_LARGE, given to every tap of a batch of more than MAX_BATCH_TAPS; else None."""
    if tap_count <= MAX_BATCH_TAPS:
        return None
    return Verdict(_R.BATCH_TOO_LARGE, f"a batch holds at most {MAX_BATCH_TAPS} taps")
