"""Paging of a card's journey history: page sizes, positions and opaque page tokens.

A page token carries the position of the last journey on the previous page (its sort
key) and a tag of the card it was issued for, with a checksum. The checksum catches
garbage and edited tokens; it is not a signature: a forged token could only move the
reader's position inside the same card's history, because every query is filtered by
the card token (authentication of travellers comes with a later issue).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

from services.accounts.domain.errors import PageSizeError, PageTokenError

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# Room for the longest journey id accepted (MAX_JOURNEY_ID_CHARS, 4 UTF-8 bytes each).
MAX_PAGE_TOKEN_CHARS = 2048
MAX_JOURNEY_ID_CHARS = 256
_TOKEN_VERSION = 1
_CHECKSUM_SALT = b"clearway.accounts.page_token.v1"
_CHECKSUM_CHARS = 16


@dataclass(frozen=True, slots=True, order=True)
class HistoryPosition:
    """Where a journey sits in a card's history: its start (UTC microseconds) and id.

    Newest first means *descending* order of this tuple.
    """

    started_at_us: int
    journey_id: str


def effective_page_size(requested: int) -> int:
    """The page size to serve: 0 means the default, above the maximum means the maximum."""
    if requested < 0:
        raise PageSizeError(f"page_size must be >= 0, got {requested}")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def card_tag(card_token: str) -> str:
    """A short, stable, non-reversible tag of a card token (for tokens, keys and logs)."""
    return hashlib.sha256(card_token.encode()).hexdigest()[:16]


def _checksum(payload: bytes) -> str:
    return hashlib.sha256(_CHECKSUM_SALT + payload).hexdigest()[:_CHECKSUM_CHARS]


def encode_page_token(position: HistoryPosition, card_token: str) -> str:
    """An opaque token that resumes `card_token`'s history just after `position`."""
    payload = json.dumps(
        [_TOKEN_VERSION, position.started_at_us, position.journey_id, card_tag(card_token)],
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    return _seal(payload)


def _seal(payload: bytes) -> str:
    """A token: the payload in unpadded base64url, a dot, its checksum."""
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{body}.{_checksum(payload)}"


def _unseal(token: str) -> bytes:
    """The payload of a token `_seal` made; PageTokenError for anything else."""
    if len(token) > MAX_PAGE_TOKEN_CHARS:
        raise PageTokenError("page_token is too long")
    body, dot, checksum = token.partition(".")
    if not dot or not body:
        raise PageTokenError("page_token is malformed")
    try:
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise PageTokenError("page_token is not valid base64") from None
    if checksum != _checksum(payload):
        raise PageTokenError("page_token checksum does not match")
    return payload


def decode_page_token(token: str, card_token: str) -> HistoryPosition | None:
    """The position a token resumes from; None for an empty token (the first page).

    Raises PageTokenError for anything this service did not issue for `card_token`.
    """
    if not token:
        return None
    payload = _unseal(token)
    return _position_from_payload(payload, card_token)


def _position_from_payload(payload: bytes, card_token: str) -> HistoryPosition:
    try:
        fields = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise PageTokenError("page_token payload is not JSON") from None
    if not isinstance(fields, list) or len(fields) != 4:
        raise PageTokenError("page_token payload has the wrong shape")
    version, started_at_us, journey_id, tag = fields
    if version != _TOKEN_VERSION:
        raise PageTokenError(f"page_token version {version!r} is not supported")
    if (
        isinstance(started_at_us, bool)
        or not isinstance(started_at_us, int)
        or not isinstance(journey_id, str)
        or not isinstance(tag, str)
    ):
        raise PageTokenError("page_token payload has the wrong field types")
    if tag != card_tag(card_token):
        raise PageTokenError("page_token was issued for another card")
    return HistoryPosition(started_at_us=started_at_us, journey_id=journey_id)


_MOVEMENTS_KIND = "m"


def encode_movements_token(movement_id: int, card_token: str) -> str:
    """An opaque token that resumes `card_token`'s balance movements before `movement_id`."""
    payload = json.dumps(
        [_MOVEMENTS_KIND, _TOKEN_VERSION, movement_id, card_tag(card_token)],
        separators=(",", ":"),
    ).encode()
    return _seal(payload)


def decode_movements_token(token: str, card_token: str) -> int | None:
    """The movement id a token resumes before; None for an empty token (the first page).
    PageTokenError for anything this service did not issue for `card_token`'s movements."""
    if not token:
        return None
    payload = _unseal(token)
    try:
        fields = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise PageTokenError("page_token payload is not JSON") from None
    if not isinstance(fields, list) or len(fields) != 4 or fields[0] != _MOVEMENTS_KIND:
        raise PageTokenError("page_token is not a balance movements token")
    _, version, movement_id, tag = fields
    if version != _TOKEN_VERSION:
        raise PageTokenError(f"page_token version {version!r} is not supported")
    if isinstance(movement_id, bool) or not isinstance(movement_id, int):
        raise PageTokenError("page_token payload has the wrong field types")
    if tag != card_tag(card_token):
        raise PageTokenError("page_token was issued for another card")
    return movement_id
