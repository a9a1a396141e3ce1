"""Caps progress as travellers read it: each cap's use in a sentence. Pure: no I/O.

The figures are fares' (it prices the card's taps); accounts only says them in words.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from clearway.errors import ClearwayError, ErrorKind
from clearway.money import Money

# Currencies written with a symbol before the amount; any other after it ("6.40 CHF").
CURRENCY_SYMBOLS = {"GBP": "£", "EUR": "€"}


class CapsProgressUnavailableError(ClearwayError):
    """fares did not answer the caps progress question: try again later."""

    code = "FARES_UNAVAILABLE"
    kind = ErrorKind.UNAVAILABLE


class CapPeriod(StrEnum):
    """How long a cap counts: one service day, or a Monday-Sunday service week."""

    DAY = "day"
    WEEK = "week"


@dataclass(frozen=True, slots=True)
class CapUse:
    """How much of one cap a card has used in the current period."""

    cap_id: str
    name: str
    period: CapPeriod
    period_start: date
    amount: Money
    spent: Money
    remaining: Money

    @property
    def summary(self) -> str:
        """'£6.40 of today's £8.90 cap', '£15.30 of this week's £44.70 cap'."""
        when = "today's" if self.period is CapPeriod.DAY else "this week's"
        return f"{written(self.spent)} of {when} {written(self.amount)} cap"


def written(money: Money) -> str:
    """An amount as a traveller reads it: '£6.40' (Money's own form, '6.40 CHF', for a
    currency without a symbol here)."""
    symbol = CURRENCY_SYMBOLS.get(money.currency)
    if symbol is None:
        return str(money)
    amount, _, _ = str(Money(abs(money.amount_minor), money.currency)).partition(" ")
    return f"-{symbol}{amount}" if money.amount_minor < 0 else f"{symbol}{amount}"
