"""The fares consumer against real Kafka and PostgreSQL: taps it cannot price are parked on
`<taps>.fares.dlq` with their reason, and the loop goes on pricing the taps around them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer

from clearway.consumer import dead_letter_topic
from clearway.events.v1 import events_pb2
from clearway.kafka import idempotent_producer
from clearway.runtime import RunningService
from services.fares.app import build

pytestmark = pytest.mark.integration
DAY = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0) - timedelta(days=2)


def tap(seq: int, stop: str, kind: int, minutes: int, card: str = "tok_fares_dlq_0001"):
    message = events_pb2.Tap(
        device_id="gate-test",
        sequence_number=seq,
        tap_id=f"gate-test:{seq}",
        card_token=card,
        stop_id=stop,
        kind=kind,
        operator_id="LUL",
    )
    message.tapped_at.FromDatetime(DAY + timedelta(minutes=minutes))
    return message


async def read(bootstrap: str, topic: str, want: int, timeout_s: float = 30.0) -> list:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records: list = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(records) < want and asyncio.get_running_loop().time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                records += batch
    finally:
        await consumer.stop()
    return records


async def test_unpriceable_taps_are_parked_and_the_rest_is_priced(settings_for):
    settings = settings_for("fares")
    app = build(settings)
    running = RunningService(app)
    await running.start()
    producer = idempotent_producer(settings.endpoints.kafka_bootstrap)
    await producer.start()
    entry, exit_ = events_pb2.TAP_KIND_ENTRY, events_pb2.TAP_KIND_EXIT
    try:
        for value in (
            tap(1, "KGX", entry, 0).SerializeToString(),
            tap(2, "NOWHERE", entry, 5).SerializeToString(),  # unknown stop
            b"\xff\xfe not a tap",
            tap(3, "OXC", events_pb2.TAP_KIND_UNSPECIFIED, 10).SerializeToString(),
            tap(4, "OXC", exit_, 20).SerializeToString(),
        ):
            await producer.send_and_wait(settings.topics.taps, value, key=b"tok_fares_dlq_0001")
        letters = await read(
            settings.endpoints.kafka_bootstrap, dead_letter_topic(settings.topics.taps, "fares"), 3
        )
        journeys = await read(settings.endpoints.kafka_bootstrap, settings.topics.journeys, 1)
    finally:
        await producer.stop()
        await running.stop()
    reasons = sorted(dict(r.headers)["clearway-reason"].decode() for r in letters)
    assert reasons == ["UNKNOWN_STOP", "UNKNOWN_TAP_KIND", "UNREADABLE_TAP"]
    assert all(
        dict(r.headers)["clearway-source-topic"] == settings.topics.taps.encode() for r in letters
    )
    [journey] = [events_pb2.PricedJourney.FromString(r.value) for r in journeys]
    assert [(leg.from_stop_id, leg.to_stop_id) for leg in journey.legs] == [("KGX", "OXC")]
    assert app.loop is not None and app.loop.stats.dead_letters == 3
