"""The SettlementService gRPC servicer: decode, call the use case, encode.

Caller identity (mutual TLS), trace context, the server span, readiness and the mapping
of domain errors to a status and `reason-code` trailer are the shared interceptor's
(clearway.rpc); who may see or do what is decided by the use cases.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from clearway.auth import current_principal
from clearway.common.v1 import money_pb2
from clearway.money import Money
from clearway.rpc import Slot
from clearway.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from services.settlement.adapters.ledger_repository import StoredFileSet
from services.settlement.service_layer import periods
from services.settlement.service_layer.periods import SettlementPorts

SERVICE_NAME = settlement_pb2.DESCRIPTOR.services_by_name["SettlementService"].full_name
Context = grpc.aio.ServicerContext[Any, Any]


def _money(value: Money) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=value.amount_minor, currency=value.currency)


def statement_summary(stored: StoredFileSet) -> settlement_pb2.Statement:
    """The protobuf summary of a party's file set."""
    net = stored.net
    zero = Money.zero(net.currency)
    return settlement_pb2.Statement(
        statement_id=f"{stored.period_id}/{stored.party_id}",
        period_id=stored.period_id,
        party_id=stored.party_id,
        total_credits=_money(net if net.amount_minor > 0 else zero),
        total_debits=_money(-net if net.amount_minor < 0 else zero),
        net=_money(net),
        path=stored.directory,
        sha256=stored.manifest_sha256,
        line_count=stored.line_count,
        files=[
            settlement_pb2.SettlementFile(name=name, bytes=size, sha256=digest)
            for name, size, digest in stored.files
        ],
        end_to_end_id=stored.end_to_end_id or "",
    )


class SettlementServicer(settlement_pb2_grpc.SettlementServiceServicer):
    """Closes settlement periods and serves the file sets they produced."""

    def __init__(self, ports: Slot[SettlementPorts]) -> None:
        self._ports = ports

    async def ClosePeriod(  # noqa: N802 - the name is the RPC's
        self, request: settlement_pb2.ClosePeriodRequest, context: Context
    ) -> settlement_pb2.ClosePeriodResponse:
        """Close a period (operations only) and answer with every party's summary."""
        closed = await periods.close_period(
            self._ports.get(), current_principal(), request.period_id
        )
        totals = closed.totals
        return settlement_pb2.ClosePeriodResponse(
            period_id=closed.period_id,
            statements=[statement_summary(s) for s in closed.file_sets],
            total_charged=_money(totals["charged"]),
            total_apportioned=_money(totals["apportioned"]),
            total_reimbursed=_money(totals["reimbursed"]),
            total_fees=_money(totals["fees"]),
            total_commission=_money(totals["commission"]),
            total_top_ups=_money(totals["top_ups"]),
            total_vouchers_redeemed=_money(totals["vouchers_redeemed"]),
            total_vouchers_funded=_money(totals["vouchers_funded"]),
            total_rewards_funded=_money(totals["rewards_funded"]),
        )

    async def GetStatement(  # noqa: N802 - the name is the RPC's
        self, request: settlement_pb2.GetStatementRequest, context: Context
    ) -> settlement_pb2.GetStatementResponse:
        """A party's statement summary for a closed period."""
        stored = await periods.statement(
            self._ports.get(), current_principal(), request.period_id, request.party_id
        )
        return settlement_pb2.GetStatementResponse(statement=statement_summary(stored))

    async def DownloadStatementLines(  # noqa: N802 - the name is the RPC's
        self, request: settlement_pb2.DownloadStatementLinesRequest, context: Context
    ) -> AsyncIterator[settlement_pb2.DownloadStatementLinesResponse]:
        """Every line of a party's statement, in file order, a chunk at a time."""
        chunks = periods.line_chunks(
            self._ports.get(), current_principal(), request.period_id, request.party_id
        )
        async for first, rows in chunks:
            yield settlement_pb2.DownloadStatementLinesResponse(
                lines=[_line(row) for row in rows], first_line=first
            )

    async def ListPeriods(  # noqa: N802 - the name is the RPC's
        self, request: settlement_pb2.ListPeriodsRequest, context: Context
    ) -> settlement_pb2.ListPeriodsResponse:
        """Every settlement period known, newest first."""
        periods.party_or_operations(current_principal())
        found = await self._ports.get().ledger.periods()
        return settlement_pb2.ListPeriodsResponse(
            periods=[settlement_pb2.Period(period_id=p, state=s) for p, s in found]
        )

    async def ListStatements(  # noqa: N802 - the name is the RPC's
        self, request: settlement_pb2.ListStatementsRequest, context: Context
    ) -> settlement_pb2.ListStatementsResponse:
        """The caller's statement summaries (operations: any party's)."""
        found = await periods.statements(
            self._ports.get(), current_principal(), request.period_id, request.party_id
        )
        return settlement_pb2.ListStatementsResponse(
            statements=[statement_summary(s) for s in found]
        )

    async def DownloadFile(  # noqa: N802 - the name is the RPC's
        self, request: settlement_pb2.DownloadFileRequest, context: Context
    ) -> AsyncIterator[settlement_pb2.DownloadFileResponse]:
        """One file of a party's file set, a chunk at a time."""
        chunks = periods.file_chunks(
            self._ports.get(),
            current_principal(),
            request.period_id,
            request.party_id,
            request.name,
        )
        async for offset, chunk in chunks:
            yield settlement_pb2.DownloadFileResponse(chunk=chunk, offset=offset)

    async def GetPosition(  # noqa: N802 - the name is the RPC's
        self, request: settlement_pb2.GetPositionRequest, context: Context
    ) -> settlement_pb2.GetPositionResponse:
        """The caller's net in every open period."""
        ports = self._ports.get()
        party, nets = await periods.position(ports, current_principal(), request.party_id)
        total = Money.zero(ports.scheme.currency)
        for net in nets.values():
            total += net
        return settlement_pb2.GetPositionResponse(
            party_id=party,
            periods=[
                settlement_pb2.PeriodPosition(period_id=p, net=_money(n)) for p, n in nets.items()
            ],
            total=_money(total),
        )

    async def GetSigningKey(  # noqa: N802 - the name is the RPC's
        self, request: settlement_pb2.GetSigningKeyRequest, context: Context
    ) -> settlement_pb2.GetSigningKeyResponse:
        """The scheme's public signing key."""
        periods.party_or_operations(current_principal())
        pem, fingerprint = periods.signing_key(self._ports.get())
        return settlement_pb2.GetSigningKeyResponse(public_key_pem=pem, fingerprint=fingerprint)


def _line(row: dict[str, str]) -> settlement_pb2.StatementLine:
    description = row["method"] or row["source"]
    if row["method_rule"]:
        description += f" ({row['method_rule']})"
    if row["previous_minor"] not in ("", "0"):
        description = f"adjustment: {description}"
    return settlement_pb2.StatementLine(
        journey_id=row["source_id"],
        revision=int(row["revision"]),
        account=row["account"],
        amount=money_pb2.Money(amount_minor=int(row["amount_minor"]), currency=row["currency"]),
        description=description,
    )
