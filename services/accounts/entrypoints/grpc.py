"""gRPC servicer of AccountsService: parse, call the journey history, map errors."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NoReturn

import asyncpg
import grpc
from opentelemetry import trace

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.telemetry import context_from_grpc_metadata
from services.accounts.domain.errors import AccountsError
from services.accounts.service_layer.journey_history import JourneyHistory

log = logging.getLogger(__name__)
tracer = trace.get_tracer("clearway.accounts")

REASON_METADATA_KEY = "reason-code"
SERVICE_NAME = accounts_pb2.DESCRIPTOR.services_by_name["AccountsService"].full_name


async def _abort(
    context: grpc.aio.ServicerContext[object, object],
    status: grpc.StatusCode,
    reason: str,
    detail: str,
) -> NoReturn:
    """End the call with `status`; the reason code is in trailing metadata and details."""
    context.set_trailing_metadata(((REASON_METADATA_KEY, reason),))
    await context.abort(status, f"{reason}: {detail}")
    raise AssertionError("unreachable")  # abort raises


class AccountsServicer(accounts_pb2_grpc.AccountsServiceServicer):
    """Travellers' view of their cards' journeys."""

    def __init__(self, history: Callable[[], JourneyHistory | None]) -> None:
        self._history = history

    async def ListJourneys(  # noqa: N802 - the generated base class names it
        self,
        request: accounts_pb2.ListJourneysRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> accounts_pb2.ListJourneysResponse:
        """A card's journeys, latest revision of each, newest first, paged."""
        parent = context_from_grpc_metadata(context.invocation_metadata())
        with tracer.start_as_current_span(
            "accounts.ListJourneys", context=parent, kind=trace.SpanKind.SERVER
        ):
            history = self._history()
            if history is None:
                await _abort(context, grpc.StatusCode.UNAVAILABLE, "NOT_STARTED", "starting up")
            try:
                return await history.list_journeys(
                    request.card_token, request.page_size, request.page_token
                )
            except AccountsError as exc:
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.code, str(exc))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("journey store unreachable", extra={"error": type(exc).__name__})
                await _abort(
                    context, grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE", "try again later"
                )
