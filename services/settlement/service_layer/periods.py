"""Close a settlement period and read its statements (use cases behind SettlementService)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from services.settlement.adapters.journey_lag import GroupLag
from services.settlement.adapters.kafka_out import StatementEvents
from services.settlement.adapters.ledger_repository import (
    ClosedPeriod,
    LedgerRepository,
    StoredStatement,
)
from services.settlement.adapters.statement_files import StatementFiles
from services.settlement.domain.errors import (
    ConsumerLaggingError,
    MissingPartyError,
    StatementNotFoundError,
)
from services.settlement.domain.periods import parse_period_id
from services.settlement.domain.statement import StatementLine, issue_statements

log = logging.getLogger(__name__)
LINES_PER_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class SettlementPorts:
    """What the use cases talk to; exists once the service has started."""

    ledger: LedgerRepository
    files: StatementFiles
    events: StatementEvents
    lag: GroupLag
    close_wait_s: float


async def close_period(ports: SettlementPorts, period_id: str) -> ClosedPeriod:
    """Close `period_id` (idempotent): statements stored, written to files, announced.

    Waits (bounded) until the journeys consumer group has committed everything on the
    topic when called; ConsumerLaggingError when it has not.
    """
    parse_period_id(period_id)
    if ports.close_wait_s > 0 and not await ports.ledger.is_closed(period_id):
        lag = await ports.lag.wait_caught_up(ports.close_wait_s)
        if lag:
            raise ConsumerLaggingError(
                f"{lag} journey records not yet posted after {ports.close_wait_s:g}s; retry"
            )
    closed = await ports.ledger.close_period(
        period_id, issue_statements, lambda p, party: str(ports.files.path_for(p, party))
    )
    # Files and events follow the commit; a retried close rewrites/republishes the same
    # bytes, so a crash in between loses nothing.
    for stored in closed.statements:
        await ports.files.write(period_id, stored.statement.party_id, stored.body)
        await ports.events.publish(stored)
    log.info(
        "period closed",
        extra={
            "period_id": period_id,
            "statements": len(closed.statements),
            "newly_closed": closed.newly_closed,
        },
    )
    return closed


async def statement(ports: SettlementPorts, period_id: str, party_id: str) -> StoredStatement:
    """One party's stored statement; StatementNotFoundError when there is none."""
    parse_period_id(period_id)
    if not party_id:
        raise MissingPartyError("party_id is required")
    stored = await ports.ledger.statement(period_id, party_id)
    if stored is None:
        raise StatementNotFoundError(f"no statement for {party_id} in {period_id}")
    return stored


def line_chunks(
    stored: StoredStatement, size: int = LINES_PER_CHUNK
) -> Iterator[tuple[int, tuple[StatementLine, ...]]]:
    """(index of the first line, lines) of a statement, `size` lines at a time."""
    lines = stored.statement.lines
    for start in range(0, len(lines), size):
        yield start, lines[start : start + size]
