"""Reading priced journeys from Kafka and writing report files."""

from __future__ import annotations

import asyncio
import csv
import time
from datetime import UTC
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from clearway.events.v1 import events_pb2
from services.reports.domain.chart import ridership_svg
from services.reports.domain.usage import Journey, Leg, Table, UsageReports


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


ASSIGN_TIMEOUT_S = 30.0


class TopicNotFoundError(Exception):
    """The journeys topic does not exist (nothing has been priced under this prefix)."""


async def read_journeys(bootstrap: str, topic: str, service_day: str) -> list[Journey]:
    """Every journey of `service_day` on `topic`, read from the beginning (read_committed)
    up to the end offsets seen at the start; only the latest revision of each is kept.

    No consumer group and no committed offsets; a missing topic is reported rather than
    auto-created."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    latest: dict[str, Journey] = {}
    try:
        if topic not in await consumer.topics():
            raise TopicNotFoundError(topic)
        consumer.subscribe([topic])  # it exists: subscribing cannot auto-create it
        deadline = time.monotonic() + ASSIGN_TIMEOUT_S
        while not (partitions := sorted(consumer.assignment())):
            if time.monotonic() > deadline:
                raise TopicNotFoundError(f"{topic} (no partitions assigned)")
            await asyncio.sleep(0.05)
        ends = await consumer.end_offsets(partitions)
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.value is None:
                        continue
                    event = events_pb2.PricedJourney.FromString(record.value)
                    if event.service_day != service_day:
                        continue
                    seen = latest.get(event.journey_id)
                    if seen is None or event.revision > seen.revision:
                        latest[event.journey_id] = journey_from_event(event)
    finally:
        await consumer.stop()
    return list(latest.values())


def write_table(table: Table, out_dir: Path) -> Path:
    """`<out_dir>/<table.name>.csv`."""
    path = out_dir / f"{table.name}.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(table.columns)
        writer.writerows(table.rows)
    return path


def write_reports(reports: UsageReports, out_dir: Path) -> list[Path]:
    """Each report's CSV and the ridership chart (SVG); the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        write_table(t, out_dir)
        for t in (reports.ridership, reports.origin_destination, reports.concessions)
    ]
    svg = out_dir / f"{reports.ridership.name}.svg"
    svg.write_text(ridership_svg(reports.ridership, reports.period), encoding="utf-8")
    paths.append(svg)
    return paths
