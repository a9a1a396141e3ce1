"""The check of a claimed exit against fares' fare data, over `FaresService.QuoteFare`.

accounts holds no fare data; fares does. Quoting the claimed leg (the entry as priced,
the claimed exit) before the claim is recorded answers a stop that is not in the fare
data at once (`UNKNOWN_STOP`), instead of a correction tap fares would park on its
dead-letter topic and a claim that never resolves; and a stop no fare reaches from the
entry (`BAD_EXIT_STOP`), instead of a correction tap fares would price at nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

import grpc

from clearway.events.v1 import events_pb2
from clearway.fares.v1 import fares_pb2, fares_pb2_grpc
from clearway.rpc import reason_of
from services.accounts.domain.claims import (
    BadExitStopError,
    FaresUnavailableError,
    OpenEntry,
    UnknownStopError,
    check_claimed_fare,
)

QUOTE_TIMEOUT_S = 5.0


def _tap(
    kind: events_pb2.TapKind.ValueType, stop_id: str, at: datetime, entry: OpenEntry
) -> events_pb2.Tap:
    tap = events_pb2.Tap(
        stop_id=stop_id, kind=kind, route_id=entry.route_id, operator_id=entry.operator_id
    )
    tap.tapped_at.FromDatetime(at.astimezone(UTC))
    return tap


class FaresStopCheck:
    """Asks fares to quote the claimed leg; refusals, and a quote without a fare, become
    claim errors."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = QUOTE_TIMEOUT_S) -> None:
        self._stub = fares_pb2_grpc.FaresServiceStub(channel)
        self._timeout_s = timeout_s

    async def check_exit(
        self,
        entry: OpenEntry,
        exit_stop_id: str,
        exited_at: datetime,
        rider_category_id: str,
        fare_media_id: str,
    ) -> None:
        """UNKNOWN_STOP when the fare data has no such stop (BAD_EXIT_STOP for another
        refusal of the quoted leg, or a quote without a fare for it); FARES_UNAVAILABLE
        when fares does not answer."""
        request = fares_pb2.QuoteFareRequest(
            taps=[
                _tap(events_pb2.TAP_KIND_ENTRY, entry.stop_id, entry.entry_at, entry),
                _tap(events_pb2.TAP_KIND_EXIT, exit_stop_id, exited_at, entry),
            ],
            rider_category_id=rider_category_id,
            fare_media_id=fare_media_id,
        )
        try:
            quote = await self._stub.QuoteFare(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                code = reason_of(exc.trailing_metadata()) or ""
                if code == "UNKNOWN_STOP":
                    raise UnknownStopError("exit_stop_id is not a stop of the fare data") from None
                raise BadExitStopError(
                    f"fares cannot price this exit ({code or 'refused'})"
                ) from None
            raise FaresUnavailableError(
                f"fares did not check the stop ({exc.code().name}); nothing was recorded, retry"
            ) from None
        check_claimed_fare([leg.fare_product_id for j in quote.journeys for leg in j.legs])
