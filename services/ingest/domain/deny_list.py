"""The deny list: the card tokens validators must flag, each with a reason, versioned. Pure.

The list is built by applying its changes in order. Each change carries the list's version
once it is applied (on the `denylist` topic: the change's offset + 1), so versions only
grow, a change at or below the current version is a replay and is ignored, and two lists
that applied the same changes are equal whatever else they saw before.

An entry is the card's latest ADD: adding a card already on the list replaces its reason,
version and time. That is what a rebuild from the compacted topic gives too (it keeps only
the latest change of each card), so a list built from the live stream and one rebuilt
later agree.

The latest changes are also kept one by one (at least the last `max_changes`), so a
validator that holds an older version can be sent just what changed since; when some of
those changes are no longer kept it is sent the whole list instead (`changes_since`
returns None).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime

# Enough for days of changes at any realistic rate; a validator further behind gets a
# snapshot, which is always correct.
MAX_KEPT_CHANGES = 100_000


@dataclass(frozen=True, slots=True)
class Entry:
    """A card on the list: why, since which version, since when."""

    card_token: str
    reason: int  # a clearway.ingest.v1.DenyReason value
    version: int  # the list's version at which the card was (last) added
    added_at: datetime


@dataclass(frozen=True, slots=True)
class Change:
    """One applied change: the card added (with its reason) or removed, and the list's
    version once it is applied."""

    version: int
    card_token: str
    added: bool
    reason: int  # 0 for a removal
    changed_at: datetime


class DenyList:
    """The set of blocked card tokens at a version, with its latest changes kept."""

    def __init__(self, max_changes: int = MAX_KEPT_CHANGES) -> None:
        if max_changes < 1:
            raise ValueError("max_changes must be at least 1")
        self._max_changes = max_changes
        self._entries: dict[str, Entry] = {}
        self._version = 0
        # Changes in version order; every change above `_kept_after` is in it.
        self._changes: list[Change] = []
        self._kept_after = 0
        self._sorted: list[Entry] | None = None

    @property
    def version(self) -> int:
        """The version of the latest change applied (0: empty, never changed)."""
        return self._version

    def __len__(self) -> int:
        return len(self._entries)

    def blocked(self, card_token: str) -> bool:
        """True when `card_token` is on the list."""
        return card_token in self._entries

    def entry(self, card_token: str) -> Entry | None:
        """The card's entry, when it is on the list."""
        return self._entries.get(card_token)

    def apply(
        self, version: int, card_token: str, added: bool, reason: int, changed_at: datetime
    ) -> None:
        """Apply one change that takes the list to `version`; a version not above the
        current one is a replay and changes nothing."""
        if version <= self._version:
            return
        if added:
            self._entries[card_token] = Entry(card_token, reason, version, changed_at)
        else:
            self._entries.pop(card_token, None)
        self._sorted = None
        self._version = version
        self._keep(Change(version, card_token, added, reason if added else 0, changed_at))

    def advance(self, version: int) -> None:
        """Move to `version` without a change (a record on the topic that carries none, e.g.
        one that does not decode); a version not above the current one changes nothing."""
        self._version = max(self._version, version)

    def entries(self) -> list[Entry]:
        """Every entry, sorted by card token."""
        if self._sorted is None:
            self._sorted = sorted(self._entries.values(), key=lambda e: e.card_token)
        return list(self._sorted)

    def changes_since(self, version: int) -> list[Change] | None:
        """The changes applied after `version`, in order; None when they are not all kept
        any more, or `version` is ahead of the list (the caller then sends a snapshot)."""
        if version > self._version or version < self._kept_after:
            return None
        start = bisect_right(self._changes, version, key=lambda c: c.version)
        return self._changes[start:]

    def _keep(self, change: Change) -> None:
        self._changes.append(change)
        excess = len(self._changes) - self._max_changes
        # Trim in chunks (at most a quarter more is kept), so appending stays O(1) amortised.
        if excess >= max(1, self._max_changes // 4):
            self._kept_after = self._changes[excess - 1].version
            del self._changes[:excess]
