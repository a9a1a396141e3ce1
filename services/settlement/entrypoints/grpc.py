"""The SettlementService gRPC servicer: close periods, fetch statements."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import grpc
from opentelemetry import trace

from clearway.common.v1 import money_pb2
from clearway.money import Money
from clearway.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from clearway.telemetry import context_from_grpc_metadata
from services.settlement.adapters.journey_lag import GroupLag
from services.settlement.adapters.kafka_out import StatementEvents
from services.settlement.adapters.ledger_repository import LedgerRepository, StoredStatement
from services.settlement.adapters.statement_files import StatementFiles
from services.settlement.domain.errors import InvalidPeriodError, MixedCurrencyError
from services.settlement.domain.ledger import ISSUER_PARTY
from services.settlement.domain.periods import parse_period_id
from services.settlement.domain.statement import issue_statements, period_totals

log = logging.getLogger(__name__)
tracer = trace.get_tracer("clearway.settlement")

REASON_METADATA_KEY = "reason-code"
SERVICE_NAME = settlement_pb2.DESCRIPTOR.services_by_name["SettlementService"].full_name
Context = grpc.aio.ServicerContext[object, object]


async def _abort(context: Context, status: grpc.StatusCode, reason: str, detail: str) -> NoReturn:
    """End the call with `status`; the reason code is in trailing metadata and details."""
    context.set_trailing_metadata(((REASON_METADATA_KEY, reason),))
    await context.abort(status, f"{reason}: {detail}")
    raise AssertionError("unreachable")  # abort raises


def _money(value: Money) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=value.amount_minor, currency=value.currency)


def statement_message(stored: StoredStatement) -> settlement_pb2.Statement:
    """The protobuf view of a stored statement."""
    st = stored.statement
    return settlement_pb2.Statement(
        statement_id=st.statement_id,
        period_id=st.period_id,
        party_id=st.party_id,
        lines=[
            settlement_pb2.StatementLine(
                journey_id=ln.journey_id,
                revision=ln.revision,
                account=ln.account,
                amount=_money(ln.amount),
                description=ln.description,
            )
            for ln in st.lines
        ],
        total_credits=_money(st.total_credits),
        total_debits=_money(st.total_debits),
        net=_money(st.net),
        path=stored.path,
        sha256=stored.sha256,
    )


@dataclass(frozen=True, slots=True)
class SettlementPorts:
    """What the servicer talks to; exists once the app has started."""

    ledger: LedgerRepository
    files: StatementFiles
    events: StatementEvents
    lag: GroupLag
    close_wait_s: float


class SettlementServicer(settlement_pb2_grpc.SettlementServiceServicer):
    """Closes settlement periods and serves the statements they produced."""

    def __init__(self, ports: Callable[[], SettlementPorts | None]) -> None:
        self._ports = ports

    async def _started(self, context: Context) -> SettlementPorts:
        ports = self._ports()
        if ports is None:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, "NOT_STARTED", "starting up")
        return ports

    async def ClosePeriod(  # noqa: N802 - the name is the RPC's
        self, request: settlement_pb2.ClosePeriodRequest, context: Context
    ) -> settlement_pb2.ClosePeriodResponse:
        """Close a period (idempotent): statements stored, written to files, announced."""
        parent = context_from_grpc_metadata(context.invocation_metadata())
        with tracer.start_as_current_span(
            "settlement.close_period", context=parent, kind=trace.SpanKind.SERVER
        ) as span:
            ports = await self._started(context)
            period_id = request.period_id
            span.set_attribute("clearway.period_id", period_id)
            try:
                parse_period_id(period_id)
            except InvalidPeriodError as exc:
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.code, str(exc))
            if ports.close_wait_s > 0 and not await ports.ledger.is_closed(period_id):
                lag = await ports.lag.wait_caught_up(ports.close_wait_s)
                if lag:
                    await _abort(
                        context,
                        grpc.StatusCode.UNAVAILABLE,
                        "CONSUMER_LAGGING",
                        f"{lag} journey records not yet posted after "
                        f"{ports.close_wait_s:g}s; retry",
                    )
            try:
                closed = await ports.ledger.close_period(
                    period_id,
                    issue_statements,
                    lambda p, party: str(ports.files.path_for(p, party)),
                )
            except MixedCurrencyError as exc:
                await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, exc.code, str(exc))
            # Files and events follow the commit; a retried close rewrites/republishes the
            # same bytes, so a crash in between loses nothing.
            for stored in closed.statements:
                party = stored.statement.party_id
                await ports.files.write(period_id, party, stored.body)
                await ports.events.publish(stored)
            log.info(
                "period closed",
                extra={
                    "period_id": period_id,
                    "statements": len(closed.statements),
                    "newly_closed": closed.newly_closed,
                },
            )
            response = settlement_pb2.ClosePeriodResponse(
                period_id=period_id,
                statements=[statement_message(s) for s in closed.statements],
            )
            if closed.statements:
                charged, apportioned = period_totals(
                    [s.statement for s in closed.statements], ISSUER_PARTY
                )
                response.total_charged.CopyFrom(_money(charged))
                response.total_apportioned.CopyFrom(_money(apportioned))
            return response

    async def GetStatement(  # noqa: N802 - the name is the RPC's
        self, request: settlement_pb2.GetStatementRequest, context: Context
    ) -> settlement_pb2.GetStatementResponse:
        """One party's statement for a closed period."""
        parent = context_from_grpc_metadata(context.invocation_metadata())
        with tracer.start_as_current_span(
            "settlement.get_statement", context=parent, kind=trace.SpanKind.SERVER
        ):
            ports = await self._started(context)
            try:
                parse_period_id(request.period_id)
            except InvalidPeriodError as exc:
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.code, str(exc))
            if not request.party_id:
                await _abort(
                    context, grpc.StatusCode.INVALID_ARGUMENT, "MISSING_PARTY_ID", "party_id"
                )
            stored = await ports.ledger.statement(request.period_id, request.party_id)
            if stored is None:
                await _abort(
                    context,
                    grpc.StatusCode.NOT_FOUND,
                    "STATEMENT_NOT_FOUND",
                    f"no statement for {request.party_id} in {request.period_id}",
                )
            return settlement_pb2.GetStatementResponse(statement=statement_message(stored))
