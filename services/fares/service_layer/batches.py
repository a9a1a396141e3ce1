"""Use cases of the fares service: price a partition batch of taps, close a service day.

Each runs inside the caller's PostgreSQL transaction, which also holds the partition's
position row-locked: the taps, what was published, the pending deadlines, the queued
revisions (outbox) and the new position commit together or not at all, so a crash at any
point replays into exactly the same state. Whatever the batch size, the I/O is a fixed
handful of multi-row statements: store the taps, load the touched cards' weeks, load what
was published, write what changed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from clearway.events.v1 import events_pb2
from services.fares.adapters.convert import tap_from_proto
from services.fares.adapters.state_store import (
    PendingRow,
    PublishedRow,
    StateStore,
    TapRow,
    TapWindow,
)
from services.fares.domain import Tap
from services.fares.domain.model import FareCatalog
from services.fares.service_layer.repricing import (
    BatchPricing,
    CardState,
    Headers,
    Pending,
    Published,
    QueuedRevision,
    Week,
    service_day_of,
)


@dataclass(frozen=True, slots=True)
class TapRecord:
    """A decoded tap with the bytes it arrived as (what is stored)."""

    tap: Tap
    body: bytes
    offset: int
    service_day: date


@dataclass(frozen=True, slots=True)
class Queued:
    """Revisions committed to the outbox (ids in order), ready to relay."""

    partition: int
    ids: list[int]
    revisions: list[QueuedRevision]
    cards_repriced: int


NOTHING = Queued(-1, [], [], 0)


async def price_batch(
    store: StateStore,
    catalog: FareCatalog,
    *,
    topic: str,
    partition: int,
    records: Sequence[TapRecord],
    next_offset: int,
    headers: Headers,
) -> Queued:
    """Store and price the records not yet processed, queue what changed, advance to
    `next_offset`. Records before the stored position were processed already (by this
    consumer before a crash, or by another before a rebalance) and are skipped."""
    position = await store.lock_position(topic, partition)
    if next_offset <= position.next_offset:
        return NOTHING
    todo = [r for r in records if r.offset >= position.next_offset]
    closed = await store.closed_through()
    first: dict[str, TapRecord] = {}
    for r in todo:
        first.setdefault(r.tap.tap_id, r)
    new_ids = await store.add_taps(
        [TapRow(r.tap.tap_id, r.tap.card_token, r.tap.tapped_at, r.body) for r in first.values()]
    )
    new = [r.tap.tap_id in new_ids and first[r.tap.tap_id] is r for r in todo]
    watermark_end = max(
        [t for t in [position.watermark, *(r.tap.tapped_at for r in todo)] if t is not None],
        default=None,
    )
    as_of_end = max([t for t in (watermark_end, closed) if t is not None], default=None)
    touched = [r for r, is_new in zip(todo, new, strict=True) if is_new]
    due = await store.pending_due(partition, as_of_end, sorted({r.tap.card_token for r in touched}))
    cards = await load_cards(store, catalog, partition, touched, due, unseen=new_ids)
    pricing = BatchPricing(catalog, partition, position.watermark, closed, cards, headers)
    for r, is_new in zip(todo, new, strict=True):
        pricing.record(r.tap, new=is_new, day=r.service_day)
    ids = await write_back(store, partition, pricing)
    await store.advance(topic, partition, next_offset, pricing.watermark)
    return Queued(partition, ids, pricing.queued, len(pricing.repriced))


async def sweep_partition(
    store: StateStore, catalog: FareCatalog, *, topic: str, partition: int, headers: Headers
) -> Queued:
    """Price the partition's waiting entries that are due by max(watermark, closed days)."""
    position = await store.lock_position(topic, partition)
    closed = await store.closed_through()
    as_of = max([t for t in (position.watermark, closed) if t is not None], default=None)
    if as_of is None:
        return NOTHING
    due = await store.pending_due(partition, as_of)
    if not due:
        return NOTHING
    cards = await load_cards(store, catalog, partition, [], due)
    pricing = BatchPricing(catalog, partition, position.watermark, closed, cards, headers)
    pricing.sweep()
    ids = await write_back(store, partition, pricing)
    return Queued(partition, ids, pricing.queued, len(pricing.repriced))


async def load_cards(
    store: StateStore,
    catalog: FareCatalog,
    partition: int,
    touched: Iterable[TapRecord],
    due: Iterable[PendingRow],
    *,
    unseen: Collection[str] = (),
) -> dict[str, CardState]:
    """The state of every card a batch may re-price: the cards of new taps (the weeks of
    those taps) and the cards whose waiting entries may fall due (the week they wait in).
    Taps of `unseen` (the batch's own new taps) are left out: each becomes known when its
    record is reached."""
    cards: dict[str, CardState] = {}
    windows: dict[tuple[str, date], TapWindow] = {}

    def want(card: str, at: datetime, day: date) -> None:
        week = Week.of(day)
        if (card, week.monday) not in windows:
            since, until = week.tap_window(catalog, at)
            windows[(card, week.monday)] = TapWindow(card, since, until)
        cards.setdefault(card, CardState(card, partition))

    for record in touched:
        want(record.tap.card_token, record.tap.tapped_at, record.service_day)
    for pending in due:
        since = pending.waiting_since or pending.due_at
        want(pending.card_token, since, service_day_of(catalog, since))
        cards[pending.card_token].pending = Pending(pending.due_at, since)
    if not cards:
        return cards
    for card, bodies in (await store.taps_in(list(windows.values()))).items():
        state = cards[card]
        for tap_id, body in bodies.items():
            if tap_id not in unseen:
                state.add_tap(catalog, tap_from_proto(events_pb2.Tap.FromString(body)))
    mondays = [monday for _, monday in windows]
    first_day, last_day = min(mondays), max(mondays).fromordinal(max(mondays).toordinal() + 6)
    for row in await store.published_of(sorted(cards), first_day, last_day):
        cards[row.card_token].published[row.journey_id] = Published(
            row.revision, row.charge, row.fingerprint, row.service_day, row.spent_before
        )
    return cards


async def write_back(store: StateStore, partition: int, pricing: BatchPricing) -> list[int]:
    """Store what the pricing changed (published, pending) and queue its revisions."""
    published: list[PublishedRow] = []
    pending: list[PendingRow] = []
    cleared: list[str] = []
    for card in pricing.cards.values():
        for jid in sorted(card.changed_journeys):
            p = card.published[jid]
            published.append(
                PublishedRow(
                    jid, card.card_token, p.service_day, p.revision, p.charge, p.fingerprint
                )
            )
        if card.pending_changed:
            if card.pending is None:
                cleared.append(card.card_token)
            else:
                pending.append(
                    PendingRow(
                        card.card_token, partition, card.pending.due_at, card.pending.waiting_since
                    )
                )
    await store.record_published_many(published)
    await store.write_pending(pending, cleared)
    return await store.enqueue_many(
        partition, [(q.card_token, q.body, q.headers) for q in pricing.queued]
    )
