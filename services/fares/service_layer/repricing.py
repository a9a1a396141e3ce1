"""Re-price cards and turn the difference into revisions: pure, in memory, no I/O.

A partition batch is priced *as if its records were handled one at a time in offset
order*: after each record the partition's watermark (the latest tap time seen on it)
moves, the tapping card is re-priced with `as_of` = max(watermark, closed through), and
every card whose waiting entries fell due by then is re-priced too (in card order).
The revisions published therefore depend only on the partition's records, never on how
the consumer happened to cut them into batches; two instances, one instance, a restart
or a rebalance all publish the same revisions. The I/O around it (load the cards'
state, store what changed, queue the revisions) is the fares handler's, one round trip
per kind of row for the whole batch.

Pricing is a pure function of a card's taps in one service week (weekly caps count
Monday to Sunday) and `as_of`, which only decides whether an entry without exit is
still waiting or already incomplete.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from clearway.money import Money
from services.fares.adapters.convert import journey_pb
from services.fares.domain import PricedJourney, Tap, price_card, revise
from services.fares.domain.model import FareCatalog
from services.fares.domain.revision import WITHDRAWN, fingerprint

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Week:
    """The Monday-Sunday service week that weekly caps count over."""

    monday: date

    @property
    def sunday(self) -> date:
        """Last service day of the week."""
        return self.monday + timedelta(days=6)

    def tap_window(self, catalog: FareCatalog, at: datetime) -> tuple[datetime, datetime]:
        """Instants that surely cover every tap of the week (service days start after midnight)."""
        tz = catalog.version_at(at).timezone
        start = datetime.combine(self.monday, time(0), tz)
        return start, start + timedelta(days=8)


def service_day_of(catalog: FareCatalog, at: datetime) -> date:
    """The service day of instant `at` under the fare data in force then."""
    return catalog.version_at(at).service_day(at)


def week_of(catalog: FareCatalog, at: datetime) -> Week:
    """The service week containing instant `at`."""
    day = service_day_of(catalog, at)
    return Week(day - timedelta(days=day.weekday()))


def incomplete_after(catalog: FareCatalog, at: datetime) -> timedelta:
    """Longest time an entry may wait for its exit under the fare data in force at `at`."""
    data = catalog.version_at(at)
    limits = [data.settings.incomplete_after_s]
    limits += [m.incomplete_after_s for m in data.maximum_fares if m.incomplete_after_s]
    return timedelta(seconds=max(limits))


@dataclass(slots=True)
class Published:
    """What the last revision of a journey published."""

    revision: int
    charge: Money
    fingerprint: str | None
    service_day: date


@dataclass(slots=True)
class Pending:
    """A card's entries waiting for an exit: re-price at `due_at` (week of `waiting_since`)."""

    due_at: datetime
    waiting_since: datetime


@dataclass(slots=True)
class CardState:
    """What pricing knows of one card: its taps in the loaded weeks, what was published,
    and its pending deadline. `changed_*` say what must be written back."""

    card_token: str
    partition: int
    taps: dict[str, Tap] = field(default_factory=dict)
    days: dict[str, date] = field(default_factory=dict)  # tap id -> service day
    published: dict[str, Published] = field(default_factory=dict)
    pending: Pending | None = None
    changed_journeys: set[str] = field(default_factory=set)
    pending_changed: bool = False

    def add_tap(self, catalog: FareCatalog, tap: Tap) -> None:
        """Know `tap` (idempotent)."""
        if tap.tap_id not in self.taps:
            self.taps[tap.tap_id] = tap
            self.days[tap.tap_id] = service_day_of(catalog, tap.tapped_at)


@dataclass(frozen=True, slots=True)
class QueuedRevision:
    """A revision to publish on `journeys` (key: the card token)."""

    card_token: str
    journey_id: str
    body: bytes
    headers: Headers


def reprice(
    catalog: FareCatalog,
    card: CardState,
    *,
    around: datetime,
    as_of: datetime | None,
    headers: Headers,
) -> list[QueuedRevision]:
    """Re-price the card's service week around `around`; return (and remember) the
    revisions that differ from what was published, and update its pending deadline."""
    week = week_of(catalog, around)
    taps = [t for t in card.taps.values() if week.monday <= card.days[t.tap_id] <= week.sunday]
    journeys = [
        j
        for j in price_card(catalog, taps, as_of=as_of)
        if week.monday <= j.service_day <= week.sunday
    ]
    published = {
        jid: p for jid, p in card.published.items() if week.monday <= p.service_day <= week.sunday
    }
    revisions = revise(
        {jid: (p.revision, p.charge) for jid, p in published.items()},
        journeys,
        card_token=card.card_token,
        fingerprints={jid: p.fingerprint for jid, p in published.items()},
    )
    days = {j.journey_id: j.service_day for j in journeys}
    queued: list[QueuedRevision] = []
    for rev in revisions:
        day = days.get(rev.journey_id) or published[rev.journey_id].service_day
        message = journey_pb(
            rev.journey,
            journey_id=rev.journey_id,
            card_token=card.card_token,
            service_day=day.isoformat(),
            revision=rev.revision,
            charge=rev.charge,
            delta=rev.delta,
        )
        card.published[rev.journey_id] = Published(
            rev.revision,
            rev.charge,
            fingerprint(rev.journey) if rev.journey is not None else WITHDRAWN,
            day,
        )
        card.changed_journeys.add(rev.journey_id)
        body = message.SerializeToString(deterministic=True)
        queued.append(QueuedRevision(card.card_token, rev.journey_id, body, headers))
    _set_pending(catalog, card, taps, journeys, as_of)
    return queued


def _set_pending(
    catalog: FareCatalog,
    card: CardState,
    taps: Sequence[Tap],
    journeys: Iterable[PricedJourney],
    as_of: datetime | None,
) -> None:
    priced = {tap_id for j in journeys for leg in j.legs for tap_id in leg.tap_ids}
    waiting = [t.tapped_at for t in taps if t.tap_id not in priced]
    pending = None
    if waiting:
        since = min(waiting)
        due = since + incomplete_after(catalog, since)
        # At or before `as_of` the engine already had its say (e.g. an ignored lone exit).
        if as_of is None or due > as_of:
            pending = Pending(due, since)
    if pending != card.pending:
        card.pending = pending
        card.pending_changed = True


@dataclass
class BatchPricing:
    """One partition batch priced record by record, in memory (see the module docstring)."""

    catalog: FareCatalog
    partition: int
    watermark: datetime | None
    closed_through: datetime | None
    cards: dict[str, CardState]
    headers: Headers
    queued: list[QueuedRevision] = field(default_factory=list)
    repriced: set[str] = field(default_factory=set)
    _due: list[tuple[datetime, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for card in self.cards.values():
            if card.pending is not None:
                heapq.heappush(self._due, (card.pending.due_at, card.card_token))

    @property
    def as_of(self) -> datetime | None:
        """Up to when the partition is known: its watermark, or a closed day's end."""
        known = [t for t in (self.watermark, self.closed_through) if t is not None]
        return max(known) if known else None

    def record(self, tap: Tap, *, new: bool) -> None:
        """Handle one record: a new tap re-prices its card; then due cards are swept."""
        if self.watermark is None or tap.tapped_at > self.watermark:
            self.watermark = tap.tapped_at
        if new:
            card = self.cards[tap.card_token]
            card.add_tap(self.catalog, tap)
            self._reprice(card, tap.tapped_at)
        self.sweep()

    def sweep(self) -> int:
        """Re-price every card whose waiting entries are due by `as_of`, in card order."""
        as_of = self.as_of
        if as_of is None:
            return 0
        due: set[str] = set()
        while self._due and self._due[0][0] <= as_of:
            due_at, token = heapq.heappop(self._due)
            pending = self.cards[token].pending
            if pending is not None and pending.due_at == due_at:
                due.add(token)
        for token in sorted(due):
            card = self.cards[token]
            assert card.pending is not None
            self._reprice(card, card.pending.waiting_since)
        return len(due)

    def _reprice(self, card: CardState, around: datetime) -> None:
        self.queued += reprice(
            self.catalog, card, around=around, as_of=self.as_of, headers=self.headers
        )
        self.repriced.add(card.card_token)
        if card.pending is not None:
            heapq.heappush(self._due, (card.pending.due_at, card.card_token))
