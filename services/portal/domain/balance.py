"""Stored value as a traveller sees it: the top-up amount they type, and balance movements."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from clearway.money import Money

DEFAULT_MAX_TOP_UP_MINOR = 50_000  # accounts' default CLEARWAY_MAX_TOP_UP_MINOR (500.00)
# Pounds and optionally pence: "10", "10.5", "10.50", "£10.00", "1,000.00" (commas between
# thousands only). Nothing else: no signs, no exponents, no third decimal.
_AMOUNT = re.compile(r"(?P<whole>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]{1,9})(?:\.(?P<minor>[0-9]{1,2}))?")
_SYMBOLS = "£€"


class AmountError(ValueError):
    """A top-up amount the portal will not send; `code` says why."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def parse_amount(text: str, max_minor: int) -> int:
    """The amount typed into the top-up form, in minor units (pence).

    MISSING_AMOUNT when empty, AMOUNT_FORMAT when it is not pounds and pence, BAD_AMOUNT
    when it is not positive or above `max_minor` (the same code accounts answers).
    """
    cleaned = text.strip().replace(" ", "")
    if cleaned[:1] in _SYMBOLS:
        cleaned = cleaned[1:]
    if not cleaned:
        raise AmountError("MISSING_AMOUNT")
    if cleaned.startswith("-"):
        raise AmountError("BAD_AMOUNT")
    match = _AMOUNT.fullmatch(cleaned)
    if match is None:
        raise AmountError("AMOUNT_FORMAT")
    whole = int(match["whole"].replace(",", ""))
    minor = int((match["minor"] or "0").ljust(2, "0"))
    amount = whole * 100 + minor
    if amount <= 0 or amount > max_minor:
        raise AmountError("BAD_AMOUNT")
    return amount


class MovementKind(StrEnum):
    """What moved a balance."""

    TOP_UP = "top-up"
    JOURNEY = "journey"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class MovementView:
    """One movement of a card's balance, as shown on the card's page."""

    kind: MovementKind
    source_id: str  # the top-up id or the journey id
    revision: int
    amount: Money  # signed: credit positive, charge negative
    balance_after: Money
    at: datetime | None

    @property
    def description(self) -> str:
        """'Top-up', 'Journey charge', 'Journey refund (adjustment)', ..."""
        if self.kind is MovementKind.TOP_UP:
            return "Top-up"
        if self.kind is MovementKind.JOURNEY:
            if self.amount.amount_minor >= 0:
                return "Journey refund (adjustment)"
            return "Journey charge" if self.revision <= 1 else "Journey adjustment"
        return "Balance change"


@dataclass(frozen=True, slots=True)
class BalanceView:
    """A card's balance and whether it is blocked for debt."""

    balance: Money
    deny_listed: bool
