"""gRPC servicer of AccountsService: parse, call the journey history, reply.

Trace context, the server span, readiness and the mapping of domain errors to a status
and `reason-code` trailer are the shared interceptor's (clearway.rpc).
"""

from __future__ import annotations

from typing import Any

import grpc

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.rpc import Slot
from services.accounts.service_layer.journey_history import JourneyHistory

SERVICE_NAME = accounts_pb2.DESCRIPTOR.services_by_name["AccountsService"].full_name


class AccountsServicer(accounts_pb2_grpc.AccountsServiceServicer):
    """Travellers' view of their cards' journeys."""

    def __init__(self, history: Slot[JourneyHistory]) -> None:
        self._history = history

    async def ListJourneys(  # noqa: N802 - the generated base class names it
        self,
        request: accounts_pb2.ListJourneysRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> accounts_pb2.ListJourneysResponse:
        """A card's journeys, latest revision of each, newest first, paged."""
        return await self._history.get().list_journeys(
            request.card_token, request.page_size, request.page_token
        )
