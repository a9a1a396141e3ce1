"""Money in integer minor units with a currency. Never a float."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class CurrencyMismatchError(ValueError):
    """Two amounts in different currencies were combined."""

    code = "CURRENCY_MISMATCH"


@dataclass(frozen=True, slots=True, order=True)
class Money:
    """An amount in minor units (pence) of an ISO 4217 currency."""

    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount_minor, bool) or not isinstance(self.amount_minor, int):
            raise TypeError(f"amount_minor must be int, got {type(self.amount_minor).__name__}")
        if len(self.currency) != 3 or not self.currency.isupper():
            raise ValueError(f"currency must be a 3-letter ISO 4217 code, got {self.currency!r}")

    @classmethod
    def zero(cls, currency: str) -> Money:
        """Nothing, in `currency`."""
        return cls(0, currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatchError(f"{self.currency} vs {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def __str__(self) -> str:
        sign = "-" if self.amount_minor < 0 else ""
        whole, minor = divmod(abs(self.amount_minor), 100)
        return f"{sign}{whole}.{minor:02d} {self.currency}"

    def allocate(self, weights: Sequence[int]) -> list[Money]:
        """Split into parts proportional to integer `weights`, penny-exact and deterministic.

        Largest-remainder method; ties go to the earlier weight. Parts sum exactly to self.
        """
        if not weights or any(w < 0 for w in weights) or sum(weights) == 0:
            raise ValueError("weights must be non-negative with a positive sum")
        total = sum(weights)
        sign = -1 if self.amount_minor < 0 else 1
        amount = abs(self.amount_minor)
        base = [amount * w // total for w in weights]
        remainders = [amount * w % total for w in weights]
        short = amount - sum(base)
        order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
        for i in order[:short]:
            base[i] += 1
        return [Money(sign * b, self.currency) for b in base]


def total(amounts: Iterable[Money], currency: str) -> Money:
    """Sum of `amounts`, all in `currency` (zero when empty)."""
    result = Money.zero(currency)
    for amount in amounts:
        result = result + amount
    return result
