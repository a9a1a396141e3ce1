import base64
import hashlib
import hmac
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clearway.card_tokens import CARD_SCAN_CHARS, contains_card_number
from services.ingest.domain import (
    CardTokenForm,
    RejectReason,
    bank_card_token,
    card_token_form,
    classify_card_token,
    looks_like_card_number,
)

KEY = bytes(range(32))
PAN = "4111111111111111"  # the classic Visa test number: Luhn-valid
BANK_TOKEN = bank_card_token(PAN, KEY)


def simulator_token(seed: int, index: int) -> str:
    """As services/ingest/simulator/day.py makes them."""
    return "tok_" + hashlib.sha256(f"clearway-sim:{seed}:{index}".encode()).hexdigest()[:20]


def with_check_digit(body: str) -> str:
    """`body` + the digit that makes it pass Luhn."""
    total = 0
    for i, digit in enumerate(int(c) for c in reversed(body)):
        doubled = digit * 2 if i % 2 == 0 else digit  # every other digit from the check digit
        total += doubled - 9 if doubled > 9 else doubled
    return body + str(-total % 10)


@pytest.mark.parametrize(
    ("token", "form"),
    [
        ("sc_04a2b9c1", CardTokenForm.SCHEME_CARD),
        ("sc_04a2b9c1d25e80", CardTokenForm.SCHEME_CARD),
        ("sc_04a2b9c1d25e80aa0b1c", CardTokenForm.SCHEME_CARD),
        (BANK_TOKEN, CardTokenForm.BANK_CARD),
        ("tok_4f9a1c2b", CardTokenForm.OPAQUE),
        ("tok_" + "A" * 64, CardTokenForm.OPAQUE),
        (simulator_token(7, 1), CardTokenForm.OPAQUE),
    ],
)
def test_each_form_of_card_token_is_accepted(token, form):
    assert card_token_form(token) is form
    assert classify_card_token(token)[0] is None


@pytest.mark.parametrize(
    "token",
    [
        "sc_04a2b9c",  # 7 hex digits
        "sc_04a2b9c1d2",  # 10: no UID has 5 bytes
        "sc_04A2B9C1",  # upper case: one card, one token
        "bk_" + "A" * 42,  # 42 characters
        "bk_" + "A" * 44,
        "bk_" + "A" * 42 + "B",  # not a canonical encoding of 32 bytes
        BANK_TOKEN + "=",  # padded
        "tok_4f9a1c2",  # 7 characters
        "tok_" + "A" * 65,
        "tok_4f9a-1c2b",
        "tok_4f9a1c2b\n",  # $ in a regex matches before a trailing newline; fullmatch does not
        " tok_4f9a1c2b",
        "TOK_4f9a1c2b",
        "card-1234",
        "x" * 1_000_000,
    ],
)
def test_anything_else_is_a_bad_card_token(token):
    reason, detail = classify_card_token(token)
    assert reason is RejectReason.BAD_CARD_TOKEN
    assert token not in detail
    assert "sc_" in detail and "bk_" in detail and "tok_" in detail


def test_an_empty_card_token_is_missing():
    assert classify_card_token("")[0] is RejectReason.MISSING_CARD_TOKEN


@pytest.mark.parametrize(
    "value",
    [
        PAN,
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "5500 0000 0000 0004",  # Mastercard test number
        "378282246310005",  # 15-digit Amex
        "6011111111111117",
        with_check_digit("40000000000"),  # 12 digits
        with_check_digit("400000000000000000"),  # 19 digits
        ";4111111111111111=25121010000000000000?",  # magnetic track 2
        "%B4111111111111111^DOE/JOHN^2512101000000000000?",  # magnetic track 1
        "tok_4111-1111-1111-1111",  # not a token: scanned
        "card:4111 1111 1111 1111",
        "4111 1111 1111 1111 123",  # PAN and CVV: the PAN is 16 of the 19 digits
        "0000" + PAN,  # glued to other digits
        "bk_" + PAN,
        "\uff14\uff11\uff11\uff11" * 4,  # fullwidth digits: still a card number
    ],
)
def test_a_value_that_is_or_contains_a_card_number_is_a_raw_card_number(value):
    reason, detail = classify_card_token(value)
    assert reason is RejectReason.RAW_CARD_NUMBER
    assert "4111" not in detail
    assert value not in detail


@pytest.mark.parametrize(
    "value",
    [
        "4111  1111 1111 1111",  # a double space splits the run: 4 + 12 digits, neither valid
        "411111111111",  # 12 digits failing Luhn
        "12345678901",  # 11 digits
    ],
)
def test_digits_that_are_not_a_card_number_are_a_bad_card_token(value):
    assert classify_card_token(value)[0] is RejectReason.BAD_CARD_TOKEN


def test_any_12_to_19_consecutive_digits_passing_luhn_count_as_a_card_number():
    # 4111111111111112 fails Luhn, but its last 13 digits pass: over-reporting a card
    # number costs a redacted dead letter; missing one would store a PAN.
    assert not looks_like_card_number("4111111111111112")
    assert looks_like_card_number("1111111111112")
    assert classify_card_token("4111111111111112")[0] is RejectReason.RAW_CARD_NUMBER


def test_a_token_of_an_exact_form_is_never_scanned_for_card_numbers():
    token = "tok_" + PAN + "0000"  # 20 characters, a Luhn-valid run inside
    assert contains_card_number(token)
    assert classify_card_token(token)[0] is None
    assert classify_card_token("sc_" + PAN + "0000")[0] is None


def test_a_huge_value_is_searched_only_where_a_dead_letter_would_keep_it():
    assert classify_card_token("x" + PAN + "y" * 1_000_000)[0] is RejectReason.RAW_CARD_NUMBER
    far = "y" * CARD_SCAN_CHARS + PAN
    assert classify_card_token(far)[0] is RejectReason.BAD_CARD_TOKEN


def test_luhn_detects_card_numbers_but_not_tokens():
    assert looks_like_card_number("4111 1111 1111 1111")
    assert looks_like_card_number("4111-1111-1111-1111")
    assert not looks_like_card_number("4111111111111112")
    assert not looks_like_card_number("tok_4111111111111111")
    assert not looks_like_card_number("4111111111111111\n")
    assert not looks_like_card_number("-4111111111111111")


def test_bank_card_token_is_hmac_sha256_of_the_digits_in_base64url():
    mac = hmac.new(KEY, PAN.encode(), hashlib.sha256).digest()
    expected = "bk_" + base64.urlsafe_b64encode(mac).decode().rstrip("=")
    assert expected == BANK_TOKEN
    assert len(BANK_TOKEN) == 3 + 43


def test_bank_card_token_test_vector_in_the_docs():
    assert bank_card_token("4111 1111 1111 1111", bytes(range(32))) == BANK_TOKEN
    assert BANK_TOKEN == "bk_BiIkEgE4KkWRL7IoKLP321FTzyBycipz3tImI-p5q8k"


def test_the_docs_example_computes_the_same_token():
    doc = (Path(__file__).resolve().parents[3] / "docs" / "ingest-validation.md").read_text()
    example = doc.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(example, namespace)
    assert namespace["bank_card_token"](PAN, KEY) == BANK_TOKEN


def test_bank_card_token_is_the_same_however_the_number_is_written():
    assert bank_card_token("4111 1111 1111 1111", KEY) == BANK_TOKEN
    assert bank_card_token("4111-1111-1111-1111", KEY) == BANK_TOKEN
    assert bank_card_token(PAN, bytes(32)) != BANK_TOKEN  # another key, another token
    assert bank_card_token("5500000000000004", KEY) != BANK_TOKEN


@pytest.mark.parametrize(
    "pan",
    [
        "",
        "4111111111111112",  # Luhn
        "41111111111",  # 11 digits
        with_check_digit("4" * 19),  # 20 digits
        "4111 1111 1111 111x",
        "\uff14" * 16,  # not ASCII digits
        "4111111111111111\n",
    ],
)
def test_bank_card_token_refuses_what_is_not_a_card_number(pan):
    with pytest.raises(ValueError) as refused:
        bank_card_token(pan, KEY)
    assert "4111" not in str(refused.value)


def test_bank_card_token_refuses_a_placeholder_key():
    with pytest.raises(ValueError, match="key"):
        bank_card_token(PAN, b"test")


pans = st.integers(min_value=11, max_value=18).flatmap(
    lambda n: st.text(alphabet="0123456789", min_size=n, max_size=n).map(with_check_digit)
)


@given(pans, st.binary(min_size=16, max_size=64))
def test_every_bank_card_token_is_a_bk_token_and_never_a_card_number(pan, key):
    token = bank_card_token(pan, key)
    assert card_token_form(token) is CardTokenForm.BANK_CARD
    assert classify_card_token(token)[0] is None
    assert classify_card_token(pan)[0] is RejectReason.RAW_CARD_NUMBER


@given(
    st.one_of(
        st.from_regex(r"sc_(?:[0-9a-f]{8}|[0-9a-f]{14}|[0-9a-f]{20})", fullmatch=True),
        st.from_regex(r"tok_[A-Za-z0-9]{8,64}", fullmatch=True),
    )
)
def test_every_value_of_a_form_is_accepted(token):
    assert classify_card_token(token)[0] is None


DETAILS = {
    classify_card_token(v) for v in ("", PAN, "x", "tok_4f9a1c2b", "sc_04a2b9c1", BANK_TOKEN)
}


@given(st.one_of(st.text(), st.from_regex(r"[0-9 -]{10,40}", fullmatch=True)))
def test_classification_never_depends_on_more_of_the_value_than_its_kind(value):
    assert classify_card_token(value) in DETAILS  # so the detail never echoes the value
