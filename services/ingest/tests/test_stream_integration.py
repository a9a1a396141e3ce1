"""Ingest against real Kafka and Redis: acks, durability, duplicates, dead letters."""

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from aiokafka import AIOKafkaConsumer

from clearway.events.v1 import events_pb2
from clearway.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from clearway.runtime import RunningService
from services.ingest.app import build

pytestmark = pytest.mark.integration


def _tap(seq: int, card: str = "tok_abcdef123456", **fields: object) -> events_pb2.Tap:
    tap = events_pb2.Tap(
        device_id="gate-KGX-01",
        sequence_number=seq,
        card_token=card,
        stop_id="KGX",
        kind=events_pb2.TAP_KIND_ENTRY,
        operator_id="LU",
    )
    tap.tapped_at.FromDatetime(datetime.now(UTC) - timedelta(minutes=1))
    for name, value in fields.items():
        setattr(tap, name, value)
    return tap


async def _send(port: int, batches: list[list[events_pb2.Tap]]) -> list[list[ingest_pb2.TapAck]]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)

        async def requests():
            for batch in batches:
                yield ingest_pb2.StreamTapsRequest(taps=batch)

        return [list(r.acks) async for r in stub.StreamTaps(requests())]


async def _drain(kafka_bootstrap: str, topic: str, expected: int) -> list:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records = []
    try:
        for _ in range(40):
            batch = await consumer.getmany(timeout_ms=250)
            for recs in batch.values():
                records.extend(recs)
            if len(records) >= expected:
                # one more poll to catch anything extra that should not be there
                for recs in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(recs)
                break
    finally:
        await consumer.stop()
    return records


async def test_each_tap_gets_one_ack_and_accepted_taps_are_on_the_taps_topic(
    settings_for, kafka_bootstrap
):
    settings = settings_for("ingest")
    running = RunningService(build(settings))
    port = await running.start()
    try:
        good = [_tap(1), _tap(2, kind=events_pb2.TAP_KIND_EXIT, stop_id="OXC")]
        bad = [_tap(3, card_token="4111111111111111"), _tap(4, stop_id="")]
        acks = await _send(port, [good + bad, [_tap(1)]])
    finally:
        await running.stop()

    statuses = [(a.sequence_number, a.status, a.reason_code) for batch in acks for a in batch]
    assert statuses == [
        (1, ingest_pb2.ACK_STATUS_ACCEPTED, ""),
        (2, ingest_pb2.ACK_STATUS_ACCEPTED, ""),
        (3, ingest_pb2.ACK_STATUS_REJECTED, "RAW_CARD_NUMBER"),
        (4, ingest_pb2.ACK_STATUS_REJECTED, "MISSING_STOP_ID"),
        (1, ingest_pb2.ACK_STATUS_DUPLICATE, ""),
    ]
    accepted = await _drain(kafka_bootstrap, settings.topics.taps, 2)
    taps = sorted((events_pb2.Tap.FromString(r.value) for r in accepted), key=lambda t: t.tap_id)
    assert [t.tap_id for t in taps] == ["gate-KGX-01:1", "gate-KGX-01:2"]
    assert {r.key for r in accepted} == {b"tok_abcdef123456"}
    letters = await _drain(kafka_bootstrap, settings.topics.taps_dlq, 2)
    parked = sorted(
        (events_pb2.RejectedTap.FromString(r.value) for r in letters),
        key=lambda x: x.tap.sequence_number,
    )
    assert [(p.tap.sequence_number, p.reason_code) for p in parked] == [
        (3, "RAW_CARD_NUMBER"),
        (4, "MISSING_STOP_ID"),
    ]
    # the raw card number never reaches Kafka
    assert all(b"4111111111111111" not in r.value for r in letters)


async def test_a_resent_batch_after_restart_is_all_duplicates(settings_for):
    settings = settings_for("ingest")
    batch = [_tap(10), _tap(11)]
    first = RunningService(build(settings))
    port = await first.start()
    try:
        acks1 = await _send(port, [batch])
    finally:
        await first.stop()
    second = RunningService(build(settings))
    port = await second.start()
    try:
        acks2 = await _send(port, [batch, batch])
    finally:
        await second.stop()
    assert [a.status for a in acks1[0]] == [ingest_pb2.ACK_STATUS_ACCEPTED] * 2
    assert [a.status for b in acks2 for a in b] == [ingest_pb2.ACK_STATUS_DUPLICATE] * 4
