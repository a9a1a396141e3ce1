"""Cards' travel-pass concessions, as ingest applies them to taps. Pure.

Accounts publishes each card's concession on the compacted `concessions` topic (key: the
card token): the rider category a council's travel pass gives and the service days it is
valid, [valid_from, valid_to); a record without a value ends it. `Concessions` is the
state those records build, versioned like the deny list (a record's offset + 1), so a copy
rebuilt from the topic later equals one that followed it live.

When ingest accepts a tap of a card with a concession in force on the tap's service day,
and the tap's rider category is empty (the feed's default) or the scheme's reference
category (`ADULT`), the tap is written with the concession's category. Any other category
the validator sent (a youth card's `YOUTH`) is the card's own and is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DEFAULT_REFERENCE_CATEGORY = "ADULT"


@dataclass(frozen=True, slots=True)
class Concession:
    """A card's concession: the rider category its taps get on service days
    [valid_from, valid_to)."""

    rider_category_id: str
    valid_from: date
    valid_to: date

    def in_force_on(self, day: date) -> bool:
        """Whether taps of service day `day` get the concession."""
        return self.valid_from <= day < self.valid_to


class Concessions:
    """Every card's concession at a version (the offset of the last record applied + 1)."""

    def __init__(self) -> None:
        self._by_card: dict[str, Concession] = {}
        self._version = 0

    @property
    def version(self) -> int:
        """The version of the last record applied (0: none yet)."""
        return self._version

    def __len__(self) -> int:
        return len(self._by_card)

    def concession(self, card_token: str) -> Concession | None:
        """The card's concession, whatever its days."""
        return self._by_card.get(card_token)

    def apply(self, version: int, card_token: str, concession: Concession | None) -> None:
        """Set (or, with None, end) the card's concession, taking the state to `version`;
        a version not above the current one is a replay and changes nothing."""
        if version <= self._version:
            return
        if concession is None:
            self._by_card.pop(card_token, None)
        else:
            self._by_card[card_token] = concession
        self._version = version

    def advance(self, version: int) -> None:
        """Move to `version` without a change (a record with no usable key)."""
        self._version = max(self._version, version)


@dataclass(frozen=True, slots=True)
class ConcessionRules:
    """How ingest applies concessions: the scheme's service day (local date in `timezone`,
    shifted back by `day_start`, as fares dates a tap) and the reference rider category a
    concession replaces."""

    timezone: str = "Europe/London"
    day_start: time = time(4, 30)
    reference_category: str = DEFAULT_REFERENCE_CATEGORY

    def service_day(self, at: datetime) -> date:
        """The service day of instant `at` (timezone-aware)."""
        local = at.astimezone(ZoneInfo(self.timezone))
        start = timedelta(
            hours=self.day_start.hour, minutes=self.day_start.minute, seconds=self.day_start.second
        )
        return (local - start).date()

    def replaces(self, tap_category: str) -> bool:
        """Whether a concession replaces a tap's rider category: only the feed's default
        (empty) and the reference category; any other is the card's own."""
        return tap_category in ("", self.reference_category)

    def category_for(
        self, tap_category: str, concession: Concession | None, tapped_at: datetime
    ) -> str | None:
        """The rider category to write on a tap of `tapped_at` whose category is
        `tap_category` and whose card has `concession`; None when the tap keeps its own."""
        if concession is None or not self.replaces(tap_category):
            return None
        if not concession.in_force_on(self.service_day(tapped_at)):
            return None
        return concession.rider_category_id


DEFAULT_CONCESSION_RULES = ConcessionRules()
