"""Caps progress from fares (`FaresService.GetCapsProgress`), on a channel the app opened.

fares answers for any card token without authentication: accounts asks only after it has
checked that the signed-in traveller owns the card.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import grpc

from clearway.common.v1 import money_pb2
from clearway.fares.v1 import fares_pb2, fares_pb2_grpc
from clearway.money import Money
from clearway.telemetry import grpc_metadata_with_trace
from services.accounts.domain.caps import CapPeriod, CapsProgressUnavailableError, CapUse

CAPS_TIMEOUT_S = 5.0
_PERIODS = {fares_pb2.CAP_PERIOD_DAY: CapPeriod.DAY, fares_pb2.CAP_PERIOD_WEEK: CapPeriod.WEEK}


@dataclass(frozen=True, slots=True)
class CardCaps:
    """A card's caps today and this week, as fares priced them."""

    service_day: date
    week_start: date
    caps: tuple[CapUse, ...]


def _money(message: money_pb2.Money) -> Money:
    return Money(message.amount_minor, message.currency)


class FaresCaps:
    """Asks fares; anything but an answer is FARES_UNAVAILABLE (nothing else can go wrong
    for a card token accounts has already checked)."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = CAPS_TIMEOUT_S) -> None:
        self._stub = fares_pb2_grpc.FaresServiceStub(channel)
        self._timeout_s = timeout_s

    async def caps_progress(self, card_token: str) -> CardCaps:
        """The card's progress towards every cap that counts it, now."""
        request = fares_pb2.GetCapsProgressRequest(card_token=card_token)
        try:
            reply = await self._stub.GetCapsProgress(
                request, timeout=self._timeout_s, metadata=grpc_metadata_with_trace()
            )
        except grpc.aio.AioRpcError as exc:
            raise CapsProgressUnavailableError(
                f"fares did not answer ({exc.code().name}); try again later"
            ) from None
        return CardCaps(
            date.fromisoformat(reply.service_day),
            date.fromisoformat(reply.week_start),
            tuple(
                CapUse(
                    cap.cap_id,
                    cap.name,
                    _PERIODS[cap.period],
                    date.fromisoformat(cap.period_start),
                    _money(cap.amount),
                    _money(cap.spent),
                    _money(cap.remaining),
                )
                for cap in reply.caps
                if cap.period in _PERIODS
            ),
        )
