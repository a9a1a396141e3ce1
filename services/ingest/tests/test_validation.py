from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.ingest.domain import RejectReason, TapSubmission, validate_tap
from services.ingest.domain.validation import looks_like_card_number

NOW = datetime(2026, 11, 26, 8, 30, tzinfo=UTC)
GOOD = TapSubmission(
    device_id="gate-KGX-01",
    sequence_number=7,
    card_token="tok_4f9a1c2b3d",
    tapped_at=NOW - timedelta(seconds=3),
    utc_offset_minutes=0,
    stop_id="KGX",
    kind="entry",
)


def test_a_well_formed_tap_is_accepted():
    assert validate_tap(GOOD, NOW) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"device_id": ""}, RejectReason.MISSING_DEVICE_ID),
        ({"sequence_number": 0}, RejectReason.MISSING_SEQUENCE_NUMBER),
        ({"card_token": ""}, RejectReason.MISSING_CARD_TOKEN),
        ({"card_token": "4111111111111111"}, RejectReason.RAW_CARD_NUMBER),
        ({"card_token": "has spaces!"}, RejectReason.BAD_CARD_TOKEN),
        ({"stop_id": ""}, RejectReason.MISSING_STOP_ID),
        ({"kind": "unknown"}, RejectReason.UNKNOWN_TAP_KIND),
        ({"tapped_at": None}, RejectReason.MISSING_TAPPED_AT),
        ({"utc_offset_minutes": 900}, RejectReason.BAD_UTC_OFFSET),
        ({"stop_id": "S" * 129}, RejectReason.FIELD_TOO_LONG),
        ({"tapped_at": NOW + timedelta(minutes=6)}, RejectReason.CLOCK_SKEW),
        ({"tapped_at": NOW - timedelta(days=36)}, RejectReason.TAP_TOO_OLD),
    ],
)
def test_each_defect_is_rejected_with_its_reason_code(change, reason):
    verdict = validate_tap(replace(GOOD, **change), NOW)
    assert verdict is not None
    assert verdict[0] is reason
    assert verdict[1]


def test_rejection_detail_never_echoes_the_card_number():
    verdict = validate_tap(replace(GOOD, card_token="4111111111111111"), NOW)
    assert verdict is not None
    assert "4111" not in verdict[1]


def test_luhn_detects_card_numbers_but_not_tokens():
    assert looks_like_card_number("4111 1111 1111 1111")
    assert not looks_like_card_number("4111111111111112")
    assert not looks_like_card_number("tok_4111111111111111")
