"""A card's journey history: what one stored revision is, and the newest-first order."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from google.protobuf.timestamp_pb2 import Timestamp

from clearway.events.v1.events_pb2 import PricedJourney
from services.accounts.domain.errors import InvalidJourneyError
from services.accounts.domain.paging import (
    MAX_JOURNEY_ID_CHARS,
    HistoryPosition,
    encode_page_token,
)

_US_PER_S = 1_000_000
_US_PER_DAY = 86_400 * _US_PER_S
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@dataclass(frozen=True, slots=True)
class JourneyRevision:
    """One revision of one journey, as stored: the sort key plus the serialized event."""

    card_token: str
    journey_id: str
    revision: int
    started_at_us: int
    # False when the revision has no legs and `started_at_us` is a stand-in (see below).
    started_from_legs: bool
    service_day: date | None
    body: bytes
    # What this revision charges in total (minor units) and in which currency ("" when
    # the event carries no charge: nothing to debit).
    charge_minor: int = 0
    charge_currency: str = ""

    @property
    def position(self) -> HistoryPosition:
        """Where this revision sorts in its card's history."""
        return HistoryPosition(self.started_at_us, self.journey_id)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of a card's history (serialized PricedJourney bodies) and the next token."""

    bodies: tuple[bytes, ...]
    next_page_token: str


def timestamp_us(ts: Timestamp) -> int:
    """A protobuf Timestamp as UTC microseconds (PostgreSQL's precision; nanos floored)."""
    return ts.seconds * _US_PER_S + ts.nanos // 1000


def journey_started_at_us(journey: PricedJourney) -> int | None:
    """When the journey started: the first leg's entry (its exit if it has no entry)."""
    for leg in journey.legs:
        if leg.HasField("entry_at"):
            return timestamp_us(leg.entry_at)
        if leg.HasField("exit_at"):
            return timestamp_us(leg.exit_at)
    return None


def _service_day(raw: str) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidJourneyError(
            "BAD_SERVICE_DAY", f"service_day {raw!r} is not YYYY-MM-DD"
        ) from None


def _stand_in_start_us(journey: PricedJourney, service_day: date | None) -> int:
    """A start for a revision without legs (a journey that vanished): midnight UTC of its
    service day, else its pricing time. The store keeps an earlier leg-based start."""
    if service_day is not None:
        return (service_day.toordinal() - _EPOCH_ORDINAL) * _US_PER_DAY
    if journey.HasField("priced_at"):
        return timestamp_us(journey.priced_at)
    return 0


def journey_revision(journey: PricedJourney, key: bytes | None, body: bytes) -> JourneyRevision:
    """The stored form of a `journeys` event; InvalidJourneyError when it cannot be stored."""
    if not journey.journey_id:
        raise InvalidJourneyError("MISSING_JOURNEY_ID", "journey_id is empty")
    if len(journey.journey_id) > MAX_JOURNEY_ID_CHARS:
        raise InvalidJourneyError(
            "JOURNEY_ID_TOO_LONG", f"journey_id is longer than {MAX_JOURNEY_ID_CHARS} characters"
        )
    if not journey.card_token:
        raise InvalidJourneyError("MISSING_CARD_TOKEN", "card_token is empty")
    if key is not None and key != journey.card_token.encode():
        raise InvalidJourneyError("CARD_TOKEN_MISMATCH", "message key is not the card token")
    if journey.revision < 1:
        raise InvalidJourneyError("BAD_REVISION", "revision must be >= 1")
    service_day = _service_day(journey.service_day)
    started = journey_started_at_us(journey)
    return JourneyRevision(
        card_token=journey.card_token,
        journey_id=journey.journey_id,
        revision=journey.revision,
        started_at_us=started if started is not None else _stand_in_start_us(journey, service_day),
        started_from_legs=started is not None,
        service_day=service_day,
        body=body,
        charge_minor=journey.charge.amount_minor if journey.HasField("charge") else 0,
        charge_currency=journey.charge.currency if journey.HasField("charge") else "",
    )


def latest_revisions(revisions: Iterable[JourneyRevision]) -> list[JourneyRevision]:
    """The highest revision of each journey, in any arrival order (the history view)."""
    latest: dict[str, JourneyRevision] = {}
    for rev in revisions:
        current = latest.get(rev.journey_id)
        if current is None or rev.revision > current.revision:
            latest[rev.journey_id] = rev
    return list(latest.values())


def newest_first(revisions: Iterable[JourneyRevision]) -> list[JourneyRevision]:
    """History order: latest start first, then journey_id descending for ties."""
    return sorted(revisions, key=lambda r: r.position, reverse=True)


def history_page(
    fetched: Sequence[JourneyRevision], page_size: int, card_token: str
) -> HistoryPage:
    """A page from up to `page_size + 1` rows fetched in history order.

    The extra row only tells whether another page exists; the token points at the last
    row served, so the next page starts strictly after it.
    """
    served = fetched[:page_size]
    more = len(fetched) > page_size and len(served) > 0
    token = encode_page_token(served[-1].position, card_token) if more else ""
    return HistoryPage(bodies=tuple(r.body for r in served), next_page_token=token)
