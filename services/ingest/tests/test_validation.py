import operator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.domain import (
    MAX_BATCH_TAPS,
    REASON_FIELDS,
    REASON_MEANINGS,
    DeviceScope,
    RejectReason,
    TapSubmission,
    ValidationPolicy,
    Verdict,
    bank_card_token,
    id_problem,
    tapped_at_of,
    validate_batch_size,
    validate_tap,
)
from services.ingest.domain.validation import (
    MAX_TIMESTAMP_SECONDS,
    MIN_TIMESTAMP_SECONDS,
    looks_like_card_number,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "ingest-validation.md"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 26, 8, 30, tzinfo=UTC)
R = RejectReason


def timestamp(at: datetime) -> dict[str, int]:
    """The Timestamp fields of `at` (microsecond precision)."""
    since = at - EPOCH
    seconds = since // timedelta(seconds=1)
    micros = (since - timedelta(seconds=seconds)) // timedelta(microseconds=1)
    return {"tapped_at_seconds": seconds, "tapped_at_nanos": micros * 1000}


GATE = DeviceScope(
    device_id="gate-KGX-01",
    operator_id="LU",
    allowed_stop_ids=frozenset({"KGX", "KGX-N"}),
    allowed_route_ids=frozenset(),
)
BUS = DeviceScope(
    device_id="bus-LB-1234",
    operator_id="LB",
    allowed_stop_ids=frozenset({"S1", "S2"}),
    allowed_route_ids=frozenset({"73", "N73"}),
)
GOOD = TapSubmission(
    device_id="gate-KGX-01",
    sequence_number=7,
    card_token="tok_4f9a1c2b3d",
    utc_offset_minutes=0,
    stop_id="KGX",
    kind="entry",
    operator_id="LU",
    **timestamp(NOW - timedelta(seconds=3)),
)
ON_BUS = replace(GOOD, device_id="bus-LB-1234", operator_id="LB", stop_id="S1", route_id="73")


def test_a_well_formed_tap_is_accepted_with_its_instant():
    verdict = validate_tap(GOOD, NOW, GATE)
    assert verdict == Verdict(None, "accepted", late=False, tapped_at=NOW - timedelta(seconds=3))
    assert verdict.accepted


@pytest.mark.parametrize(
    "tap",
    [
        ON_BUS,
        replace(ON_BUS, route_id=""),  # a vehicle's tap without a route: not refused here
        replace(GOOD, kind="exit", rider_category_id="child", fare_media_id="contactless"),
        replace(GOOD, card_token="sc_04a2b9c1d25e80"),
        replace(GOOD, card_token=bank_card_token("4111 1111 1111 1111", bytes(range(32)))),
        replace(GOOD, stop_id="KGX-N", utc_offset_minutes=-840),
        replace(GOOD, device_id="gate KGX 01"),  # inner spaces are fine in an id
    ],
)
def test_well_formed_taps_are_accepted(tap):
    device = BUS if tap.device_id.startswith("bus") else GATE
    if tap.device_id == "gate KGX 01":
        device = replace(GATE, device_id="gate KGX 01")
    assert validate_tap(tap, NOW, device).accepted


# One case per reason code a tap can earn, in the order validate_tap checks them.
CASES = [
    ({"device_id": ""}, GATE, R.MISSING_DEVICE_ID),
    ({"device_id": "gate\x00KGX"}, GATE, R.BAD_DEVICE_ID),
    ({"device_id": "gate-KGX-02"}, GATE, R.DEVICE_MISMATCH),
    ({"sequence_number": 0}, GATE, R.MISSING_SEQUENCE_NUMBER),
    ({"card_token": ""}, GATE, R.MISSING_CARD_TOKEN),
    ({"card_token": "4111111111111111"}, GATE, R.RAW_CARD_NUMBER),
    ({"card_token": "has spaces!"}, GATE, R.BAD_CARD_TOKEN),
    ({"stop_id": ""}, GATE, R.MISSING_STOP_ID),
    ({"stop_id": " KGX"}, GATE, R.BAD_STOP_ID),
    ({"stop_id": "VIC"}, GATE, R.STOP_NOT_ALLOWED),
    ({"route_id": "73\u200b"}, GATE, R.BAD_ROUTE_ID),
    ({"route_id": "73"}, GATE, R.ROUTE_NOT_ALLOWED),
    ({"operator_id": ""}, GATE, R.MISSING_OPERATOR_ID),
    ({"operator_id": "L" * 129}, GATE, R.BAD_OPERATOR_ID),
    ({"operator_id": "LB"}, GATE, R.OPERATOR_MISMATCH),
    ({"kind": "unknown"}, GATE, R.UNKNOWN_TAP_KIND),
    ({"rider_category_id": "child\n"}, GATE, R.BAD_RIDER_CATEGORY),
    ({"fare_media_id": "\u2028"}, GATE, R.BAD_FARE_MEDIA),
    ({"tapped_at_seconds": None}, GATE, R.MISSING_TAPPED_AT),
    ({"tapped_at_seconds": MAX_TIMESTAMP_SECONDS + 1}, GATE, R.BAD_TAPPED_AT),
    ({"utc_offset_minutes": 900}, GATE, R.BAD_UTC_OFFSET),
    (timestamp(NOW + timedelta(minutes=6)), GATE, R.CLOCK_SKEW),
    (timestamp(NOW - timedelta(days=15)), GATE, R.TAP_TOO_OLD),
]


@pytest.mark.parametrize(("change", "device", "reason"), CASES, ids=[c[2].value for c in CASES])
def test_each_defect_is_rejected_with_its_reason_code(change, device, reason):
    tap = replace(GOOD, **change)
    verdict = validate_tap(tap, NOW, device)
    assert verdict.reason is reason
    assert not verdict.late
    assert verdict.detail
    for secret in {GOOD.card_token, tap.card_token} - {""}:
        assert secret not in verdict.detail
    assert "4111" not in verdict.detail


def test_every_reason_code_is_reachable_and_explained():
    reached = {reason for _, _, reason in CASES}
    batch = validate_batch_size(MAX_BATCH_TAPS + 1)
    assert batch is not None
    reached.add(batch.reason)
    assert reached == set(RejectReason)
    assert [reason for _, _, reason in CASES] == list(RejectReason)[1:]  # the check order
    assert set(REASON_MEANINGS) == set(RejectReason) == set(REASON_FIELDS)


def test_the_doc_explains_every_reason_code():
    doc = DOC.read_text()
    for reason in RejectReason:
        assert f"`{reason.value}`" in doc


def test_a_batch_of_at_most_the_limit_is_not_too_large():
    assert validate_batch_size(MAX_BATCH_TAPS) is None
    assert validate_batch_size(0) is None
    too_large = validate_batch_size(MAX_BATCH_TAPS + 1)
    assert too_large is not None
    assert too_large.reason is R.BATCH_TOO_LARGE


def test_the_first_failed_check_wins():
    # A tap wrong in every field; putting fields right one by one, in check order, shows
    # each check's code in turn.
    fixes = [
        ({"device_id": ""}, {"device_id": GOOD.device_id}, R.MISSING_DEVICE_ID),
        ({"sequence_number": 0}, {"sequence_number": 7}, R.MISSING_SEQUENCE_NUMBER),
        ({"card_token": ""}, {"card_token": GOOD.card_token}, R.MISSING_CARD_TOKEN),
        ({"stop_id": ""}, {"stop_id": "KGX"}, R.MISSING_STOP_ID),
        ({"route_id": "73\n"}, {"route_id": ""}, R.BAD_ROUTE_ID),
        ({"operator_id": ""}, {"operator_id": "LU"}, R.MISSING_OPERATOR_ID),
        ({"kind": "tap"}, {"kind": "entry"}, R.UNKNOWN_TAP_KIND),
        ({"rider_category_id": "\x00"}, {"rider_category_id": ""}, R.BAD_RIDER_CATEGORY),
        ({"fare_media_id": "\x00"}, {"fare_media_id": ""}, R.BAD_FARE_MEDIA),
        ({"utc_offset_minutes": 900}, {"utc_offset_minutes": 0}, R.BAD_UTC_OFFSET),
        (timestamp(NOW + timedelta(hours=1)), timestamp(NOW), R.CLOCK_SKEW),
    ]
    tap = GOOD
    for breakage, _, _ in fixes:
        tap = replace(tap, **breakage)
    for _, fix, reason in fixes:
        assert validate_tap(tap, NOW, GATE).reason is reason
        tap = replace(tap, **fix)
    assert validate_tap(tap, NOW, GATE).accepted


# Regressions: what an independent client found.


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (253_402_300_800, 0),  # 10000-01-01T00:00:00Z
        (MIN_TIMESTAMP_SECONDS - 1, 0),
        (0, -1),
        (0, 1_000_000_000),
        (2**63 - 1, 0),
        (-(2**63), 0),
        (0, -(2**31)),
        (0, 2**31 - 1),
    ],
)
def test_a_tapped_at_outside_the_timestamp_range_is_rejected_not_raised(seconds, nanos):
    tap = replace(GOOD, tapped_at_seconds=seconds, tapped_at_nanos=nanos)
    verdict = validate_tap(tap, NOW, GATE)
    assert verdict.reason is R.BAD_TAPPED_AT
    assert verdict.tapped_at is None


def test_the_ends_of_the_timestamp_range_are_representable():
    last = validate_tap(
        replace(GOOD, tapped_at_seconds=MAX_TIMESTAMP_SECONDS, tapped_at_nanos=999_999_999),
        NOW,
        GATE,
    )
    assert last.reason is R.CLOCK_SKEW
    assert last.tapped_at == datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    first = validate_tap(replace(GOOD, tapped_at_seconds=MIN_TIMESTAMP_SECONDS), NOW, GATE)
    assert first.reason is R.TAP_TOO_OLD
    assert first.tapped_at == datetime(1, 1, 1, tzinfo=UTC)


def test_nanos_are_kept_to_the_microsecond():
    assert tapped_at_of(0, 1_999) == EPOCH + timedelta(microseconds=1)
    assert tapped_at_of(None, 0) is None


class Untouchable(str):
    """A huge string that fails the test when validation reads it beyond its length (or the
    few hundred characters a card number scan looks at)."""

    __slots__ = ()

    def _touched(self, *_args, **_kwargs):
        raise AssertionError("read an oversize string")

    def __getitem__(self, key):
        prefix = isinstance(key, slice) and key.start is None and key.step is None
        if prefix and key.stop is not None and 0 <= key.stop <= 512:
            return str.__getitem__(self, key)
        raise AssertionError(f"read {key!r} of an oversize string")

    __iter__ = __eq__ = __ne__ = __hash__ = __contains__ = _touched
    encode = strip = isspace = startswith = endswith = replace = find = _touched


MEGABYTE = 1_000_000


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("device_id", R.BAD_DEVICE_ID),
        ("card_token", R.BAD_CARD_TOKEN),
        ("stop_id", R.BAD_STOP_ID),
        ("route_id", R.BAD_ROUTE_ID),
        ("operator_id", R.BAD_OPERATOR_ID),
        ("kind", R.UNKNOWN_TAP_KIND),
        ("rider_category_id", R.BAD_RIDER_CATEGORY),
        ("fare_media_id", R.BAD_FARE_MEDIA),
    ],
)
def test_a_megabyte_field_is_rejected_by_its_length_alone(field, reason):
    huge = Untouchable("7" * 10 + "x" * MEGABYTE)
    verdict = validate_tap(replace(GOOD, **{field: huge}), NOW, GATE)
    assert verdict.reason is reason
    assert len(verdict.detail) < 300
    assert "xxxxxxxxxx" not in verdict.detail


def test_a_card_token_with_a_trailing_newline_is_refused():
    verdict = validate_tap(replace(GOOD, card_token=GOOD.card_token + "\n"), NOW, GATE)
    assert verdict.reason is R.BAD_CARD_TOKEN


@pytest.mark.parametrize("field", ["device_id", "stop_id", "operator_id"])
def test_an_id_with_a_trailing_newline_is_refused(field):
    tap = replace(GOOD, **{field: getattr(GOOD, field) + "\n"})
    assert validate_tap(tap, NOW, GATE).reason.value.startswith("BAD_")


@pytest.mark.parametrize("length", [1, 128])
def test_ids_of_1_to_128_characters_are_accepted(length):
    stop = "S" * length
    device = replace(GATE, allowed_stop_ids=frozenset({stop}))
    assert validate_tap(
        replace(GOOD, stop_id=stop, fare_media_id="F" * length), NOW, device
    ).accepted


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "empty"),
        ("x" * 129, "longer than 128 characters (129)"),
        (" KGX", "leading or trailing whitespace"),
        ("KGX\u00a0", "leading or trailing whitespace"),
        ("K\tGX", "a control or format character"),
        ("K\u200dGX", "a control or format character"),
        ("K\u2029GX", "a control or format character"),
        ("K\ud800GX", "a control or format character"),
        ("King's Cross (N)", None),
        ("キングス・クロス", None),
    ],
)
def test_id_problem_names_the_rule_an_id_breaks(value, problem):
    assert id_problem(value) == problem


def test_id_problem_reads_no_more_than_the_length_of_a_huge_id():
    assert id_problem(Untouchable("x" * MEGABYTE)) == f"longer than 128 characters ({MEGABYTE})"


# The device registry's scope.


def test_a_device_cannot_send_as_another_device():
    assert (
        validate_tap(GOOD, NOW, replace(GATE, device_id="gate-KGX-02")).reason is R.DEVICE_MISMATCH
    )


def test_a_tap_at_a_stop_outside_the_devices_scope_is_refused():
    assert validate_tap(replace(ON_BUS, stop_id="KGX"), NOW, BUS).reason is R.STOP_NOT_ALLOWED


@pytest.mark.parametrize(
    ("tap", "device"),
    [(replace(ON_BUS, route_id="N19"), BUS), (replace(GOOD, route_id="73"), GATE)],
    ids=["route not the bus's", "route on a station gate"],
)
def test_a_route_outside_the_devices_scope_is_refused(tap, device):
    assert validate_tap(tap, NOW, device).reason is R.ROUTE_NOT_ALLOWED


def test_a_tap_for_another_operator_is_refused():
    assert validate_tap(replace(ON_BUS, operator_id="LU"), NOW, BUS).reason is R.OPERATOR_MISMATCH


# Time: skew, age and lateness, at their boundaries (microsecond resolution).

MICRO = timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("age", "reason", "late"),
    [
        (-timedelta(minutes=5), None, False),
        (-timedelta(minutes=5) - MICRO, R.CLOCK_SKEW, False),
        (timedelta(0), None, False),
        (timedelta(minutes=15), None, False),
        (timedelta(minutes=15) + MICRO, None, True),
        (timedelta(days=14), None, True),
        (timedelta(days=14) + MICRO, R.TAP_TOO_OLD, False),
    ],
)
def test_skew_age_and_lateness_boundaries(age, reason, late):
    verdict = validate_tap(replace(GOOD, **timestamp(NOW - age)), NOW, GATE)
    assert (verdict.reason, verdict.late) == (reason, late)
    assert verdict.tapped_at == NOW - age


def test_the_policy_sets_the_bounds():
    policy = ValidationPolicy(
        max_clock_skew=timedelta(0), max_tap_age=timedelta(hours=1), late_after=timedelta(0)
    )
    tap_at = replace(GOOD, **timestamp(NOW - MICRO))
    assert validate_tap(tap_at, NOW, GATE, policy).late
    assert validate_tap(replace(GOOD, **timestamp(NOW + MICRO)), NOW, GATE, policy).reason is (
        R.CLOCK_SKEW
    )
    assert validate_tap(GOOD, NOW + timedelta(hours=2), GATE, policy).reason is R.TAP_TOO_OLD


def test_received_at_in_another_timezone_is_the_same_instant():
    paris = NOW.astimezone(timezone(timedelta(hours=1)))
    assert validate_tap(GOOD, paris, GATE) == validate_tap(GOOD, NOW, GATE)


def test_a_naive_received_at_is_a_programming_error():
    with pytest.raises(ValueError, match="timezone-aware"):
        validate_tap(GOOD, NOW.replace(tzinfo=None), GATE)


def test_luhn_detects_card_numbers_but_not_tokens():
    assert looks_like_card_number("4111 1111 1111 1111")
    assert not looks_like_card_number("4111111111111112")
    assert not looks_like_card_number("tok_4111111111111111")


# validate_tap never raises, whatever a validator sends.

huge_text = st.builds(
    operator.mul, st.text(min_size=1, max_size=4), st.integers(min_value=129, max_value=1_100_000)
)
awkward = st.sampled_from(
    ["", " ", "x ", "x\n", "\x00", "\u200b", "\u2028", "\ud800", "\uff14" * 16]
)


strings = st.one_of(st.text(), huge_text, awkward)
integers = st.one_of(st.sampled_from([0, -1, 2**31, -(2**31), 2**63, 2**64]), st.integers())
NOW_SECONDS = timestamp(NOW)["tapped_at_seconds"]
# What a broken validator may put in each field.
CORRUPTIONS: dict[str, st.SearchStrategy[object]] = {
    "device_id": strings,
    "sequence_number": st.one_of(integers, st.just(2**64 - 1)),
    "card_token": st.one_of(strings, st.sampled_from(["4111111111111111", "sc_04a2b9c1"])),
    "tapped_at_seconds": st.one_of(
        st.none(),
        integers,
        st.sampled_from([MIN_TIMESTAMP_SECONDS, MAX_TIMESTAMP_SECONDS, MAX_TIMESTAMP_SECONDS + 1]),
        st.integers(min_value=NOW_SECONDS - 30 * 86_400, max_value=NOW_SECONDS + 600),
    ),
    "tapped_at_nanos": st.one_of(integers, st.sampled_from([999_999_999, 1_000_000_000])),
    "utc_offset_minutes": st.one_of(integers, st.sampled_from([-841, -840, 840, 841])),
    "stop_id": st.one_of(strings, st.sampled_from(["KGX", "S1"])),
    "kind": st.one_of(strings, st.sampled_from(["entry", "exit", "board", "ENTRY"])),
    "route_id": st.one_of(strings, st.sampled_from(["73", "N19"])),
    "operator_id": st.one_of(strings, st.sampled_from(["LU", "LB"])),
    "rider_category_id": strings,
    "fare_media_id": strings,
}


@st.composite
def submissions(draw: st.DrawFn) -> tuple[TapSubmission, DeviceScope]:
    """A well-formed tap and its device, with each field broken one time in eight."""
    tap, device = draw(st.sampled_from([(GOOD, GATE), (ON_BUS, BUS)]))
    changes = {
        name: draw(corruption)
        for name, corruption in CORRUPTIONS.items()
        if draw(st.integers(min_value=0, max_value=7)) == 0
    }
    return replace(tap, **changes), device


policies = st.builds(ValidationPolicy, st.timedeltas(), st.timedeltas(), st.timedeltas())


@settings(max_examples=400, deadline=None)
@given(
    submissions(),
    st.one_of(st.just(NOW), st.datetimes(timezones=st.just(UTC))),
    st.one_of(st.just(ValidationPolicy()), policies),
)
def test_validate_tap_never_raises_and_never_echoes(submission, received_at, policy):
    tap, device = submission
    verdict = validate_tap(tap, received_at, device, policy)
    assert isinstance(verdict, Verdict)
    assert len(verdict.detail) < 300
    if verdict.accepted:
        assert verdict.tapped_at is not None
        assert tap.device_id == device.device_id
        assert 1 <= len(tap.card_token) <= 68
    else:
        assert not verdict.late
