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
from datetime import UTC, date, datetime, time, timedelta

from clearway.money import Money
from services.fares.adapters.convert import journey_pb
from services.fares.domain import (
    CapSpent,
    JourneyRevision,
    PricedJourney,
    PricingStart,
    Tap,
    TapKind,
    price_card_from,
    revise,
)
from services.fares.domain.model import FareCatalog
from services.fares.domain.revision import WITHDRAWN, fingerprint

Headers = list[tuple[str, bytes]]
TapKey = tuple[datetime, str]
"""Where a tap sorts in a card's history: (instant, tap id), the engine's order."""


@dataclass(frozen=True, slots=True)
class Week:
    """The Monday-Sunday service week that weekly caps count over."""

    monday: date

    @classmethod
    def of(cls, service_day: date) -> Week:
        """The week of a service day."""
        return cls(service_day - timedelta(days=service_day.weekday()))

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
    return Week.of(service_day_of(catalog, at))


def incomplete_after(catalog: FareCatalog, at: datetime) -> timedelta:
    """Longest time an entry may wait for its exit under the fare data in force at `at`."""
    data = catalog.version_at(at)
    limits = [data.settings.incomplete_after_s]
    limits += [m.incomplete_after_s for m in data.maximum_fares if m.incomplete_after_s]
    return timedelta(seconds=max(limits))


def shortest_wait(catalog: FareCatalog, tap: Tap) -> timedelta:
    """The shortest time any entry may wait for its exit under the fare data at `tap`."""
    data = catalog.version_at(tap.tapped_at)
    limits = [data.settings.incomplete_after_s]
    limits += [m.incomplete_after_s for m in data.maximum_fares if m.incomplete_after_s]
    return timedelta(seconds=min(limits))


@dataclass(slots=True)
class Published:
    """What the last revision of a journey published, and what caps had counted before it
    (None when unknown, or for a withdrawn journey)."""

    revision: int
    charge: Money
    fingerprint: str | None
    service_day: date
    spent_before: CapSpent | None = None


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
    latest: TapKey | None = None  # the latest tap known

    def add_tap(self, catalog: FareCatalog, tap: Tap, day: date | None = None) -> None:
        """Know `tap` (idempotent); `day` is its service day when already known."""
        if tap.tap_id not in self.taps:
            self.taps[tap.tap_id] = tap
            self.days[tap.tap_id] = day or service_day_of(catalog, tap.tapped_at)
            key = (tap.tapped_at, tap.tap_id)
            if self.latest is None or key > self.latest:
                self.latest = key

    def set_pending(self, pending: Pending | None) -> None:
        """A new pending deadline (None: nothing waits for an exit)."""
        if pending != self.pending:
            self.pending = pending
            self.pending_changed = True


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
    around: TapKey,
    as_of: datetime | None,
    headers: Headers,
    resume: bool = True,
) -> list[QueuedRevision]:
    """Re-price the card's service week from the last boundary a tap at `around` cannot
    move (from the week's start when `resume` is False); return (and remember) the
    revisions that differ from what was published, and update its pending deadline.

    Pricing resumes at the first tap of the journey *before* the one in progress at
    `around` (that journey's first leg may change and link back to its predecessor, never
    further), with the cap spend recorded before it. So re-pricing costs the taps since
    then, not the week's: a card's re-pricing does not grow with the square of its taps.
    """
    day = card.days.get(around[1])
    week = Week.of(day) if day is not None else week_of(catalog, around[0])
    week_taps = sorted(
        (t for t in card.taps.values() if week.monday <= card.days[t.tap_id] <= week.sunday),
        key=_tap_key,
    )
    in_week = {
        jid: p for jid, p in card.published.items() if week.monday <= p.service_day <= week.sunday
    }
    start = PricingStart.of(week_taps)
    # A tap that gives the week its first rider category or fare media changes what every
    # earlier tap without one falls back to: then nothing before it is settled.
    before = PricingStart.of([t for t in week_taps if _tap_key(t) != around])
    cut = _resume_point(card, in_week, around) if resume and before == start else None
    if cut is None:
        taps, prior = week_taps, in_week
    else:
        key, spent = cut
        taps = [t for t in week_taps if _tap_key(t) >= key]
        start = PricingStart(spent, start.rider_category_id, start.fare_media_id)
        prior = {jid: p for jid, p in in_week.items() if _journey_key(card, jid) >= key}
    priced = price_card_from(catalog, card.card_token, taps, as_of=as_of, start=start)
    journeys, snapshots = [], []
    for journey, spent_before in zip(priced.journeys, priced.spent_before, strict=True):
        if week.monday <= journey.service_day <= week.sunday:
            journeys.append(journey)
            snapshots.append(spent_before)
    revisions = revise(
        {jid: (p.revision, p.charge) for jid, p in prior.items()},
        journeys,
        card_token=card.card_token,
        fingerprints={jid: p.fingerprint for jid, p in prior.items()},
    )
    queued = _remember(
        card,
        journeys=journeys,
        snapshots=snapshots,
        revisions=revisions,
        prior=prior,
        headers=headers,
    )
    _set_pending(catalog, card, taps, journeys, as_of)
    return queued


def _tap_key(tap: Tap) -> TapKey:
    return (tap.tapped_at, tap.tap_id)


def _journey_key(card: CardState, journey_id: str) -> TapKey:
    """A journey sorts by its first tap (journey ids are `j-<first tap id>`)."""
    first = card.taps.get(journey_id[2:])
    if first is None:  # not among the week's taps: it sorts before any resume point
        return (datetime.min.replace(tzinfo=UTC), journey_id)
    return _tap_key(first)


def _resume_point(
    card: CardState, published: dict[str, Published], around: TapKey
) -> tuple[TapKey, CapSpent] | None:
    """(first tap, cap spend before it) of the journey before the one in progress at
    `around`; None when the week must be priced from its start."""
    live = sorted(
        (_journey_key(card, jid), jid)
        for jid, p in published.items()
        if p.fingerprint != WITHDRAWN and jid[2:] in card.taps
    )
    before = [(key, jid) for key, jid in live if key < around]
    if len(before) < 2:
        return None
    key, jid = before[-2]
    spent = published[jid].spent_before
    return None if spent is None else (key, spent)


def _remember(
    card: CardState,
    *,
    journeys: Sequence[PricedJourney],
    snapshots: Sequence[CapSpent],
    revisions: Sequence[JourneyRevision],
    prior: dict[str, Published],
    headers: Headers,
) -> list[QueuedRevision]:
    """Record the revisions (and any changed cap spend) as published; queue the messages."""
    days = {j.journey_id: j.service_day for j in journeys}
    spent = {j.journey_id: s for j, s in zip(journeys, snapshots, strict=True)}
    queued: list[QueuedRevision] = []
    for rev in revisions:
        day = days.get(rev.journey_id) or prior[rev.journey_id].service_day
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
            spent.get(rev.journey_id),
        )
        card.changed_journeys.add(rev.journey_id)
        body = message.SerializeToString(deterministic=True)
        queued.append(QueuedRevision(card.card_token, rev.journey_id, body, headers))
    for jid, before in spent.items():
        kept = card.published.get(jid)
        if kept is not None and kept.spent_before != before:
            kept.spent_before = before  # same content, other caps before: keep it resumable
            card.changed_journeys.add(jid)
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
    card.set_pending(pending)


@dataclass
class BatchPricing:
    """One partition batch priced record by record, in memory (see the module docstring)."""

    catalog: FareCatalog
    partition: int
    watermark: datetime | None
    closed_through: datetime | None
    cards: dict[str, CardState]
    headers: Headers
    # False: every new tap re-prices its card's whole week (the reference the shortcuts
    # and resume points are tested against).
    resume: bool = True
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

    def record(self, tap: Tap, *, new: bool, day: date | None = None) -> None:
        """Handle one record: a new tap re-prices its card; then due cards are swept.
        `day` is the tap's service day when the caller knows it."""
        if self.watermark is None or tap.tapped_at > self.watermark:
            self.watermark = tap.tapped_at
        if new:
            card = self.cards[tap.card_token]
            card.add_tap(self.catalog, tap, day)
            if self.resume and self._waits_at_the_end(card, tap):
                due = tap.tapped_at + incomplete_after(self.catalog, tap.tapped_at)
                card.set_pending(Pending(due, tap.tapped_at))
                heapq.heappush(self._due, (due, card.card_token))
            else:
                self._reprice(card, _tap_key(tap))
        self.sweep()

    def _waits_at_the_end(self, card: CardState, tap: Tap) -> bool:
        """True when re-pricing could only make `tap` pending: an entry after every tap
        the card has, with nothing else waiting, that cannot be incomplete yet, and that
        does not give the card its first rider category or fare media. The journeys
        before it are then unchanged (pricing is a left fold), so none is re-priced."""
        if tap.kind is not TapKind.ENTRY or card.pending is not None:
            return False
        if card.latest != _tap_key(tap):  # an earlier tap than one already known
            return False
        as_of = self.as_of
        if as_of is not None and as_of >= tap.tapped_at + shortest_wait(self.catalog, tap):
            return False
        week = Week.of(card.days[tap.tap_id])
        mine = [
            t
            for t in card.taps.values()
            if week.monday <= card.days[t.tap_id] <= week.sunday and t is not tap
        ]
        if tap.rider_category_id and not any(t.rider_category_id for t in mine):
            return False
        return not (tap.fare_media_id and not any(t.fare_media_id for t in mine))

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
            self._reprice(card, (card.pending.waiting_since, ""))
        return len(due)

    def _reprice(self, card: CardState, around: TapKey) -> None:
        self.queued += reprice(
            self.catalog,
            card,
            around=around,
            as_of=self.as_of,
            headers=self.headers,
            resume=self.resume,
        )
        self.repriced.add(card.card_token)
        if card.pending is not None:
            heapq.heappush(self._due, (card.pending.due_at, card.card_token))
