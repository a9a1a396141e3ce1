"""Travellers' accounts: what a valid email, password, card and session token are.

Pure rules; hashing a password (Argon2id) and storing anything are the adapters' job.
Every error names the field, never echoes a secret, and has a stable code.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from clearway.card_tokens import CardTokenForm, card_token_form, is_or_contains_card_number
from clearway.errors import ClearwayError, ErrorKind

MAX_EMAIL_LENGTH = 254  # RFC 5321's limit on a forward path
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256
MAX_LABEL_LENGTH = 64
SESSION_TTL = timedelta(hours=12)
RESET_TTL = timedelta(minutes=30)
TOKEN_BYTES = 32
# local@domain.tld: printable ASCII without spaces, one @, a dot in the domain.
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


class TravellerInputError(ClearwayError):
    """A request field that can never be right; `code` says which and why."""

    kind = ErrorKind.INVALID_ARGUMENT


class NotSignedInError(ClearwayError):
    """No session, or one that expired or was ended."""

    code = "NOT_SIGNED_IN"
    kind = ErrorKind.UNAUTHENTICATED


class BadCredentialsError(ClearwayError):
    """The email and password do not match an account (which of the two is not said)."""

    code = "BAD_CREDENTIALS"
    kind = ErrorKind.UNAUTHENTICATED


class SignInRateLimitedError(ClearwayError):
    """Too many failed sign-ins for this email lately."""

    code = "SIGN_IN_RATE_LIMITED"
    kind = ErrorKind.RESOURCE_EXHAUSTED


class EmailTakenError(ClearwayError):
    """An account with this email exists."""

    code = "EMAIL_TAKEN"
    kind = ErrorKind.ALREADY_EXISTS


class BadResetTokenError(ClearwayError):
    """A reset token that is unknown, used or expired."""

    code = "BAD_RESET_TOKEN"
    kind = ErrorKind.INVALID_ARGUMENT


class CardTakenError(ClearwayError):
    """The card belongs to another account."""

    code = "CARD_TAKEN"
    kind = ErrorKind.ALREADY_EXISTS


class NotYourCardError(ClearwayError):
    """The card is not one of the caller's (whether it exists is not said)."""

    code = "NOT_YOUR_CARD"
    kind = ErrorKind.PERMISSION_DENIED


def normal_email(value: str) -> str:
    """The email as accounts are keyed (lower case); INVALID_ARGUMENT BAD_EMAIL otherwise."""
    if not value:
        raise TravellerInputError("email is required", code="MISSING_EMAIL")
    if len(value) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(value):
        raise TravellerInputError("email is not an address like name@example.org", code="BAD_EMAIL")
    return value.lower()


def check_password(value: str) -> str:
    """`value` when it may be a password; the reason otherwise (never repeating it)."""
    if len(value) < MIN_PASSWORD_LENGTH:
        raise TravellerInputError(
            f"a password has at least {MIN_PASSWORD_LENGTH} characters", code="WEAK_PASSWORD"
        )
    if len(value) > MAX_PASSWORD_LENGTH:
        raise TravellerInputError(
            f"a password has at most {MAX_PASSWORD_LENGTH} characters", code="BAD_PASSWORD"
        )
    if "\x00" in value:
        raise TravellerInputError("a password holds no NUL character", code="BAD_PASSWORD")
    return value


def check_card_token(value: str) -> CardTokenForm:
    """The form of a card token a traveller may name; INVALID_ARGUMENT with the reason
    otherwise (MISSING_CARD_TOKEN, RAW_CARD_NUMBER, BAD_CARD_TOKEN). Never echoes it."""
    if not value:
        raise TravellerInputError("card_token is required", code="MISSING_CARD_TOKEN")
    form = card_token_form(value)
    if form is not None:
        return form
    if is_or_contains_card_number(value):
        raise TravellerInputError(
            "that is a card number: add the card by its bk_ token (docs/accounts.md)",
            code="RAW_CARD_NUMBER",
        )
    raise TravellerInputError(
        "card_token must be sc_ + 8, 14 or 20 lowercase hex digits, bk_ + 43 base64url "
        "characters, or tok_ + 8-64 characters of [A-Za-z0-9]",
        code="BAD_CARD_TOKEN",
    )


def check_label(value: str) -> str:
    """A card's label: printable, at most MAX_LABEL_LENGTH characters."""
    if len(value) > MAX_LABEL_LENGTH or not value.isprintable():
        raise TravellerInputError(
            f"a label is at most {MAX_LABEL_LENGTH} printable characters", code="BAD_LABEL"
        )
    return value


def new_token() -> str:
    """A fresh session or reset token: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> bytes:
    """What is stored of a token (SHA-256): a database leak gives no usable session."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in traveller's session."""

    token: str
    traveller_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Card:
    """A card an account owns."""

    card_token: str
    form: str
    label: str
    added_at: datetime
