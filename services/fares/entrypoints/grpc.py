"""FaresService: QuoteFare prices a hypothetical journey; CloseServiceDay finalises a day."""

from __future__ import annotations

import asyncio
import logging
from datetime import date, datetime, time, timedelta
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer

from clearway.common.v1 import money_pb2
from clearway.fares.v1 import fares_pb2, fares_pb2_grpc
from clearway.money import total
from services.fares.adapters.convert import BadTapError, journey_pb, tap_from_proto
from services.fares.domain import FaresError, check_tap, price_card
from services.fares.domain.model import FareCatalog
from services.fares.entrypoints.consumer import TapPricer
from services.fares.service_layer.repricing import incomplete_after

log = logging.getLogger(__name__)
MAX_QUOTE_TAPS = 500


async def _invalid(context: grpc.aio.ServicerContext[Any, Any], code: str, msg: str) -> None:
    context.set_trailing_metadata((("reason-code", code),))
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{code}: {msg}")


class FaresServicer(fares_pb2_grpc.FaresServiceServicer):
    """The fare engine's gRPC door."""

    def __init__(
        self, catalog: FareCatalog, pricer: TapPricer | None, consumer: AIOKafkaConsumer | None
    ) -> None:
        self.catalog = catalog
        self.pricer = pricer
        self.consumer = consumer

    async def QuoteFare(  # noqa: N802 (gRPC method name)
        self,
        request: fares_pb2.QuoteFareRequest,
        context: grpc.aio.ServicerContext[fares_pb2.QuoteFareRequest, fares_pb2.QuoteFareResponse],
    ) -> fares_pb2.QuoteFareResponse:
        """Price the request's taps as one card's; explain every penny."""
        if not request.taps:
            await _invalid(context, "NO_TAPS", "send at least one tap")
        if len(request.taps) > MAX_QUOTE_TAPS:
            await _invalid(context, "TOO_MANY_TAPS", f"at most {MAX_QUOTE_TAPS} taps")
        taps = []
        for i, tap_pb in enumerate(request.taps):
            quoted = type(tap_pb)()
            quoted.CopyFrom(tap_pb)
            quoted.card_token = "quote"
            quoted.tap_id = quoted.tap_id or f"quote:{i + 1}"
            quoted.rider_category_id = quoted.rider_category_id or request.rider_category_id
            quoted.fare_media_id = quoted.fare_media_id or request.fare_media_id
            try:
                tap = tap_from_proto(quoted)
                check_tap(self.catalog, tap)
            except (BadTapError, FaresError) as exc:
                await _invalid(context, str(getattr(exc, "code", "BAD_TAP")), f"tap {i + 1}: {exc}")
            taps.append(tap)
        journeys = price_card(self.catalog, taps, as_of=None)
        currency = self.catalog.version_at(taps[0].tapped_at).currency
        response = fares_pb2.QuoteFareResponse(
            total=money_pb2.Money(
                amount_minor=total((j.charge for j in journeys), currency).amount_minor,
                currency=currency,
            )
        )
        for j in journeys:
            response.journeys.append(
                journey_pb(
                    j,
                    journey_id=j.journey_id,
                    card_token="",
                    service_day=j.service_day.isoformat(),
                    revision=1,
                    charge=j.charge,
                    delta=j.charge,
                )
            )
            response.explanation.extend(j.explanation)
            if j.no_fare_reason:
                response.explanation.append(f"{j.journey_id}: no fare: {j.no_fare_reason}")
        return response

    async def CloseServiceDay(  # noqa: N802 (gRPC method name)
        self,
        request: fares_pb2.CloseServiceDayRequest,
        context: grpc.aio.ServicerContext[
            fares_pb2.CloseServiceDayRequest, fares_pb2.CloseServiceDayResponse
        ],
    ) -> fares_pb2.CloseServiceDayResponse:
        """Wait for the taps so far to be priced, then price the day's waiting entries."""
        try:
            day = date.fromisoformat(request.service_day)
        except ValueError:
            await _invalid(context, "BAD_SERVICE_DAY", "service_day must be YYYY-MM-DD")
        if self.pricer is None or self.consumer is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "fares consumer is not running")
        assert self.pricer is not None and self.consumer is not None
        timeout = request.catch_up_timeout_seconds or 60
        if not await caught_up(self.consumer, self.pricer, timeout):
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"CATCH_UP_TIMEOUT: taps not all priced within {timeout} s",
            )
        close_at = self.day_closes_at(day)
        cards, revisions = await self.pricer.close_through(close_at, day.isoformat())
        log.info("service day closed", extra={"service_day": day.isoformat(), "cards": cards})
        return fares_pb2.CloseServiceDayResponse(
            service_day=day.isoformat(), cards_repriced=cards, revisions_published=revisions
        )

    def day_closes_at(self, day: date) -> datetime:
        """End of `day` (the next day's boundary) plus the longest wait for an exit."""
        data = self.catalog.version_at(
            datetime.combine(day, time(12), self.catalog.versions[0].timezone)
        )
        boundary = timedelta(seconds=data.settings.service_day_start_s)
        end = datetime.combine(day + timedelta(days=1), time(0), data.timezone) + boundary
        return end + incomplete_after(self.catalog, end)


async def caught_up(consumer: AIOKafkaConsumer, pricer: TapPricer, timeout_s: float) -> bool:
    """True once every assigned taps partition has been processed to its current end."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        assigned = consumer.assignment()
        if assigned:
            ends = await consumer.end_offsets(list(assigned))
            async with pricer.pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT partition, next_offset FROM partition_state WHERE topic = $1",
                    pricer.taps_topic,
                )
            done = {r["partition"]: r["next_offset"] for r in rows}
            # A partition is done when its stored position reached the end, or (control
            # records at the end) when the consumer fetched past the end and is idle.
            finished = [
                done.get(tp.partition, 0) >= ends[tp]
                or (pricer.idle and await consumer.position(tp) >= ends[tp])
                for tp in assigned
            ]
            if all(finished):
                return True
        await asyncio.sleep(0.2)
    return False
