"""Statements: one party's lines for a closed period, with a canonical byte rendering."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from clearway.money import Money, total

from .errors import SettlementError
from .ledger import LedgerEntry, currency_of

STATEMENT_FORMAT = "clearway.statement.v1"


@dataclass(frozen=True, slots=True, order=True)
class StatementLine:
    """One ledger entry as the party sees it (amount > 0 = credit to the party)."""

    journey_id: str
    revision: int
    account: str
    amount: Money
    description: str


@dataclass(frozen=True, slots=True)
class Statement:
    """A party's statement for a period; totals reconcile with the lines."""

    statement_id: str
    period_id: str
    party_id: str
    lines: tuple[StatementLine, ...]
    total_credits: Money
    total_debits: Money
    net: Money


def statement_id_for(period_id: str, party_id: str) -> str:
    """A deterministic statement id, so a replay issues the same id."""
    return f"{period_id}/{party_id}"


def build_statement(period_id: str, party_id: str, entries: Iterable[LedgerEntry]) -> Statement:
    """The statement of `party_id` for `period_id` from the ledger entries (others ignored).

    Lines are sorted by journey, revision, account, so any input order gives one result.
    `total_debits` is a positive amount; net = credits - debits.
    """
    mine = [e for e in entries if e.party_id == party_id and e.period_id == period_id]
    if not mine:
        raise SettlementError(f"no entries for {party_id} in {period_id}")
    currency = currency_of(mine)
    lines = tuple(
        sorted(
            StatementLine(e.journey_id, e.revision, e.account, e.amount, e.description)
            for e in mine
        )
    )
    credits = total((ln.amount for ln in lines if ln.amount.amount_minor > 0), currency)
    debits = -total((ln.amount for ln in lines if ln.amount.amount_minor < 0), currency)
    return Statement(
        statement_id=statement_id_for(period_id, party_id),
        period_id=period_id,
        party_id=party_id,
        lines=lines,
        total_credits=credits,
        total_debits=debits,
        net=credits - debits,
    )


def render_statement(statement: Statement) -> bytes:
    """Canonical bytes: JSON, sorted keys, fixed indentation, ASCII, trailing newline."""
    document = {
        "format": STATEMENT_FORMAT,
        "statement_id": statement.statement_id,
        "period_id": statement.period_id,
        "party_id": statement.party_id,
        "currency": statement.net.currency,
        "total_credits_minor": statement.total_credits.amount_minor,
        "total_debits_minor": statement.total_debits.amount_minor,
        "net_minor": statement.net.amount_minor,
        "lines": [
            {
                "journey_id": ln.journey_id,
                "revision": ln.revision,
                "account": ln.account,
                "amount_minor": ln.amount.amount_minor,
                "description": ln.description,
            }
            for ln in statement.lines
        ],
    }
    text = json.dumps(document, sort_keys=True, indent=2, ensure_ascii=True)
    return (text + "\n").encode("ascii")


def sha256_hex(body: bytes) -> str:
    """Hex sha256 of a statement's bytes (what a party checks its download against)."""
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedStatement:
    """A statement with the exact bytes a party downloads and their sha256."""

    statement: Statement
    body: bytes
    sha256: str


def issue_statements(period_id: str, entries: Iterable[LedgerEntry]) -> list[IssuedStatement]:
    """One statement per party with entries in `period_id`, ordered by party id."""
    in_period = [e for e in entries if e.period_id == period_id]
    issued = []
    for party in sorted({e.party_id for e in in_period}):
        statement = build_statement(period_id, party, in_period)
        body = render_statement(statement)
        issued.append(IssuedStatement(statement, body, sha256_hex(body)))
    return issued


def parse_statement(body: bytes) -> Statement:
    """The statement that `render_statement` rendered into `body` (exact round trip)."""
    doc = json.loads(body)
    if doc.get("format") != STATEMENT_FORMAT:
        raise SettlementError(f"not a {STATEMENT_FORMAT} document")
    currency = str(doc["currency"])
    lines = tuple(
        StatementLine(
            str(ln["journey_id"]),
            int(ln["revision"]),
            str(ln["account"]),
            Money(int(ln["amount_minor"]), currency),
            str(ln["description"]),
        )
        for ln in doc["lines"]
    )
    return Statement(
        statement_id=str(doc["statement_id"]),
        period_id=str(doc["period_id"]),
        party_id=str(doc["party_id"]),
        lines=lines,
        total_credits=Money(int(doc["total_credits_minor"]), currency),
        total_debits=Money(int(doc["total_debits_minor"]), currency),
        net=Money(int(doc["net_minor"]), currency),
    )


def period_totals(statements: Iterable[Statement], issuer_party: str) -> tuple[Money, Money]:
    """(charged, apportioned) of a period: what the issuer owes net of refunds, and what
    the other parties are owed net; they are equal when the ledger balances.
    """
    items = list(statements)
    if not items:
        raise SettlementError("a period without statements has no totals")
    currency = items[0].net.currency
    charged = -total((s.net for s in items if s.party_id == issuer_party), currency)
    apportioned = total((s.net for s in items if s.party_id != issuer_party), currency)
    return charged, apportioned
