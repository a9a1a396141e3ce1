"""Cards' concessions over ingest's real gRPC server (real Kafka, Redis, PostgreSQL): a
`CardConcession` published on `concessions` (as accounts' outbox does) is followed in
memory, and the taps ingest accepts after it carry the concession's rider category on the
service days it is valid; a tombstone ends it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer

from clearway.events.v1 import events_pb2
from clearway.ingest.v1 import ingest_pb2
from clearway.kafka import idempotent_producer
from services.ingest.adapters.concessions_topic import ConcessionFollower
from services.ingest.domain.concessions import ConcessionRules
from services.ingest.tests.ingest_harness import (
    CARD,
    Ingest,
    read_topic,
    start_ingest,
    tap,
    taps_on,
)

pytestmark = pytest.mark.integration

GATE = "gate-KSX-08"
OTHER_CARD = "sc_04a2b9c1d25e80"
ACCEPTED = ingest_pb2.ACK_STATUS_ACCEPTED
RULES = ConcessionRules()  # the defaults ingest runs with: Europe/London, 04:30, ADULT


@pytest.fixture(autouse=True)
def no_card_token_in_logs(caplog: pytest.LogCaptureFixture):
    """Whatever a test does, no card token is ever logged."""
    caplog.set_level(logging.DEBUG)
    yield
    for secret in (CARD, OTHER_CARD):
        assert secret not in caplog.text


@pytest.fixture
async def ingest(settings_for, pki) -> AsyncIterator[Ingest]:
    # The `concessions` topic does not exist yet: ingest creates it and starts.
    service = await start_ingest(settings_for("ingest"), pki)
    await service.register(GATE)
    try:
        yield service
    finally:
        await service.stop()


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    made = idempotent_producer(kafka_bootstrap)
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


def follower(ingest: Ingest) -> ConcessionFollower:
    concessions = ingest.app.ports.get().accept.concessions
    assert isinstance(concessions, ConcessionFollower)
    return concessions


async def publish(
    ingest: Ingest,
    producer: AIOKafkaProducer,
    card: str,
    valid_from: date | None = None,
    valid_to: date | None = None,
) -> None:
    """A CardConcession (SENIOR, [valid_from, valid_to)) for `card`, or its tombstone when
    no days are given; returns once ingest has applied it."""
    value = None
    if valid_from is not None and valid_to is not None:
        value = events_pb2.CardConcession(
            card_token=card,
            rider_category_id="SENIOR",
            valid_from=valid_from.isoformat(),
            valid_to=valid_to.isoformat(),
            entitlement_id="ent_test",
            funder_id="funder:camden",
            entitlement_scheme_id="camden-senior-pass",
        ).SerializeToString(deterministic=True)
    sent = await producer.send_and_wait(
        ingest.settings.topics.concessions, key=card.encode(), value=value, partition=0
    )
    assert await follower(ingest).wait_beyond(sent.offset, 10)


async def categories(ingest: Ingest, kafka_bootstrap: str) -> dict[int, str]:
    """The rider category of each tap on `taps`, by sequence number."""
    records = await read_topic(kafka_bootstrap, ingest.settings.topics.taps)
    return {t.sequence_number: t.rider_category_id for t in taps_on(records)}


async def test_a_pass_holder_s_taps_carry_the_concession_on_its_days_until_it_ends(
    ingest: Ingest, producer: AIOKafkaProducer, kafka_bootstrap: str
) -> None:
    now = datetime.now(UTC) - timedelta(seconds=30)
    today = RULES.service_day(now)
    three_days_ago = now - timedelta(days=3)
    await publish(ingest, producer, CARD, today - timedelta(days=1), today + timedelta(days=2))
    assert follower(ingest).concession(CARD) is not None

    acks = await ingest.send(
        GATE,
        [
            tap(GATE, 1, at=now, rider_category_id="ADULT"),
            tap(GATE, 2, card=OTHER_CARD, at=now, rider_category_id="ADULT"),
            tap(GATE, 3, at=three_days_ago, rider_category_id="ADULT"),  # outside its days
            tap(GATE, 4, at=now + timedelta(seconds=1)),  # no category: the feed's default
            tap(GATE, 5, at=now + timedelta(seconds=2), rider_category_id="YOUTH"),
        ],
    )
    assert [a.status for a in acks] == [ACCEPTED] * 5
    assert await categories(ingest, kafka_bootstrap) == {
        1: "SENIOR",
        2: "ADULT",
        3: "ADULT",
        4: "SENIOR",
        5: "YOUTH",
    }

    await publish(ingest, producer, CARD)  # the tombstone: no concession any more
    assert follower(ingest).concession(CARD) is None
    acks = await ingest.send(
        GATE, [tap(GATE, 6, at=now + timedelta(seconds=3), rider_category_id="ADULT")]
    )
    assert [a.status for a in acks] == [ACCEPTED]
    assert (await categories(ingest, kafka_bootstrap))[6] == "ADULT"


async def test_a_restarted_ingest_rebuilds_the_concessions_from_the_topic(
    ingest: Ingest, producer: AIOKafkaProducer, settings_for, pki
) -> None:
    today = RULES.service_day(datetime.now(UTC))
    await publish(ingest, producer, CARD, today, today + timedelta(days=30))
    await publish(ingest, producer, OTHER_CARD, today, today + timedelta(days=30))
    await publish(ingest, producer, OTHER_CARD)
    again = await start_ingest(settings_for("ingest"), pki)
    try:
        rebuilt = follower(again)
        assert rebuilt.version == follower(ingest).version == 3
        assert rebuilt.concession(CARD) == follower(ingest).concession(CARD) is not None
        assert rebuilt.concession(OTHER_CARD) is None
    finally:
        await again.stop()
