"""A bounded, typed least-recently-used cache (the engine's only kind of cache)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """At most `bound` entries; when full, the least recently used entry is forgotten.

    For results of pure functions only (forgetting one can never change an answer).
    Values are never None: `get` returns None for a miss.
    """

    __slots__ = ("_entries", "bound")

    def __init__(self, bound: int) -> None:
        if bound < 1:
            raise ValueError("an LruCache holds at least one entry")
        self.bound = bound
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The remembered value (now the most recently used), or None."""
        entries = self._entries
        value = entries.get(key)
        if value is not None:
            entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> V:
        """Remember `value` for `key` (forgetting the least recently used if full); returns it."""
        entries = self._entries
        entries[key] = value
        entries.move_to_end(key)
        if len(entries) > self.bound:
            entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)
