import hashlib
import operator
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.domain import (
    REDACTED,
    RejectReason,
    bank_card_token,
    bound_field,
    bound_fields,
    matches_original,
    redact_card_token,
)

MARKER = re.compile(r"\.\.\.\[truncated ([0-9]+) bytes, sha256 ([0-9a-f]{64})\]\Z")
PAN = "4111111111111111"
MEGABYTE = 1_000_000


def utf8_len(value: str) -> int:
    return len(value.encode("utf-8", "surrogatepass"))


def test_a_field_within_the_bound_is_kept_as_is():
    fields = {"device_id": "gate-KGX-01", "detail": "é" * 128}  # 256 bytes exactly
    assert bound_fields(fields) == (fields, [])


def test_an_oversize_field_keeps_its_start_its_size_and_its_hash():
    original = "d" * MEGABYTE
    bounded, truncated = bound_fields({"device_id": original, "stop_id": "KGX"})
    assert truncated == ["device_id"]
    assert bounded["stop_id"] == "KGX"
    digest = hashlib.sha256(original.encode()).hexdigest()
    assert bounded["device_id"] == "d" * 64 + f"...[truncated {MEGABYTE} bytes, sha256 {digest}]"
    assert matches_original(bounded["device_id"], original)
    assert not matches_original(bounded["device_id"], original + "d")
    assert not matches_original(bounded["device_id"], "e" + original[1:])


def test_truncated_names_are_sorted():
    big = "x" * 300
    assert bound_fields({"stop_id": big, "card_token": big, "kind": "entry"})[1] == [
        "card_token",
        "stop_id",
    ]


def test_wide_characters_are_cut_to_fit_the_bound():
    bounded = bound_field("\U0001f68c" * 1000)  # 4 bytes each
    assert utf8_len(bounded) <= 256
    assert bounded.startswith("\U0001f68c")
    assert matches_original(bounded, "\U0001f68c" * 1000)


def test_a_lone_surrogate_is_counted_not_raised():
    original = "\ud800" * 200
    bounded = bound_field(original)
    assert matches_original(bounded, original)


def test_bounding_twice_changes_nothing():
    once, _ = bound_fields({"a": "x" * MEGABYTE, "b": "\U0001f68c" * 500})
    assert bound_fields(once) == (once, [])


def test_a_bound_too_small_for_the_marker_is_refused():
    with pytest.raises(ValueError):
        bound_field("x", max_bytes=64)


huge_text = st.builds(
    operator.mul, st.text(min_size=1, max_size=8), st.integers(min_value=1, max_value=600_000)
)
field_values = st.one_of(st.text(), st.text(min_size=200, max_size=400), huge_text)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(st.text(max_size=12), field_values, max_size=6),
    st.integers(min_value=128, max_value=4096),
    st.integers(min_value=0, max_value=200),
)
def test_bounded_fields_always_fit_and_let_one_check_a_candidate(fields, max_bytes, keep_chars):
    bounded, truncated = bound_fields(fields, max_bytes, keep_chars)
    assert list(bounded) == list(fields)
    assert sum(utf8_len(v) for v in bounded.values()) <= len(fields) * (max_bytes + 120)
    assert truncated == sorted(name for name, v in fields.items() if utf8_len(v) > max_bytes)
    for name, original in fields.items():
        value = bounded[name]
        assert utf8_len(value) <= max_bytes
        if name not in truncated:
            assert value == original
            continue
        marker = MARKER.search(value)
        assert marker is not None
        assert int(marker.group(1)) == utf8_len(original)
        assert (
            marker.group(2) == hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()
        )
        assert original.startswith(value[: marker.start()])
        assert len(value[: marker.start()]) <= keep_chars
        assert matches_original(value, original)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text(max_size=12), huge_text, min_size=1, max_size=5))
def test_default_bounds_hold_for_megabyte_fields(fields):
    bounded, _ = bound_fields(fields)
    assert sum(utf8_len(v) for v in bounded.values()) <= len(fields) * (256 + 120)


# The card token in a dead letter.


def test_a_raw_card_number_is_never_kept():
    assert redact_card_token(RejectReason.RAW_CARD_NUMBER, PAN) == REDACTED
    assert redact_card_token(RejectReason.RAW_CARD_NUMBER, "anything") == REDACTED


@pytest.mark.parametrize(
    "token",
    [PAN, "4111 1111 1111 1111", ";4111111111111111=2512?", "x" + PAN + "y" * MEGABYTE],
)
def test_a_card_number_is_redacted_whatever_the_tap_was_rejected_for(token):
    # A tap rejected for its device id never had its card token checked.
    assert redact_card_token(RejectReason.DEVICE_MISMATCH, token) == REDACTED
    assert redact_card_token(None, token) == REDACTED


@pytest.mark.parametrize(
    "token",
    ["tok_4f9a1c2b3d", "tok_" + PAN + "0000", "sc_04a2b9c1", bank_card_token(PAN, bytes(32))],
)
def test_a_well_formed_token_is_kept(token):
    assert redact_card_token(RejectReason.DEVICE_MISMATCH, token) == token


def test_a_token_without_a_card_number_is_kept_whole_for_bound_fields():
    assert redact_card_token(RejectReason.BAD_CARD_TOKEN, "has spaces!") == "has spaces!"


def test_an_oversize_token_is_bounded_with_the_other_fields_and_keeps_no_card_number():
    token = "y" * 300 + PAN + "z" * MEGABYTE
    fields = {"device_id": "gate-KGX-01", "card_token": token}
    fields["card_token"] = redact_card_token(RejectReason.BAD_CARD_TOKEN, token)
    assert fields["card_token"] is token  # bounded below, like every field
    bounded, truncated = bound_fields(fields)
    assert truncated == ["card_token"]
    assert utf8_len(bounded["card_token"]) <= 256
    assert PAN not in bounded["card_token"]
    assert matches_original(bounded["card_token"], token)


def test_a_redacted_token_is_not_listed_as_truncated():
    fields = {"card_token": redact_card_token(RejectReason.RAW_CARD_NUMBER, PAN * 100_000)}
    assert bound_fields(fields) == ({"card_token": REDACTED}, [])
