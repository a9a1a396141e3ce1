"""Re-price one card's week and turn the difference into published revisions.

Pricing is a pure function of the card's taps (and `as_of`, which only decides whether
an entry without exit is still waiting or already incomplete); this module loads the
taps, calls the engine, and records what changed, inside the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from clearway.events.v1 import events_pb2
from clearway.telemetry import kafka_headers_with_trace
from services.fares.adapters.convert import journey_pb, tap_from_proto
from services.fares.adapters.state_store import StateStore
from services.fares.domain import price_card, revise
from services.fares.domain.model import FareCatalog
from services.fares.domain.revision import WITHDRAWN, fingerprint


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


def week_of(catalog: FareCatalog, at: datetime) -> Week:
    """The service week containing instant `at`."""
    day = catalog.version_at(at).service_day(at)
    return Week(day - timedelta(days=day.weekday()))


def incomplete_after(catalog: FareCatalog, at: datetime) -> timedelta:
    """Longest time an entry may wait for its exit under the fare data in force at `at`."""
    data = catalog.version_at(at)
    limits = [data.settings.incomplete_after_s]
    limits += [m.incomplete_after_s for m in data.maximum_fares if m.incomplete_after_s]
    return timedelta(seconds=max(limits))


async def reprice_card(
    store: StateStore,
    catalog: FareCatalog,
    card_token: str,
    *,
    partition: int,
    around: datetime,
    as_of: datetime | None,
) -> int:
    """Re-price `card_token`'s week around `around`; enqueue what changed; return that count."""
    week = week_of(catalog, around)
    since, until = week.tap_window(catalog, around)
    taps = [
        tap_from_proto(events_pb2.Tap.FromString(body))
        for body in await store.card_taps(card_token, since, until)
    ]
    taps = [
        t for t in taps if week.monday <= catalog.version_at(t.tapped_at).service_day(t.tapped_at)
    ]
    taps = [
        t for t in taps if catalog.version_at(t.tapped_at).service_day(t.tapped_at) <= week.sunday
    ]
    journeys = [
        j
        for j in price_card(catalog, taps, as_of=as_of)
        if week.monday <= j.service_day <= week.sunday
    ]
    published = await store.published(card_token, week.monday, week.sunday)
    revisions = revise(
        {jid: (number, charge) for jid, (number, charge, _) in published.items()},
        journeys,
        card_token=card_token,
        fingerprints={jid: print_ for jid, (_, _, print_) in published.items()},
    )
    headers = kafka_headers_with_trace()
    days = {j.journey_id: j.service_day for j in journeys}
    for rev in revisions:
        service_day = days.get(rev.journey_id) or await store.published_day(rev.journey_id)
        message = journey_pb(
            rev.journey,
            journey_id=rev.journey_id,
            card_token=card_token,
            service_day=service_day.isoformat(),
            revision=rev.revision,
            charge=rev.charge,
            delta=rev.delta,
        )
        await store.record_published(
            rev.journey_id,
            card_token,
            service_day=service_day,
            revision=rev.revision,
            charge=rev.charge,
            fingerprint=fingerprint(rev.journey) if rev.journey is not None else WITHDRAWN,
        )
        await store.enqueue(card_token, message.SerializeToString(deterministic=True), headers)
    priced = {tap_id for j in journeys for leg in j.legs for tap_id in leg.tap_ids}
    waiting = [t.tapped_at for t in taps if t.tap_id not in priced]
    due = min(waiting) + incomplete_after(catalog, min(waiting)) if waiting else None
    if due is not None and as_of is not None and due <= as_of:
        due = None  # the engine already had its say on these taps (e.g. an ignored lone exit)
    await store.set_pending(card_token, partition, due)
    return len(revisions)
