"""What a card token is: the only card identity Clearway accepts. Pure: no I/O.

A card token is exactly one of three forms, matched whole (no trailing newline, no
surrounding whitespace):

- ``sc_`` + 8, 14 or 20 lowercase hex digits: a scheme card's UID (the 4-, 7- or 10-byte
  UID of ISO/IEC 14443), e.g. ``sc_04a2b9c1d25e80``.
- ``bk_`` + 43 base64url characters, unpadded: a bank card tokenised at the edge as
  ``base64url(HMAC-SHA256(K, PAN))``, K being the scheme's edge tokenisation key held in
  the validators' secure elements. The same PAN gives the same token on every validator;
  the PAN never leaves the validator. The 43 characters are the canonical encoding of the
  32-byte MAC, so the last one is one of ``AEIMQUYcgkosw048``. See `bank_card_token`.
- ``tok_`` + 8 to 64 characters of ``[A-Za-z0-9]``: an opaque token issued by the scheme
  (accounts, test and simulator cards; the simulator emits ``tok_`` + 20 hex digits).

Anything else is refused. A value that is, or (when it is not one of the three forms)
contains, a card number (a PAN: 12-19 digits, optionally separated by single spaces or
dashes, passing the Luhn check) is refused as a raw card number and must never be
stored, not even in a dead letter.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from enum import StrEnum

# The longest value of any form ("tok_" + 64): a longer value is refused without a regex.
MAX_CARD_TOKEN_LENGTH = 68
# How much of a value that is not a token is searched for a card number. It bounds the
# work per tap and matches the dead-letter bound: a longer value keeps only its first
# characters (see dead_letters.bound_fields), so a number further in is never stored.
CARD_SCAN_CHARS = 256
MIN_PAN_DIGITS = 12
MAX_PAN_DIGITS = 19
# A key shorter than this is a placeholder, not a key.
MIN_TOKENISATION_KEY_BYTES = 16

_SCHEME = re.compile(r"sc_(?:[0-9a-f]{8}|[0-9a-f]{14}|[0-9a-f]{20})")
_BANK = re.compile(r"bk_[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")
_OPAQUE = re.compile(r"tok_[A-Za-z0-9]{8,64}")
# A run of digits with at most one space or dash between two digits. Unicode digits count
# too (`\d`): reporting a card number that is not one is harmless, missing one is not.
_DIGIT_RUN = re.compile(r"\d(?:[ -]?\d)*")
_PAN_SHAPE = re.compile(r"\d(?:[ -]?\d){11,18}")
_PAN_DIGITS = re.compile(r"[0-9]{12,19}")
_MAX_PAN_CHARS = 2 * MAX_PAN_DIGITS - 1  # 19 digits and 18 separators


class CardTokenForm(StrEnum):
    """The three forms of a card token, by prefix."""

    SCHEME_CARD = "sc_"
    BANK_CARD = "bk_"
    OPAQUE = "tok_"


_FORMS = (
    (CardTokenForm.SCHEME_CARD, _SCHEME),
    (CardTokenForm.BANK_CARD, _BANK),
    (CardTokenForm.OPAQUE, _OPAQUE),
)


def card_token_form(value: str) -> CardTokenForm | None:
    """The form `value` has, matched whole; None when it is not a card token."""
    if len(value) > MAX_CARD_TOKEN_LENGTH:
        return None
    for form, pattern in _FORMS:
        if pattern.fullmatch(value):
            return form
    return None


def _luhn_total(digits: list[int]) -> int:
    total = 0
    for i, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if i % 2 == 1 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return total


def looks_like_card_number(value: str) -> bool:
    """True when the whole of `value` is a card number: 12-19 digits, single spaces or dashes
    allowed between them, passing Luhn."""
    if len(value) > _MAX_PAN_CHARS or not _PAN_SHAPE.fullmatch(value):
        return False
    return _luhn_total([int(c) for c in value if c not in " -"]) % 10 == 0


def _has_card_number(digits: list[int]) -> bool:
    """True when some 12-19 consecutive digits of `digits` pass Luhn."""
    for end in range(MIN_PAN_DIGITS - 1, len(digits)):
        total = 0
        for k in range(min(MAX_PAN_DIGITS, end + 1)):
            doubled = digits[end - k] * 2 if k % 2 == 1 else digits[end - k]
            total += doubled - 9 if doubled > 9 else doubled
            if k + 1 >= MIN_PAN_DIGITS and total % 10 == 0:
                return True
    return False


def contains_card_number(value: str, scan_chars: int = CARD_SCAN_CHARS) -> bool:
    """True when the first `scan_chars` characters of `value` contain a card number (any
    12-19 consecutive digits of a digit run passing Luhn, e.g. in track data ``;4111...=``)."""
    for run in _DIGIT_RUN.finditer(value[:scan_chars]):
        digits = [int(c) for c in run.group() if c not in " -"]
        if len(digits) >= MIN_PAN_DIGITS and _has_card_number(digits):
            return True
    return False


def is_or_contains_card_number(value: str, scan_chars: int = CARD_SCAN_CHARS) -> bool:
    """True when `value` is not a card token and is, or contains, a card number."""
    if card_token_form(value) is not None:
        return False  # a token may hold a Luhn-valid digit run by chance: never scanned
    return looks_like_card_number(value) or contains_card_number(value, scan_chars)


def bank_card_token(pan: str, key: bytes) -> str:
    """The ``bk_`` token of a bank card number (spaces and dashes ignored) under the edge
    tokenisation key; ValueError for a PAN that is not 12-19 digits passing Luhn."""
    if len(key) < MIN_TOKENISATION_KEY_BYTES:
        raise ValueError(
            f"the tokenisation key must be at least {MIN_TOKENISATION_KEY_BYTES} bytes"
        )
    digits = pan.replace(" ", "").replace("-", "")
    # The message never repeats the PAN: it may be a real card number.
    if not _PAN_DIGITS.fullmatch(digits):
        raise ValueError("a card number is 12-19 digits (spaces and dashes allowed)")
    if _luhn_total([int(c) for c in digits]) % 10 != 0:
        raise ValueError("the card number fails the Luhn check")
    mac = hmac.new(key, digits.encode("ascii"), hashlib.sha256).digest()
    return "bk_" + base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")
