"""QuoteFare and CloseServiceDay over real gRPC (the fares app started in-process)."""

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest

from clearway.events.v1 import events_pb2
from clearway.fares.v1 import fares_pb2, fares_pb2_grpc
from clearway.runtime import RunningService
from services.fares.app import build

pytestmark = pytest.mark.integration
LONDON = ZoneInfo("Europe/London")


def a_wednesday() -> date:
    day = datetime.now(UTC).date() - timedelta(days=1)
    while day.weekday() != 2:
        day -= timedelta(days=1)
    return day


def tap(stop: str, kind: int, hh: int, mm: int, **extra: str) -> events_pb2.Tap:
    message = events_pb2.Tap(stop_id=stop, kind=kind, **extra)
    message.tapped_at.FromDatetime(
        datetime.combine(a_wednesday(), time(hh, mm), LONDON).astimezone(UTC)
    )
    return message


@pytest.fixture
async def fares(settings_for):
    running = RunningService(build(settings_for("fares")))
    port = await running.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield fares_pb2_grpc.FaresServiceStub(channel)
    finally:
        await running.stop()


async def test_quote_prices_a_peak_zone_1_trip_with_its_breakdown(fares):
    reply = await fares.QuoteFare(
        fares_pb2.QuoteFareRequest(
            taps=[
                tap("KGX", events_pb2.TAP_KIND_ENTRY, 8, 0, operator_id="LUL"),
                tap("OXC", events_pb2.TAP_KIND_EXIT, 8, 20, operator_id="LUL"),
            ]
        )
    )
    assert (reply.total.amount_minor, reply.total.currency) == (290, "GBP")
    [journey] = reply.journeys
    [leg] = journey.legs
    assert (leg.from_stop_id, leg.to_stop_id, leg.fare.amount_minor) == ("KGX", "OXC", 290)
    assert leg.fare_product_id == "Z1_PEAK"
    assert reply.explanation


async def test_quote_of_two_buses_in_the_hopper_hour_charges_one_fare(fares):
    reply = await fares.QuoteFare(
        fares_pb2.QuoteFareRequest(
            taps=[
                tap("CMD", events_pb2.TAP_KIND_BOARD, 9, 0, route_id="BUS_73"),
                tap("VIC", events_pb2.TAP_KIND_BOARD, 9, 30, route_id="BUS_390"),
            ]
        )
    )
    assert reply.total.amount_minor == 175


@pytest.mark.parametrize(
    ("taps", "reason"),
    [
        ([], "NO_TAPS"),
        ([tap("NOWHERE", events_pb2.TAP_KIND_ENTRY, 8, 0)], "UNKNOWN_STOP"),
        ([tap("KGX", events_pb2.TAP_KIND_UNSPECIFIED, 8, 0)], "UNKNOWN_TAP_KIND"),
    ],
)
async def test_quote_refuses_bad_input_with_a_reason(fares, taps, reason):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fares.QuoteFare(fares_pb2.QuoteFareRequest(taps=taps))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith(reason)


async def test_close_service_day_refuses_a_malformed_day(fares):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fares.CloseServiceDay(fares_pb2.CloseServiceDayRequest(service_day="yesterday"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith("BAD_SERVICE_DAY")
