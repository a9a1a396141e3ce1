"""FaresService: QuoteFare prices a hypothetical journey; CloseServiceDay finalises a day;
GetCapsProgress says how much of each cap a card has used (internal: no authentication).

Trace context, the server span, readiness and the mapping of domain errors to a status
and `reason-code` trailer are the shared interceptor's (clearway.rpc).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from clearway.card_tokens import card_token_form
from clearway.common.v1 import money_pb2
from clearway.fares.v1 import fares_pb2, fares_pb2_grpc
from clearway.money import total
from clearway.rpc import Slot
from services.fares.adapters.convert import BadTapError, journey_pb, money_pb, tap_from_proto
from services.fares.domain import CapPeriod, CardCapsProgress, FaresError, check_tap, price_card
from services.fares.domain.errors import QuoteError
from services.fares.domain.model import FareCatalog
from services.fares.service_layer.caps_progress import card_caps_progress
from services.fares.service_layer.closing import FaresPorts, close_service_day

MAX_QUOTE_TAPS = 500
DEFAULT_CATCH_UP_S = 60
Context = grpc.aio.ServicerContext[Any, Any]
# Instants a caps progress may be asked at (a week's window must fit in a datetime).
_EARLIEST_AT = datetime(1971, 1, 1, tzinfo=UTC)
_LATEST_AT = datetime(9000, 1, 1, tzinfo=UTC)
_PERIODS = {CapPeriod.DAY: fares_pb2.CAP_PERIOD_DAY, CapPeriod.WEEK: fares_pb2.CAP_PERIOD_WEEK}


class FaresServicer(fares_pb2_grpc.FaresServiceServicer):
    """The fare engine's gRPC door."""

    def __init__(self, catalog: FareCatalog, ports: Slot[FaresPorts]) -> None:
        self.catalog = catalog
        self.ports = ports

    async def QuoteFare(  # noqa: N802 (gRPC method name)
        self, request: fares_pb2.QuoteFareRequest, context: Context
    ) -> fares_pb2.QuoteFareResponse:
        """Price the request's taps as one card's; explain every penny."""
        if not request.taps:
            raise QuoteError("NO_TAPS", "send at least one tap")
        if len(request.taps) > MAX_QUOTE_TAPS:
            raise QuoteError("TOO_MANY_TAPS", f"at most {MAX_QUOTE_TAPS} taps")
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
                raise QuoteError(exc.code, f"tap {i + 1}: {exc}") from None
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
        self, request: fares_pb2.CloseServiceDayRequest, context: Context
    ) -> fares_pb2.CloseServiceDayResponse:
        """Wait for every partition's taps so far to be priced, then price the day's
        waiting entries (works on any instance, however many run)."""
        try:
            day = date.fromisoformat(request.service_day)
        except ValueError:
            raise QuoteError("BAD_SERVICE_DAY", "service_day must be YYYY-MM-DD") from None
        if request.catch_up_timeout_seconds < 0:
            raise QuoteError("BAD_TIMEOUT", "catch_up_timeout_seconds must be >= 0")
        timeout = request.catch_up_timeout_seconds or DEFAULT_CATCH_UP_S
        closed = await close_service_day(self.ports.get(), day, timeout)
        return fares_pb2.CloseServiceDayResponse(
            service_day=closed.service_day.isoformat(),
            cards_repriced=closed.cards_repriced,
            revisions_published=closed.revisions_published,
        )

    async def GetCapsProgress(  # noqa: N802 (gRPC method name)
        self, request: fares_pb2.GetCapsProgressRequest, context: Context
    ) -> fares_pb2.GetCapsProgressResponse:
        """How much of each cap that counts the card it has used in the service day and
        week containing `at` (default now). Internal: answers for any card token."""
        if not request.card_token:
            raise QuoteError("MISSING_CARD_TOKEN", "card_token is required")
        if card_token_form(request.card_token) is None:
            # Never echoed: it may be a card number.
            raise QuoteError("BAD_CARD_TOKEN", "card_token is not a card token")
        at = datetime.now(UTC)
        if request.HasField("at"):
            at = _instant(request.at)
        ports = self.ports.get()
        progress = await card_caps_progress(ports.pool, self.catalog, request.card_token, at)
        return caps_progress_message(progress)


def _instant(stamp: Timestamp) -> datetime:
    """A request's instant; BAD_AT when it is not one fares can reason about."""
    try:
        at = stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise QuoteError("BAD_AT", "at is not a valid instant") from None
    if not _EARLIEST_AT <= at < _LATEST_AT:
        raise QuoteError("BAD_AT", "at must be between 1971 and 9000")
    return at


def caps_progress_message(progress: CardCapsProgress) -> fares_pb2.GetCapsProgressResponse:
    """A card's caps progress as its protobuf message."""
    at = Timestamp()
    at.FromDatetime(progress.at)
    return fares_pb2.GetCapsProgressResponse(
        at=at,
        service_day=progress.service_day.isoformat(),
        week_start=progress.week_start.isoformat(),
        rider_category_id=progress.rider_category_id or "",
        fare_media_id=progress.fare_media_id or "",
        fare_version=progress.fare_version,
        caps=[
            fares_pb2.CapProgress(
                cap_id=cap.cap_id,
                name=cap.name,
                period=_PERIODS[cap.period],
                period_start=cap.period_start.isoformat(),
                amount=money_pb(cap.amount),
                spent=money_pb(cap.spent),
                remaining=money_pb(cap.remaining),
            )
            for cap in progress.caps
        ],
    )
