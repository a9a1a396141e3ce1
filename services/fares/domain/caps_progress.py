"""How much of each cap that counts a card it has used today and this week. Pure: the
card's taps of the service week are re-priced up to an instant with the engine itself,
and what its caps counted is read off the same fold that charges journeys.

A cap counts the card when it applies to the card's rider category and fare media (the
first of the week's taps that carries one, else the fare data's defaults: a card with no
taps gets the default category's caps at zero) and, for a day cap restricted to a service,
when that service runs on the service day; or when something the card did this period
counted towards it (a tap of another category).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from clearway.money import Money

from .model import Cap, CapPeriod, FareCatalog, FareData, Tap, as_catalog
from .pricing import PricingStart, cap_spend


@dataclass(frozen=True, slots=True)
class CapProgress:
    """One cap in one period: its amount, what counted towards it, what is left."""

    cap_id: str
    name: str
    period: CapPeriod
    period_start: date  # the service day, or the Monday of the service week
    amount: Money
    spent: Money
    remaining: Money


@dataclass(frozen=True, slots=True)
class CardCapsProgress:
    """A card's caps at an instant: day caps first, then week caps, in the feed's order."""

    at: datetime
    service_day: date
    week_start: date
    rider_category_id: str | None
    fare_media_id: str | None
    fare_version: str
    caps: tuple[CapProgress, ...]


def caps_progress(
    fare_data: FareData | FareCatalog, card_token: str, taps: Sequence[Tap], at: datetime
) -> CardCapsProgress:
    """The card's progress towards every cap that counts it, for the service day and the
    service week containing `at`; only its taps of that week up to `at` count (an entry
    still waiting for its exit at `at` has not been charged, so it counts nothing)."""
    catalog = as_catalog(fare_data)
    data = catalog.version_at(at)
    day = data.service_day(at)
    monday = day - timedelta(days=day.weekday())
    week = [
        t
        for t in taps
        if t.tapped_at <= at
        and monday <= catalog.version_at(t.tapped_at).service_day(t.tapped_at) <= day
    ]
    week.sort(key=lambda t: (t.tapped_at, t.tap_id))
    start = PricingStart.of(week)
    spent = {
        (cap_id, period): amount
        for cap_id, period, amount in cap_spend(catalog, card_token, week, as_of=at, start=start)
    }
    category = start.rider_category_id or data.default_rider_category_id
    media = start.fare_media_id or data.settings.default_fare_media_id
    starts = {CapPeriod.DAY: day, CapPeriod.WEEK: monday}
    counted = {cap_id for cap_id, period in spent if period in starts.values()}
    chosen = [
        cap
        for cap in data.caps
        if (cap.applies_to(category, media) and _counts_on(data, cap, day)) or cap.cap_id in counted
    ]
    progress = tuple(
        _progress(cap, starts[cap.period], spent.get((cap.cap_id, starts[cap.period]), 0), data)
        for period in (CapPeriod.DAY, CapPeriod.WEEK)
        for cap in chosen
        if cap.period is period
    )
    return CardCapsProgress(at, day, monday, category, media, data.fare_version, progress)


def _counts_on(data: FareData, cap: Cap, day: date) -> bool:
    """A day cap restricted to a service (clearway_caps.service_id) counts only on that
    service's days; every other cap counts on every day."""
    if cap.service_id is None or cap.period is CapPeriod.WEEK:
        return True
    return data.calendar.is_active(cap.service_id, day)


def _progress(cap: Cap, period_start: date, spent_minor: int, data: FareData) -> CapProgress:
    currency = data.currency
    return CapProgress(
        cap.cap_id,
        cap.name,
        cap.period,
        period_start,
        Money(cap.amount_minor, currency),
        Money(spent_minor, currency),
        Money(max(cap.amount_minor - spent_minor, 0), currency),
    )
