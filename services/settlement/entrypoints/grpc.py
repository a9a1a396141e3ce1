"""The SettlementService gRPC servicer: decode, call the use case, encode.

Trace context, the server span, readiness and the mapping of domain errors to a status
and `reason-code` trailer are the shared interceptor's (clearway.rpc).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from clearway.common.v1 import money_pb2
from clearway.money import Money
from clearway.rpc import Slot
from clearway.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from services.settlement.adapters.ledger_repository import StoredStatement
from services.settlement.domain.ledger import ISSUER_PARTY
from services.settlement.domain.statement import StatementLine, period_totals
from services.settlement.service_layer import periods
from services.settlement.service_layer.periods import SettlementPorts

SERVICE_NAME = settlement_pb2.DESCRIPTOR.services_by_name["SettlementService"].full_name
Context = grpc.aio.ServicerContext[Any, Any]


def _money(value: Money) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=value.amount_minor, currency=value.currency)


def statement_summary(stored: StoredStatement) -> settlement_pb2.Statement:
    """The protobuf summary of a stored statement: totals and line count, not the lines."""
    st = stored.statement
    return settlement_pb2.Statement(
        statement_id=st.statement_id,
        period_id=st.period_id,
        party_id=st.party_id,
        total_credits=_money(st.total_credits),
        total_debits=_money(st.total_debits),
        net=_money(st.net),
        path=stored.path,
        sha256=stored.sha256,
        line_count=len(st.lines),
    )


def line_message(line: StatementLine) -> settlement_pb2.StatementLine:
    """One statement line as its protobuf message."""
    return settlement_pb2.StatementLine(
        journey_id=line.journey_id,
        revision=line.revision,
        account=line.account,
        amount=_money(line.amount),
        description=line.description,
    )


class SettlementServicer(settlement_pb2_grpc.SettlementServiceServicer):
    """Closes settlement periods and serves the statements they produced."""

    def __init__(self, ports: Slot[SettlementPorts]) -> None:
        self._ports = ports

    async def ClosePeriod(  # noqa: N802 - the name is the RPC's
        self, request: settlement_pb2.ClosePeriodRequest, context: Context
    ) -> settlement_pb2.ClosePeriodResponse:
        """Close a period (idempotent) and answer with its statements' summaries."""
        closed = await periods.close_period(self._ports.get(), request.period_id)
        response = settlement_pb2.ClosePeriodResponse(
            period_id=closed.period_id,
            statements=[statement_summary(s) for s in closed.statements],
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
        """One party's statement summary for a closed period."""
        stored = await periods.statement(self._ports.get(), request.period_id, request.party_id)
        return settlement_pb2.GetStatementResponse(statement=statement_summary(stored))

    async def DownloadStatementLines(  # noqa: N802 - the name is the RPC's
        self, request: settlement_pb2.DownloadStatementLinesRequest, context: Context
    ) -> AsyncIterator[settlement_pb2.DownloadStatementLinesResponse]:
        """Every line of one party's statement, in order, a chunk at a time."""
        stored = await periods.statement(self._ports.get(), request.period_id, request.party_id)
        for first, lines in periods.line_chunks(stored):
            yield settlement_pb2.DownloadStatementLinesResponse(
                lines=[line_message(ln) for ln in lines], first_line=first
            )
