"""The CLI's reading function over a real Kafka topic."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from clearway.kafka import Topics, ensure_topics
from services.reports.adapters.journeys import TopicNotFoundError, read_journeys
from services.reports.entrypoints.cli import usage_reports
from services.reports.tests.day import (
    EXPECTED_CONCESSIONS,
    EXPECTED_OD_AREAS,
    EXPECTED_RIDERSHIP,
    PERIOD,
    hand_counted_day,
    identifiers,
)

LONDON_FEED = Path(__file__).resolve().parents[3] / "examples" / "feeds" / "london"

pytestmark = pytest.mark.integration


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


async def test_reports_from_the_journeys_topic(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    prefix = f"{unique_name}."
    topic = Topics(prefix).journeys
    await ensure_topics(kafka_bootstrap, [topic], partitions=3)
    events = hand_counted_day()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(
                topic, event.SerializeToString(), key=event.card_token.encode()
            )
    finally:
        await producer.stop()

    paths = await usage_reports(kafka_bootstrap, prefix, PERIOD, tmp_path, LONDON_FEED)

    assert read_csv(tmp_path / "ridership_by_operator_hour.csv") == EXPECTED_RIDERSHIP
    assert read_csv(tmp_path / "origin_destination.csv") == EXPECTED_OD_AREAS
    assert read_csv(tmp_path / "concession_take_up.csv") == EXPECTED_CONCESSIONS
    for path in paths:
        text = path.read_text(encoding="utf-8")
        assert not any(ident in text for ident in identifiers(events)), path.name


async def test_a_missing_topic_is_reported_not_created(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    with pytest.raises(TopicNotFoundError):
        await read_journeys(kafka_bootstrap, Topics(f"{unique_name}.").journeys, PERIOD)
