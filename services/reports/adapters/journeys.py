"""Priced journeys from the `journeys` topic."""

from __future__ import annotations

from datetime import UTC

from clearway.events.v1 import events_pb2
from services.reports.adapters.topics import read_topic
from services.reports.domain.scope import Period
from services.reports.domain.usage import Journey, Leg


def journey_from_event(event: events_pb2.PricedJourney) -> Journey:
    """The fields the reports use, from a `PricedJourney` event."""
    return Journey(
        journey_id=event.journey_id,
        card_token=event.card_token,
        revision=event.revision,
        service_day=event.service_day,
        rider_category_id=event.rider_category_id,
        legs=tuple(
            Leg(
                operator_id=leg.operator_id,
                from_stop_id=leg.from_stop_id,
                to_stop_id=leg.to_stop_id,
                # an exit without entry has only its exit time
                entry_at=(leg.entry_at if leg.HasField("entry_at") else leg.exit_at).ToDatetime(
                    tzinfo=UTC
                ),
            )
            for leg in event.legs
        ),
    )


async def read_journeys(bootstrap: str, topic: str, period: Period | None) -> list[Journey]:
    """Every journey of `period` (None: of any day) on `topic` (read whole, see
    `read_topic`); only the latest revision of each is kept, withdrawn ones too."""
    latest: dict[str, Journey] = {}

    def keep(value: bytes) -> None:
        event = events_pb2.PricedJourney.FromString(value)
        if period is not None and not period.contains(event.service_day):
            return
        seen = latest.get(event.journey_id)
        if seen is None or event.revision > seen.revision:
            latest[event.journey_id] = journey_from_event(event)

    await read_topic(bootstrap, topic, keep)
    return list(latest.values())
