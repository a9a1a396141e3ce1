"""Close a settlement period and serve what it produced: the use cases behind
SettlementService, with their authorisation (who may see or do what)."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clearway.auth import (
    OPERATIONS,
    PermissionDeniedError,
    Principal,
    UnauthenticatedError,
)
from clearway.errors import ErrorKind
from clearway.money import Money
from clearway.scheme.model import Party, PartyKind, Scheme
from clearway.scheme.rules import is_party_id
from services.settlement.adapters.file_sets import (
    FileSetInfo,
    PeriodFileSets,
    public_key_pem,
    publish_public_key,
    raw_public_key,
)
from services.settlement.adapters.journey_lag import GroupLag
from services.settlement.adapters.kafka_out import StatementEvents
from services.settlement.adapters.ledger_repository import LedgerRepository, StoredFileSet
from services.settlement.domain.errors import (
    ConsumerLaggingError,
    InvalidPartyError,
    SettlementError,
    StatementNotFoundError,
)
from services.settlement.domain.periods import parse_period_id
from services.settlement.domain.settle import (
    CLEARING_FEES,
    COMMISSION,
    CONCESSION_REIMBURSEMENTS,
    FARE_REVENUE,
    REWARDS_FUNDED,
    TOP_UPS_SOLD,
    TRAVELLER_CHARGES,
    VOUCHER_REDEMPTIONS,
    VOUCHERS_FUNDED,
)
from services.settlement.domain.settlement_files import (
    LINES_FILE,
    PAYMENT_FILE,
    key_fingerprint,
    payment_file,
)

log = logging.getLogger(__name__)
LINES_PER_CHUNK = 1000
FILE_CHUNK_BYTES = 1024 * 1024


class PeriodNotDueError(SettlementError):
    """The period's cut-off has not passed: late uploads of the day may still come."""

    code = "PERIOD_NOT_DUE"
    kind = ErrorKind.FAILED_PRECONDITION


class UnknownFileError(SettlementError):
    """No such file in a file set."""

    code = "FILE_NOT_FOUND"
    kind = ErrorKind.NOT_FOUND


@dataclass(frozen=True, slots=True)
class SettlementPorts:
    """What the use cases talk to; exists once the service has started."""

    ledger: LedgerRepository
    scheme: Scheme
    files_root: Path
    signer: Ed25519PrivateKey
    events: StatementEvents
    lag: GroupLag
    close_wait_s: float
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class ClosedPeriod:
    """A closed period: every party's file set and the period's totals."""

    period_id: str
    file_sets: list[StoredFileSet]
    totals: dict[str, Money]  # see period_totals
    newly_closed: bool


# -- authorisation -----------------------------------------------------------------------


def _caller(principal: Principal | None) -> Principal:
    if principal is None:
        raise UnauthenticatedError("this call needs a client certificate of the scheme")
    return principal


def is_operations(principal: Principal | None) -> bool:
    """Whether the caller is the scheme's operations role."""
    return principal is not None and principal.kind == "role" and principal.id == OPERATIONS


def require_operations(principal: Principal | None) -> Principal:
    """The caller, when it is the operations role; PERMISSION_DENIED otherwise."""
    caller = _caller(principal)
    if not is_operations(caller):
        raise PermissionDeniedError(f"{caller} may not do this: the operations role only")
    return caller


def party_or_operations(principal: Principal | None) -> Principal:
    """The caller, when it is a party or the operations role."""
    caller = _caller(principal)
    if caller.kind != "party" and not is_operations(caller):
        raise PermissionDeniedError(f"{caller} is not a settlement party")
    return caller


def party_of(principal: Principal | None, requested: str) -> str:
    """The party a call is about: the caller's own (a party, which may not name another),
    or the one the operations role names."""
    caller = _caller(principal)
    if is_operations(caller):
        if not requested:
            raise PermissionDeniedError("the operations role must name the party")
        if not is_party_id(requested):
            raise InvalidPartyError("party_id must be <kind>:<name>, e.g. operator:LUL")
        return requested
    if caller.kind != "party":
        raise PermissionDeniedError(f"{caller} is not a settlement party")
    if requested and requested != caller.id:
        raise PermissionDeniedError(f"{caller} may not see {requested}'s settlement")
    return caller.id


# -- closing -----------------------------------------------------------------------------


def cutoff_of(scheme: Scheme, day: date) -> datetime:
    """When a service day's period may close: the cut-off time of the next day, local."""
    local = datetime.combine(
        day + timedelta(days=1), scheme.calendar.cutoff, ZoneInfo(scheme.calendar.timezone)
    )
    return local.astimezone(UTC)


async def close_period(
    ports: SettlementPorts, principal: Principal | None, period_id: str
) -> ClosedPeriod:
    """Close `period_id` (idempotent; the operations role only) and issue every party's
    signed file set and the scheme's payment file. Re-closing writes the same bytes."""
    require_operations(principal)
    day = parse_period_id(period_id)
    due = cutoff_of(ports.scheme, day)
    if ports.now() < due:
        raise PeriodNotDueError(f"period {period_id} may close from {due.isoformat()}")
    if ports.close_wait_s > 0 and not await ports.ledger.is_closed(period_id):
        lag = await ports.lag.wait_caught_up(ports.close_wait_s)
        if lag:
            raise ConsumerLaggingError(
                f"{lag} records not yet posted after {ports.close_wait_s:g}s; retry"
            )
    newly_closed = await ports.ledger.mark_closed(period_id)
    file_sets = await issue_file_sets(ports, period_id, day)
    for stored in file_sets:
        await ports.events.publish(stored)
    totals = await period_totals(ports, period_id, day)
    log.info(
        "period closed",
        extra={"period_id": period_id, "parties": len(file_sets), "newly_closed": newly_closed},
    )
    return ClosedPeriod(period_id, file_sets, totals, newly_closed)


def _parties(scheme: Scheme, day: date, with_entries: set[str]) -> list[Party]:
    """Every party in force on `day` (and any other with entries), the scheme last (its
    set carries the payment file, made from everyone's net)."""
    parties = {p.party_id: p for p in scheme.parties_on(day)}
    for party_id in sorted(with_entries - set(parties)):
        parties[party_id] = _declared(scheme, party_id)
    return sorted(parties.values(), key=lambda p: (p.kind is PartyKind.SCHEME, p.party_id))


def _declared(scheme: Scheme, party_id: str) -> Party:
    """The party the scheme declares as `party_id` (whenever in force)."""
    found = next((p for p in scheme.parties if p.party_id == party_id), None)
    if found is None:
        raise SettlementError(f"entries of {party_id}, which the scheme does not declare")
    return found


async def issue_file_sets(ports: SettlementPorts, period_id: str, day: date) -> list[StoredFileSet]:
    """Write (or find identical) every party's file set of a closed period, all of them
    in one pass over the period's lines; then the scheme's payment file, from every
    party's net."""
    scheme = ports.scheme
    await asyncio.to_thread(publish_public_key, ports.files_root, ports.signer)
    in_force = _parties(scheme, day, set())
    async with PeriodFileSets(
        ports.files_root,
        scheme,
        period_id,
        in_force,
        party_for=lambda party_id: _declared(scheme, party_id),
        signer=ports.signer,
    ) as sets:
        await ports.ledger.copy_period_lines(period_id, sets.add_rows)
        nets = sets.nets()
        parties = _parties(scheme, day, set(nets))
        owed = [
            (p, nets[p.party_id])
            for p in parties
            if p.kind is not PartyKind.SCHEME
            and p.party_id in nets
            and nets[p.party_id].amount_minor > 0
        ]
        extra = {PAYMENT_FILE: payment_file(scheme, period_id, owed)} if owed else {}
        extra_files = {p.party_id: extra for p in parties if p.kind is PartyKind.SCHEME}
        written = await sets.finish(parties, extra_files)
    stored = []
    for info in written:
        record = _stored(info)
        await ports.ledger.record_file_set(record)
        stored.append(record)
    return sorted(stored, key=lambda s: s.party_id)


def _stored(info: FileSetInfo) -> StoredFileSet:
    return StoredFileSet(
        period_id=info.period_id,
        party_id=info.party_id,
        directory=str(info.directory),
        manifest_sha256=info.manifest_sha256,
        line_count=info.line_count,
        net=info.net,
        end_to_end_id=info.end_to_end_id,
        files=tuple((f.name, f.size, f.sha256) for f in info.files),
    )


async def period_totals(ports: SettlementPorts, period_id: str, day: date) -> dict[str, Money]:
    """What moved in the period, by kind: what travellers were charged, what operators
    are owed, what funders reimburse, fees, commission and top-ups; what providers are
    owed for redemptions (vouchers_redeemed), what funders pay for them (vouchers_funded)
    and for rewards credited to stored value (rewards_funded). All positive when money
    flows the usual way."""
    scheme = ports.scheme
    zero = Money.zero(scheme.currency)
    totals = dict.fromkeys(
        (
            "charged",
            "apportioned",
            "reimbursed",
            "fees",
            "commission",
            "top_ups",
            "vouchers_redeemed",
            "vouchers_funded",
            "rewards_funded",
        ),
        zero,
    )
    kinds = {p.party_id: p.kind for p in scheme.parties}
    for (party_id, account), amount in (await ports.ledger.account_totals(period_id)).items():
        kind = kinds.get(party_id)
        if kind is PartyKind.SCHEME and account == TRAVELLER_CHARGES:
            totals["charged"] -= amount
        elif kind is PartyKind.SCHEME and account == CLEARING_FEES:
            totals["fees"] += amount
        elif kind is PartyKind.OPERATOR and account in (FARE_REVENUE, CLEARING_FEES):
            totals["apportioned"] += amount
        elif kind is PartyKind.FUNDER and account == CONCESSION_REIMBURSEMENTS:
            totals["reimbursed"] -= amount
        elif kind is PartyKind.RETAILER and account == COMMISSION:
            totals["commission"] += amount
        elif kind is PartyKind.RETAILER and account == TOP_UPS_SOLD:
            totals["top_ups"] -= amount
        elif kind is PartyKind.PROVIDER and account == VOUCHER_REDEMPTIONS:
            totals["vouchers_redeemed"] += amount
        elif kind is PartyKind.FUNDER and account == VOUCHERS_FUNDED:
            totals["vouchers_funded"] -= amount
        elif account == REWARDS_FUNDED:  # a funder's or an operator's
            totals["rewards_funded"] -= amount
    return totals


# -- reading -----------------------------------------------------------------------------


async def statement(
    ports: SettlementPorts, principal: Principal | None, period_id: str, party_id: str
) -> StoredFileSet:
    """A party's file set of a closed period (the caller's own, or any for operations)."""
    parse_period_id(period_id)
    party = party_of(principal, party_id)
    found = await ports.ledger.file_sets(period_id, party)
    if not found:
        raise StatementNotFoundError(f"no statement for {party} in {period_id}")
    return found[0]


async def statements(
    ports: SettlementPorts, principal: Principal | None, period_id: str, party_id: str
) -> list[StoredFileSet]:
    """File sets of the caller (operations: of a named party, or of every party)."""
    if period_id:
        parse_period_id(period_id)
    if is_operations(principal) and not party_id:
        return await ports.ledger.file_sets(period_id or None, None)
    party = party_of(principal, party_id)
    return await ports.ledger.file_sets(period_id or None, party)


async def file_chunks(
    ports: SettlementPorts,
    principal: Principal | None,
    period_id: str,
    party_id: str,
    name: str,
) -> AsyncIterator[tuple[int, bytes]]:
    """(offset, bytes) of one file of a party's file set, a chunk at a time."""
    stored = await statement(ports, principal, period_id, party_id)
    if name not in {n for n, _, _ in stored.files} | {"manifest.json", "manifest.sig"}:
        raise UnknownFileError(f"no file {name!r} in the file set")
    path = Path(stored.directory) / name
    offset = 0
    with path.open("rb") as handle:
        while chunk := await asyncio.to_thread(handle.read, FILE_CHUNK_BYTES):
            yield offset, chunk
            offset += len(chunk)


async def line_chunks(
    ports: SettlementPorts, principal: Principal | None, period_id: str, party_id: str
) -> AsyncIterator[tuple[int, list[dict[str, str]]]]:
    """(index of the first line, lines as column -> text) of a party's lines.csv."""
    stored = await statement(ports, principal, period_id, party_id)
    path = Path(stored.directory) / LINES_FILE
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        start = 0
        while rows := await asyncio.to_thread(_take, reader, LINES_PER_CHUNK):
            yield start, rows
            start += len(rows)


def _take(reader: Iterator[dict[str, str]], count: int) -> list[dict[str, str]]:
    return [row for _, row in zip(range(count), reader, strict=False)]


def iter_csv(body: str) -> Iterator[dict[str, str]]:
    """Rows of a lines.csv text (for clients and tests)."""
    return csv.DictReader(io.StringIO(body))


async def position(
    ports: SettlementPorts, principal: Principal | None, party_id: str
) -> tuple[str, dict[str, Money]]:
    """The party's net in every open period."""
    party = party_of(principal, party_id)
    return party, await ports.ledger.positions(party)


def signing_key(ports: SettlementPorts) -> tuple[str, str]:
    """(PEM, fingerprint) of the scheme's public signing key."""
    return (
        public_key_pem(ports.signer).decode("ascii"),
        key_fingerprint(raw_public_key(ports.signer)),
    )
