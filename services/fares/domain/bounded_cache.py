"""A bounded, typed cache of results of pure functions (the engine's only kind of cache)."""

from __future__ import annotations

from typing import TypeVar

from clearway.money import Money

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(dict[K, V]):
    """A dictionary of at most `bound` entries: when full, the entry remembered first is
    forgotten (first in, first out). Look-ups are plain `get`s (as fast as a dict's);
    entries go in through `remember` (or item assignment), which keeps the bound.

    For results of pure functions only: forgetting one can never change an answer.
    """

    __slots__ = ("bound",)

    def __init__(self, bound: int) -> None:
        if bound < 1:
            raise ValueError("a BoundedCache holds at least one entry")
        super().__init__()
        self.bound = bound

    def remember(self, key: K, value: V) -> V:
        """Remember `value` for `key` (forgetting the oldest entry if full); returns it."""
        self[key] = value
        return value

    def __setitem__(self, key: K, value: V) -> None:
        if key not in self and len(self) >= self.bound:
            del self[next(iter(self))]
        super().__setitem__(key, value)


class MoneyCache(BoundedCache[int, Money]):
    """Shared Money values of one currency by amount: `cache[amount_minor]` (a Money is
    immutable, so one object serves every leg of that amount; no re-validation)."""

    __slots__ = ("currency",)

    def __init__(self, bound: int, currency: str) -> None:
        super().__init__(bound)
        self.currency = currency

    def __missing__(self, amount_minor: int) -> Money:
        return self.remember(amount_minor, Money(amount_minor, self.currency))
