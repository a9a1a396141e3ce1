"""The CLI's reading functions over real Kafka topics (journeys and benefits)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from clearway.events.v1 import events_pb2
from clearway.kafka import Topics, ensure_topics
from services.reports.adapters.feed import network_places
from services.reports.adapters.journeys import read_journeys
from services.reports.adapters.topics import TopicNotFoundError
from services.reports.domain.scope import Period, council_of
from services.reports.entrypoints.cli import usage_reports
from services.reports.tests.day import (
    CAMDEN_BUDGET,
    CAMDEN_CONCESSIONS,
    CAMDEN_OD,
    CAMDEN_REWARDS,
    CAMDEN_RIDERSHIP,
    CAMDEN_VOUCHERS,
    COUNCIL,
    PERIOD,
    day_scheme,
    hand_counted_day,
    hand_counted_postings,
    identifiers,
)

LONDON_FEED = Path(__file__).resolve().parents[3] / "examples" / "feeds" / "london"

pytestmark = pytest.mark.integration


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def files_in(path: Path) -> list[Path]:
    return list(path.iterdir())


async def publish(
    bootstrap: str,
    prefix: str,
    journeys: list[events_pb2.PricedJourney],
    postings: list[events_pb2.BenefitPosting],
) -> None:
    """Create the journeys and benefits topics of `prefix` (3 partitions each) and publish
    `journeys` (keyed by card token, as fares does) and `postings` (by posting id), in order."""
    topics = Topics(prefix)
    await ensure_topics(bootstrap, [topics.journeys, topics.benefits], partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for event in journeys:
            await producer.send_and_wait(
                topics.journeys, event.SerializeToString(), key=event.card_token.encode()
            )
        for posting in postings:
            await producer.send_and_wait(
                topics.benefits, posting.SerializeToString(), key=posting.posting_id.encode()
            )
    finally:
        await producer.stop()


async def test_camden_reports_from_the_journeys_and_benefits_topics(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    prefix = f"{unique_name}."
    journeys, postings = hand_counted_day(), hand_counted_postings()
    await publish(kafka_bootstrap, prefix, journeys, postings)

    period = Period.parse(PERIOD)
    scheme = day_scheme()
    paths = await usage_reports(
        kafka_bootstrap,
        prefix,
        period,
        tmp_path,
        scheme=scheme,
        places=network_places(LONDON_FEED),
        council=council_of(scheme, COUNCIL, period),
    )

    assert read_csv(tmp_path / "ridership.csv") == CAMDEN_RIDERSHIP
    assert read_csv(tmp_path / "origin_destination.csv") == CAMDEN_OD
    assert read_csv(tmp_path / "concession_take_up.csv") == CAMDEN_CONCESSIONS
    assert read_csv(tmp_path / "voucher_spend.csv") == CAMDEN_VOUCHERS
    assert read_csv(tmp_path / "budget.csv") == CAMDEN_BUDGET
    assert read_csv(tmp_path / "rewards.csv") == CAMDEN_REWARDS
    assert len(paths) == 6 * 3 + 2
    for path in paths:
        data = path.read_bytes()
        for ident in identifiers(journeys, postings):
            assert ident.encode() not in data, f"{ident} leaked into {path.name}"


async def test_a_missing_topic_is_reported_not_created(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    topics = Topics(f"{unique_name}.")
    with pytest.raises(TopicNotFoundError):
        await read_journeys(kafka_bootstrap, topics.journeys, Period.parse(PERIOD))
    # journeys published but no benefits topic: the reports are refused, not half-made
    await ensure_topics(kafka_bootstrap, [topics.journeys], partitions=1)
    with pytest.raises(TopicNotFoundError, match="benefits"):
        await usage_reports(
            kafka_bootstrap,
            topics.prefix,
            Period.parse(PERIOD),
            tmp_path,
            scheme=day_scheme(),
            places=network_places(None),
        )
    assert not files_in(tmp_path)
