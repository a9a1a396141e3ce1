"""A dead letter always fits: oversize fields are cut short, card numbers never kept. Pure.

A field longer than `max_bytes` (UTF-8) becomes its first characters followed by
``...[truncated <n> bytes, sha256 <64 hex>]``, n being the original's UTF-8 length and the
hash that of its UTF-8 bytes, so whoever holds a candidate original can check it
(`matches_original`). A bounded field is never longer than `max_bytes`, so bounding twice
changes nothing.

A caller builds a dead letter's fields as::

    fields = {"device_id": tap.device_id, "card_token": tap.card_token, ...}
    fields["card_token"] = redact_card_token(reason, tap.card_token)
    bounded, truncated = bound_fields(fields)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from clearway.card_tokens import card_token_form, is_or_contains_card_number
from services.ingest.domain.validation import RejectReason

DEAD_LETTER_FIELD_BYTES = 256
KEEP_CHARS = 64
# The longest marker is 14 + 20 (a byte count) + 15 + 64 + 1 = 114 bytes; a bound must
# leave room for it.
MIN_FIELD_BYTES = 128
REDACTED = "[redacted]"

_MARKER = re.compile(r"\.\.\.\[truncated ([0-9]+) bytes, sha256 ([0-9a-f]{64})\]")
# Lone surrogates are valid in a Python str but not in UTF-8: count and hash them as the
# 3 bytes "surrogatepass" gives, so bounding never raises.
_ENCODING_ERRORS = "surrogatepass"


def _utf8(value: str) -> bytes:
    return value.encode("utf-8", _ENCODING_ERRORS)


def _utf8_width(char: str) -> int:
    point = ord(char)
    return 1 if point < 0x80 else 2 if point < 0x800 else 3 if point < 0x10000 else 4


def _prefix_within(value: str, keep_chars: int, budget: int) -> str:
    """The longest prefix of at most `keep_chars` characters and `budget` UTF-8 bytes."""
    used = 0
    for end, char in enumerate(value[:keep_chars]):
        used += _utf8_width(char)
        if used > budget:
            return value[:end]
    return value[:keep_chars]


def bound_field(
    value: str, max_bytes: int = DEAD_LETTER_FIELD_BYTES, keep_chars: int = KEEP_CHARS
) -> str:
    """`value` itself when its UTF-8 length is at most `max_bytes`, else its first (up to
    `keep_chars`) characters and the truncation marker, `max_bytes` long at most."""
    if max_bytes < MIN_FIELD_BYTES or keep_chars < 0:
        raise ValueError(f"max_bytes must be at least {MIN_FIELD_BYTES}, keep_chars at least 0")
    if len(value) * 4 <= max_bytes:  # no character takes more than 4 bytes: fits unread
        return value
    encoded = _utf8(value)
    if len(encoded) <= max_bytes:
        return value
    marker = f"...[truncated {len(encoded)} bytes, sha256 {hashlib.sha256(encoded).hexdigest()}]"
    return _prefix_within(value, keep_chars, max_bytes - len(marker)) + marker


def bound_fields(
    fields: Mapping[str, str],
    max_bytes: int = DEAD_LETTER_FIELD_BYTES,
    keep_chars: int = KEEP_CHARS,
) -> tuple[dict[str, str], list[str]]:
    """The fields with each one over `max_bytes` (UTF-8) cut short by `bound_field`, and the
    sorted names of those cut."""
    bounded: dict[str, str] = {}
    truncated: list[str] = []
    for name, value in fields.items():
        bounded[name] = bound_field(value, max_bytes, keep_chars)
        if bounded[name] is not value:
            truncated.append(name)
    return bounded, sorted(truncated)


def matches_original(bounded: str, candidate: str) -> bool:
    """True when `candidate` is the value `bounded` was cut from (or `bounded` itself, when
    `bounded` was not cut)."""
    marker = _MARKER.search(bounded)
    if marker is None or marker.end() != len(bounded):
        return bounded == candidate
    encoded = _utf8(candidate)
    return (
        candidate.startswith(bounded[: marker.start()])
        and len(encoded) == int(marker.group(1))
        and hashlib.sha256(encoded).hexdigest() == marker.group(2)
    )


def redact_card_token(
    reason: RejectReason | None,
    token: str,
    max_bytes: int = DEAD_LETTER_FIELD_BYTES,
    keep_chars: int = KEEP_CHARS,
) -> str:
    """REDACTED when the tap was rejected as a RAW_CARD_NUMBER or the part of `token` a dead
    letter would keep (under the same bounds) holds a card number, else `token` itself, for
    `bound_fields` to bound like any other field."""
    if reason is RejectReason.RAW_CARD_NUMBER:
        return REDACTED
    if card_token_form(token) is not None:
        return token  # a well-formed token: short, and never a card number
    # A tap rejected for an earlier field (device, sequence number) never had its token
    # checked, so look here: whatever of it the dead letter would keep must hold no PAN.
    if is_or_contains_card_number(token, scan_chars=max(max_bytes, keep_chars)):
        return REDACTED
    return token
