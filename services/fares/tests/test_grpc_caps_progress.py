"""GetCapsProgress over real gRPC, with taps that went through the fares consumer (real
Kafka and PostgreSQL): the figures of test_caps_progress.py, from fares' own state."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import pytest

from clearway.fares.v1 import fares_pb2, fares_pb2_grpc
from clearway.rpc import reason_of
from clearway.runtime import RunningService
from services.fares.app import FaresApp, build
from services.fares.service_layer.closing import wait_caught_up
from services.fares.tests.kafka_taps import publish_taps
from services.fares.tests.taps import at, bus, tap, trip

pytestmark = pytest.mark.integration


@dataclass
class Fares:
    app: FaresApp
    stub: fares_pb2_grpc.FaresServiceAsyncStub

    async def caught_up(self) -> None:
        assert await wait_caught_up(self.app.ports.get(), 30.0)

    async def progress(self, card: str, when: datetime | None = None):
        request = fares_pb2.GetCapsProgressRequest(card_token=card)
        if when is not None:
            request.at.FromDatetime(when.astimezone(UTC))
        return await self.stub.GetCapsProgress(request)


@pytest.fixture
async def fares(settings_for) -> AsyncIterator[tuple[Fares, object]]:
    settings = settings_for("fares")
    app = build(settings)
    running = RunningService(app)
    port = await running.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Fares(app, fares_pb2_grpc.FaresServiceStub(channel)), settings
    finally:
        await running.stop()


def rows(reply) -> list[tuple[str, int, str, int, int, int]]:
    return [
        (
            c.cap_id,
            c.period,
            c.period_start,
            c.amount.amount_minor,
            c.spent.amount_minor,
            c.remaining.amount_minor,
        )
        for c in reply.caps
    ]


DAY, WEEK = fares_pb2.CAP_PERIOD_DAY, fares_pb2.CAP_PERIOD_WEEK


async def test_caps_progress_of_a_card_from_the_taps_fares_stored(fares):
    door, settings = fares
    card = f"tok_{uuid.uuid4().hex[:16]}"
    other = f"tok_{uuid.uuid4().hex[:16]}"
    taps = [
        *trip("2025-03-03 08:00", "KGX", "2025-03-03 08:20", "OXC", card=card),
        *trip("2025-03-03 17:00", "OXC", "2025-03-03 17:30", "CMD", card=card),
        *trip("2025-03-04 08:00", "KGX", "2025-03-04 08:20", "OXC", card=card),
        bus("2025-03-04 09:00", card=card),
        *trip("2025-03-04 12:00", "OXC", "2025-03-04 12:20", "VIC", card=card),
        *trip("2025-03-04 17:00", "VIC", "2025-03-04 17:30", "BRX", card=card),
        tap("2025-03-04 19:30", "KGX", "entry", card=card),
        *trip("2025-03-04 08:00", "KGX", "2025-03-04 08:20", "OXC", card=other),
    ]
    await publish_taps(settings, taps)
    await door.caught_up()

    monday = await door.progress(card, at("2025-03-03 20:00"))
    assert (monday.service_day, monday.week_start) == ("2025-03-03", "2025-03-03")
    assert (monday.rider_category_id, monday.fare_media_id) == ("ADULT", "CONTACTLESS")
    assert monday.fare_version == "london@2025-03-02"
    assert rows(monday) == [
        ("DAILY_Z12", DAY, "2025-03-03", 890, 640, 250),
        ("DAILY_BUS", DAY, "2025-03-03", 525, 0, 525),
        ("WEEKLY_Z12", WEEK, "2025-03-03", 4470, 640, 3830),
        ("WEEKLY_BUS", WEEK, "2025-03-03", 2470, 0, 2470),
    ]
    tuesday = await door.progress(card, at("2025-03-04 20:00"))
    assert rows(tuesday) == [
        ("DAILY_Z12", DAY, "2025-03-04", 890, 890, 0),
        ("DAILY_BUS", DAY, "2025-03-04", 525, 175, 350),
        ("WEEKLY_Z12", WEEK, "2025-03-03", 4470, 1530, 2940),
        ("WEEKLY_BUS", WEEK, "2025-03-03", 2470, 175, 2295),
    ]
    assert all(c.amount.currency == "GBP" for c in tuesday.caps)
    # Another card's taps are its own.
    theirs = await door.progress(other, at("2025-03-04 20:00"))
    assert [(c.cap_id, c.spent.amount_minor) for c in theirs.caps][:2] == [
        ("DAILY_Z12", 290),
        ("DAILY_BUS", 0),
    ]


async def test_a_card_fares_never_saw_gets_the_adult_caps_at_zero_now(fares):
    door, _ = fares
    reply = await door.progress(f"tok_{uuid.uuid4().hex[:16]}")
    assert [(c.cap_id, c.spent.amount_minor, c.remaining.amount_minor) for c in reply.caps] == [
        ("DAILY_Z12", 0, 890),
        ("DAILY_BUS", 0, 525),
        ("WEEKLY_Z12", 0, 4470),
        ("WEEKLY_BUS", 0, 2470),
    ]
    assert abs(reply.at.ToDatetime(tzinfo=UTC) - datetime.now(UTC)).total_seconds() < 60


@pytest.mark.parametrize(
    ("card", "reason"),
    [
        ("", "MISSING_CARD_TOKEN"),
        ("tok_\x00abcdefgh", "BAD_CARD_TOKEN"),
        ("4111 1111 1111 1111", "BAD_CARD_TOKEN"),
        ("tok_" + "a" * 1_000_000, "BAD_CARD_TOKEN"),
    ],
)
async def test_a_bad_card_token_is_refused_as_invalid_argument(fares, card, reason):
    door, _ = fares
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await door.progress(card)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(err.value.trailing_metadata()) == reason
    assert "4111" not in (err.value.details() or "")


async def test_an_instant_before_any_fare_data_is_refused(fares):
    door, _ = fares
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await door.progress(f"tok_{uuid.uuid4().hex[:16]}", at("2024-01-01 12:00"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(err.value.trailing_metadata()) == "NO_FARE_VERSION"
