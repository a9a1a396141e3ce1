"""Send test taps to fares the way ingest does: `events.v1.Tap` on the taps topic, keyed by
the card token (for tests that run the fares service in-process)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

from clearway.events.v1 import events_pb2
from clearway.kafka import idempotent_producer
from clearway.settings import ServiceSettings
from services.fares.domain import Tap, TapKind

_KINDS = {
    TapKind.ENTRY: events_pb2.TAP_KIND_ENTRY,
    TapKind.EXIT: events_pb2.TAP_KIND_EXIT,
    TapKind.BOARD: events_pb2.TAP_KIND_BOARD,
}


def tap_message(tap: Tap, seq: int) -> events_pb2.Tap:
    """The engine's tap as the topic carries it."""
    message = events_pb2.Tap(
        device_id="gate-test",
        sequence_number=seq,
        tap_id=tap.tap_id,
        card_token=tap.card_token,
        stop_id=tap.stop_id,
        kind=_KINDS[tap.kind],
        route_id=tap.route_id or "",
        operator_id=tap.operator_id or "",
        rider_category_id=tap.rider_category_id or "",
        fare_media_id=tap.fare_media_id or "",
    )
    message.tapped_at.FromDatetime(tap.tapped_at.astimezone(UTC))
    return message


async def publish_taps(settings: ServiceSettings, taps: Sequence[Tap]) -> None:
    """Send the taps to `settings`' taps topic, in order, acknowledged by Kafka."""
    producer = idempotent_producer(settings.endpoints.kafka_bootstrap)
    await producer.start()
    try:
        for seq, tap in enumerate(taps, 1):
            await producer.send_and_wait(
                settings.topics.taps,
                tap_message(tap, seq).SerializeToString(),
                key=tap.card_token.encode(),
            )
    finally:
        await producer.stop()
