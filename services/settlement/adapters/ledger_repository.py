"""The ledger, periods and settlement file sets in PostgreSQL (the service's own schema).

Every flow posts a balanced set of entries, idempotently by source event and revision:
a journey revision (charges, shares, fees, reimbursements), a top-up (amount,
commission) or a benefit posting (a redemption at a provider, a reward). What each
posting was computed from (its *basis*) is kept next to the entries, so a period's
settlement files can say for every line why it is what it is.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import asyncpg

from clearway.db import migrate
from clearway.money import Money
from clearway.scheme.model import Scheme
from services.settlement.domain.benefits import BenefitPosting
from services.settlement.domain.errors import InvalidJourneyError
from services.settlement.domain.ledger import LedgerEntry, postings_for_settlement
from services.settlement.domain.periods import posting_period
from services.settlement.domain.settle import (
    JourneyBasis,
    Position,
    Settlement,
    benefit_position,
    settle_journey,
    top_up_position,
)
from services.settlement.domain.settlement_files import (
    BENEFIT_SOURCES,
    LINE_PARTS,
    LineRecord,
    LineSource,
    benefit_source_columns,
    format_instant,
    format_legs,
    journey_columns,
    parse_instant,
    parse_legs,
    record_basis_columns,
    record_source_columns,
    source_columns,
    top_up_columns,
)
from services.settlement.domain.top_ups import TopUpSale

MIGRATIONS = [
    """
    CREATE TABLE periods (
        period_id text PRIMARY KEY,
        state text NOT NULL CHECK (state IN ('open', 'closed')),
        closed_at timestamptz
    );
    CREATE TABLE ledger_entries (
        entry_id bigserial PRIMARY KEY,
        period_id text NOT NULL REFERENCES periods (period_id),
        journey_id text NOT NULL,
        revision bigint NOT NULL CHECK (revision >= 1),
        party_id text NOT NULL,
        account text NOT NULL,
        amount_minor bigint NOT NULL,
        currency char(3) NOT NULL,
        description text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        -- A replayed journey revision adds nothing.
        UNIQUE (journey_id, revision, party_id, account)
    );
    CREATE INDEX ledger_entries_by_period ON ledger_entries (period_id, party_id);
    CREATE TABLE statements (
        period_id text NOT NULL REFERENCES periods (period_id),
        party_id text NOT NULL,
        statement_id text NOT NULL UNIQUE,
        body bytea NOT NULL,
        sha256 text NOT NULL,
        path text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (period_id, party_id)
    );
    """,
    # v2: the latest revision processed per journey, so a replayed or out-of-date
    # revision is skipped (postings are now differences against the journey's standing).
    """
    CREATE TABLE journey_positions (
        journey_id text PRIMARY KEY,
        revision bigint NOT NULL
    );
    INSERT INTO journey_positions (journey_id, revision)
        SELECT journey_id, max(revision) FROM ledger_entries GROUP BY journey_id;
    """,
    # v3: the scheme (parties, methods, fees, funding): entries of journeys and top-ups
    # (`source`), the basis of every posting, and signed file sets instead of JSON
    # statements. Top-up positions are keyed 'top_up:<id>' in journey_positions.
    """
    ALTER TABLE ledger_entries ADD COLUMN source text NOT NULL DEFAULT 'journey';
    ALTER TABLE ledger_entries
        DROP CONSTRAINT ledger_entries_journey_id_revision_party_id_account_key;
    CREATE UNIQUE INDEX ledger_entries_once
        ON ledger_entries (source, journey_id, revision, party_id, account);
    CREATE INDEX ledger_entries_lines
        ON ledger_entries (period_id, party_id, source, journey_id COLLATE "C", account);
    CREATE TABLE bases (
        source text NOT NULL,
        source_id text NOT NULL,
        revision bigint NOT NULL,
        basis text NOT NULL,
        PRIMARY KEY (source, source_id, revision)
    );
    CREATE TABLE file_sets (
        period_id text NOT NULL REFERENCES periods (period_id),
        party_id text NOT NULL,
        directory text NOT NULL,
        manifest_sha256 text NOT NULL,
        line_count bigint NOT NULL,
        net_minor bigint NOT NULL,
        currency char(3) NOT NULL,
        end_to_end_id text,
        files text NOT NULL,
        PRIMARY KEY (period_id, party_id)
    );
    """,
    # v4: a period closes in one ordered pass over its entries, without a sort and with
    # each basis read once per line from a narrow row. A basis keeps, next to its
    # canonical JSON, the period its postings went into, what its file lines need of the
    # JSON (service day, currency, targets, weights) and its columns of lines.csv
    # rendered at posting (line_columns: method to legs; line_tail: top-up amount and
    # retailer). Bases posted before v4 get everything but the rendered columns here;
    # the close renders those from the JSON.
    """
    ALTER TABLE bases
        ADD COLUMN period_id text,
        ADD COLUMN service_day text,
        ADD COLUMN currency text,
        ADD COLUMN targets jsonb,
        ADD COLUMN weights jsonb,
        ADD COLUMN line_columns text,
        ADD COLUMN line_tail text;
    UPDATE bases AS b SET
        period_id = (SELECT e.period_id FROM ledger_entries e WHERE e.source = b.source
                     AND e.journey_id = b.source_id AND e.revision = b.revision LIMIT 1),
        service_day = b.basis::jsonb ->> 'service_day',
        currency = b.basis::jsonb ->> 'currency',
        targets = b.basis::jsonb -> 'targets',
        weights = b.basis::jsonb -> 'weights';
    CREATE INDEX bases_by_period ON bases
        (period_id, source COLLATE "C", source_id COLLATE "C", revision)
        WHERE period_id IS NOT NULL;
    DROP INDEX ledger_entries_lines;
    CREATE INDEX ledger_entries_lines ON ledger_entries
        (period_id, source COLLATE "C", journey_id COLLATE "C", party_id COLLATE "C",
         account COLLATE "C") INCLUDE (revision, amount_minor);
    """,
    # v5: benefit postings (redemptions, rewards; sources 'redemption' and 'reward', their
    # positions keyed 'benefit:<posting id>'). lines.csv gains six source columns after
    # `retailer` (benefit_amount_minor to reward_rule): every basis rendered before is a
    # journey's or a top-up's, so its rendered tail gains them empty.
    """
    UPDATE bases SET line_tail = line_tail || ',,,,,,' WHERE line_tail IS NOT NULL;
    """,
]

# A period's lines in one pass (LedgerRepository.copy_period_lines): the entries grouped
# per (source, source id, party, account) straight off the index ledger_entries_lines
# (index-only, in its order: no sort), each group joined to the basis of its latest
# revision read in the same order off bases_by_period (a merge join on source and source
# id, the revision a join filter), the basis' target and weight for the party looked up
# in its JSON. The last part is the basis' rendered source columns, or for a basis posted
# before migration v4 (no rendered columns) its JSON to render them from. Every string
# in "C" (code point) order. No sort anywhere, which PostgreSQL 15 needs help to see:
# - both sides are subqueries whose columns carry "C" (joined on `b.source COLLATE "C" =
#   e.source` instead, it hashes the bases and re-sorts the whole result, spilling);
# - the revision is compared with `IS TRUE`, so it is no merge key: as one, the grouped
#   entries (estimated at a tenth of their number) are re-sorted by source, source id
#   and revision (a million journeys: 440 MB spilled), then sorted again for ORDER BY;
# - PERIOD_LINES_SETTINGS turn off JIT (compiling costs more than it saves) and sorts
#   (the only plan with one hashes the bases and sorts the result: slower at any size).
PERIOD_LINES_QUERY = """
SELECT e.party_id, e.account, e.source, e.journey_id, e.revision, e.amount,
       coalesce(b.targets ->> (e.party_id || '|' || e.account), '0'),
       b.service_day, b.currency, b.line_columns,
       coalesce(b.weights ->> e.party_id, ''),
       coalesce(b.line_tail, b.basis)
FROM (SELECT source COLLATE "C" AS source, journey_id COLLATE "C" AS journey_id,
             party_id COLLATE "C" AS party_id, account COLLATE "C" AS account,
             sum(amount_minor)::bigint AS amount, max(revision) AS revision
      FROM ledger_entries WHERE period_id = $1
      GROUP BY 1, 2, 3, 4) AS e
LEFT JOIN (SELECT source COLLATE "C" AS source, source_id COLLATE "C" AS source_id,
                  revision, service_day, currency, targets, weights, line_columns,
                  line_tail, basis
           FROM bases WHERE period_id = $1
           ORDER BY 1, 2, 3) AS b
     ON b.source = e.source AND b.source_id = e.journey_id
     AND (b.revision = e.revision) IS TRUE
ORDER BY e.source, e.journey_id, e.party_id, e.account
"""
PERIOD_LINES_SETTINGS = ("SET LOCAL jit = off", "SET LOCAL enable_sort = off")
_COPY_NULL = b"\\N"  # COPY's text format: NULL
_COPY_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_COPY_ESCAPED = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}
_PARTS = {name: n for n, name in enumerate(LINE_PARTS)}


def _copy_fields(row: list[bytes]) -> list[bytes]:
    """The fields of a COPY text row with backslash escapes undone (NULL stays `\\N`)."""
    return [
        _COPY_ESCAPE.sub(_copy_unescaped, field)
        if b"\\" in field and field != _COPY_NULL
        else field
        for field in row
    ]


def _copy_unescaped(match: re.Match[bytes]) -> bytes:
    char = match.group(1)
    return _COPY_ESCAPED.get(char, char)


class _LegacyColumns:
    """Fills in the rendered columns of rows whose basis has none (posted before migration
    v4) from its JSON, the way lines were made before v4; marks rows without a basis."""

    _COLUMNS = _PARTS["basis_columns"]
    _TAIL = _PARTS["source_columns"]
    _DAY = _PARTS["service_day"]

    def __init__(self, period_id: str) -> None:
        self._period_id = period_id
        self._last: tuple[bytes, bytes, bytes, bytes] | None = None  # source, id, revision, JSON
        self._rendered = (b"", b"")

    def resolve(self, rows: list[list[bytes]]) -> None:
        """Complete `rows` in place."""
        for row in rows:
            if row[self._COLUMNS] != _COPY_NULL:
                continue
            if row[self._TAIL] == _COPY_NULL:  # no basis at all: no line
                row[self._DAY] = b""
                continue
            row[self._COLUMNS], row[self._TAIL] = self._render(row)

    def _render(self, row: list[bytes]) -> tuple[bytes, bytes]:
        part = _PARTS
        key = (row[part["source"]], row[part["source_id"]], row[part["revision"]], row[self._TAIL])
        if key != self._last:
            record = line_record(
                self._period_id,
                row[part["party_id"]].decode(),
                row[part["account"]].decode(),
                row[part["source_id"]].decode(),
                int(row[part["revision"]]),
                int(row[part["amount_minor"]]),
                row[self._TAIL].decode(),
            )
            tail = record_source_columns(record)
            self._rendered = (record_basis_columns(record).encode(), tail.encode())
            self._last = key
        return self._rendered


_SELECT_ENTRIES = (
    "SELECT period_id, journey_id, revision, party_id, account, amount_minor, currency,"
    " description FROM ledger_entries"
)

Item = JourneyBasis | TopUpSale | BenefitPosting
_NO_BASIS_COLUMNS = top_up_columns()  # a top-up's or a benefit posting's lines
_JOURNEY_TAIL = source_columns(None, "")
# A posting id is posted once, whatever its kind (one position key for both sources).
_BENEFIT_POSITION_PREFIX = "benefit"


@dataclass(frozen=True, slots=True)
class _StoredBasis:
    """A basis as stored: its canonical JSON and its columns of lines.csv, rendered."""

    document: str
    line_columns: str  # basis_columns: method to legs
    line_tail: str  # source_columns: top_up_amount_minor to reward_rule


@dataclass(frozen=True, slots=True)
class PostResult:
    """Where a revision was posted and how many entries were new.

    `skipped` is True when the revision was not newer than the latest one processed for
    its source (a replay, or an out-of-date revision): nothing was posted. A newer
    revision that changes nothing has `inserted` 0 and `skipped` False.
    """

    period_id: str | None
    inserted: int
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class StoredFileSet:
    """A party's file set of a closed period, as recorded."""

    period_id: str
    party_id: str
    directory: str
    manifest_sha256: str
    line_count: int
    net: Money
    end_to_end_id: str | None
    files: tuple[tuple[str, int, str], ...]  # (name, bytes, sha256)


def _entry(row: asyncpg.Record) -> LedgerEntry:
    return LedgerEntry(
        period_id=row["period_id"],
        journey_id=row["journey_id"],
        revision=row["revision"],
        party_id=row["party_id"],
        account=row["account"],
        amount=Money(row["amount_minor"], row["currency"].strip()),
        description=row["description"],
    )


def _source_of(item: Item) -> tuple[str, str, int]:
    """(source, source id, revision) of a posting."""
    if isinstance(item, TopUpSale):
        return (LineSource.TOP_UP.value, item.top_up_id, 1)
    if isinstance(item, BenefitPosting):
        return (LineSource(item.kind.value).value, item.posting_id, 1)
    return (LineSource.JOURNEY.value, item.journey_id, item.revision)


def _position_key(source: str, source_id: str) -> str:
    """The key of a source in journey_positions (journeys keep their plain ids; both
    kinds of benefit posting share `benefit:<posting id>`)."""
    if source == LineSource.JOURNEY.value:
        return source_id
    prefix = _BENEFIT_POSITION_PREFIX if source in BENEFIT_SOURCES else source
    return f"{prefix}:{source_id}"


def _once(
    what: str,
    item: TopUpSale | BenefitPosting,
    position: Position,
    held: Mapping[tuple[str, str], Money],
) -> list[LedgerEntry]:
    """The entries that move a source posted once (a top-up, a benefit posting) from
    `held` to `position`, dated by its service day; non-zero only."""
    source_id = item.top_up_id if isinstance(item, TopUpSale) else item.posting_id
    zero = Money.zero(item.amount.currency)
    posted = [
        LedgerEntry(
            item.service_day.isoformat(),
            source_id,
            1,
            party,
            account,
            amount - held.get((party, account), zero),
            f"{account.replace('_', ' ')} of {what}",
        )
        for (party, account), amount in sorted(position.items())
    ]
    return [e for e in posted if e.amount.amount_minor]


def _targets(position: Mapping[tuple[str, str], Money]) -> dict[str, int]:
    return {
        f"{party}|{account}": amount.amount_minor for (party, account), amount in position.items()
    }


def journey_basis_document(basis: JourneyBasis, settlement: Settlement) -> str:
    """What a journey revision's postings were computed from, as stored (canonical JSON)."""
    document = {
        "source": LineSource.JOURNEY.value,
        "currency": settlement.currency,
        "service_day": basis.service_day.isoformat(),
        "method": settlement.method.value if settlement.method is not None else "",
        "method_rule": settlement.method_rule_id or "",
        "fell_back": settlement.fell_back_to_equal,
        "charge": basis.charge.amount_minor,
        "forgone": settlement.fare_forgone.amount_minor,
        "reimbursement": settlement.reimbursement.amount_minor,
        "fee": settlement.fee.amount_minor,
        "funding_rule": settlement.funding_rule_id or "",
        "rider_category": basis.rider_category_id,
        "started_at": format_instant(basis.started_at),
        "legs": format_legs(basis.legs),
        "weights": {
            s.party_id: f"{s.proportion.numerator}/{s.proportion.denominator}"
            for s in settlement.shares
        },
        "targets": _targets(settlement.position),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def top_up_basis_document(sale: TopUpSale, position: Position) -> str:
    """What a top-up's postings were computed from, as stored (canonical JSON)."""
    document = {
        "source": LineSource.TOP_UP.value,
        "currency": sale.amount.currency,
        "service_day": sale.service_day.isoformat(),
        "amount": sale.amount.amount_minor,
        "retailer": sale.retailer_id,
        "targets": _targets(position),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def benefit_basis_document(posting: BenefitPosting, position: Position) -> str:
    """What a benefit posting's postings were computed from, as stored (canonical JSON)."""
    document = {
        "source": LineSource(posting.kind.value).value,
        "currency": posting.amount.currency,
        "service_day": posting.service_day.isoformat(),
        "amount": posting.amount.amount_minor,
        "funder": posting.funder_id,
        "provider": posting.provider_id,
        "entitlement_scheme": posting.entitlement_scheme_id,
        "category": posting.category,
        "reward_rule": posting.reward_rule_id,
        "targets": _targets(position),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def line_record(  # noqa: PLR0917 - one line's columns
    period_id: str,
    party_id: str,
    account: str,
    source_id: str,
    revision: int,
    amount_minor: int,
    basis_text: str,
) -> LineRecord:
    """A line of a party's lines.csv: its movement in the period and its stored basis.
    What it stood at before the period is the basis' target less the movement (entries
    of one source in a period telescope from the earlier standing to the last target)."""
    basis = json.loads(basis_text)
    target = int(basis["targets"].get(f"{party_id}|{account}", 0))
    common = {
        "period_id": period_id,
        "party_id": party_id,
        "account": account,
        "source_id": source_id,
        "service_day": dt.date.fromisoformat(basis["service_day"]),
        "revision": revision,
        "amount_minor": amount_minor,
        "previous_minor": target - amount_minor,
        "target_minor": target,
        "currency": basis["currency"],
    }
    if basis["source"] == LineSource.TOP_UP.value:
        return LineRecord(
            source=LineSource.TOP_UP,
            top_up_amount_minor=int(basis["amount"]),
            retailer=basis["retailer"],
            **common,
        )
    if basis["source"] in BENEFIT_SOURCES:
        return LineRecord(
            source=LineSource(basis["source"]),
            benefit_amount_minor=int(basis["amount"]),
            funder=basis["funder"],
            provider=basis["provider"],
            entitlement_scheme=basis["entitlement_scheme"],
            category=basis["category"],
            reward_rule=basis["reward_rule"],
            **common,
        )
    weight = basis["weights"].get(party_id)
    return LineRecord(
        source=LineSource.JOURNEY,
        method=basis["method"],
        method_rule=basis["method_rule"],
        fell_back_to_equal=bool(basis["fell_back"]),
        charge_minor=int(basis["charge"]),
        fare_forgone_minor=int(basis["forgone"]),
        reimbursement_minor=int(basis["reimbursement"]),
        fee_minor=int(basis["fee"]),
        funding_rule=basis["funding_rule"],
        rider_category=basis["rider_category"],
        started_at=parse_instant(basis["started_at"]),
        legs=parse_legs(basis["legs"], basis["currency"]),
        weight=Fraction(weight) if weight else None,
        **common,
    )


class LedgerRepository:
    """Idempotent postings under the scheme, period closing and file-set records."""

    def __init__(self, pool: asyncpg.Pool, scheme: Scheme) -> None:
        self._pool = pool
        self.scheme = scheme

    async def migrate(self) -> int:
        """Bring the schema up to date."""
        return await migrate(self._pool, MIGRATIONS)

    async def post(self, item: Item) -> PostResult:
        """Post one journey revision, top-up or benefit posting (see `post_many`)."""
        return (await self.post_many([item]))[0]

    async def post_many(self, items: Sequence[Item]) -> list[PostResult]:
        """Post journey revisions, top-ups and benefit postings, in order, in one
        transaction: for each, the difference between its target position under the
        scheme and what already stands for its source.

        A revision not newer than the latest one processed for its source (a replay, or
        an out-of-date revision) adds nothing; a newer one is recorded as processed even
        when it posts nothing. A handful of multi-row statements, whatever the count.
        """
        if not items:
            return []
        sources = [_source_of(item) for item in items]
        keys = sorted({_position_key(source, sid) for source, sid, _ in sources})
        async with self._pool.acquire() as conn, conn.transaction():
            # Row-lock the sources' positions (created at 0 when new), in one order, so
            # concurrent postings of one source serialise and each sees the other's entries.
            await conn.execute(
                "INSERT INTO journey_positions (journey_id, revision)"
                " SELECT unnest($1::text[]), 0 ON CONFLICT DO NOTHING",
                keys,
            )
            rows = await conn.fetch(
                "SELECT journey_id, revision FROM journey_positions"
                " WHERE journey_id = ANY($1::text[]) ORDER BY journey_id FOR UPDATE",
                keys,
            )
            latest: dict[str, int] = {r["journey_id"]: r["revision"] for r in rows}
            standing = await self._standings(conn, sources)
            periods: dict[str, str] = {}
            results: list[PostResult] = []
            entries: list[tuple[str, LedgerEntry]] = []
            bases: list[tuple[str, str, int, _StoredBasis, str | None]] = []
            for item, (source, source_id, revision) in zip(items, sources, strict=True):
                key = _position_key(source, source_id)
                if revision <= latest[key]:
                    results.append(PostResult(None, 0, skipped=True))
                    continue
                latest[key] = revision
                held = standing.setdefault((source, source_id), {})
                posted, basis = self._postings(item, held)
                if not posted:
                    bases.append((source, source_id, revision, basis, None))
                    results.append(PostResult(None, 0))
                    continue
                day = posted[0].period_id  # postings are computed for the service day
                if day not in periods:
                    periods[day] = await self._lock_open_period(conn, day)
                period_id = periods[day]
                bases.append((source, source_id, revision, basis, period_id))
                for entry in posted:
                    k = (entry.party_id, entry.account)
                    held[k] = held[k] + entry.amount if k in held else entry.amount
                entries += [(source, dataclasses.replace(e, period_id=period_id)) for e in posted]
                results.append(PostResult(period_id, len(posted)))
            await self._insert_entries(conn, entries)
            await self._insert_bases(conn, bases)
            await conn.execute(
                "UPDATE journey_positions AS p SET revision = n.revision"
                " FROM unnest($1::text[], $2::bigint[]) AS n(journey_id, revision)"
                " WHERE p.journey_id = n.journey_id AND p.revision < n.revision",
                list(latest),
                list(latest.values()),
            )
            return results

    def _postings(
        self, item: Item, held: dict[tuple[str, str], Money]
    ) -> tuple[list[LedgerEntry], _StoredBasis]:
        """The entries that move `item`'s source from `held` to its target, dated by its
        service day (the caller moves them to the period they post into), and its basis."""
        if isinstance(item, TopUpSale):
            position = top_up_position(self.scheme, item.service_day, item.retailer_id, item.amount)
            basis = _StoredBasis(
                top_up_basis_document(item, position),
                _NO_BASIS_COLUMNS,
                source_columns(item.amount.amount_minor, item.retailer_id),
            )
            return _once(f"top-up {item.top_up_id}", item, position, held), basis
        if isinstance(item, BenefitPosting):
            position = benefit_position(self.scheme, item.service_day, item)
            basis = _StoredBasis(
                benefit_basis_document(item, position),
                _NO_BASIS_COLUMNS,
                benefit_source_columns(item),
            )
            return _once(f"{item.kind.value} {item.posting_id}", item, position, held), basis
        settlement = settle_journey(self.scheme, item)
        posted = postings_for_settlement(
            item.journey_id, item.revision, None, settlement, standing=held
        )
        basis = _StoredBasis(
            journey_basis_document(item, settlement),
            journey_columns(item, settlement),
            _JOURNEY_TAIL,
        )
        return posted, basis

    @staticmethod
    async def _insert_entries(
        conn: asyncpg.Connection, entries: Sequence[tuple[str, LedgerEntry]]
    ) -> None:
        if not entries:
            return
        await conn.execute(
            "INSERT INTO ledger_entries (source, period_id, journey_id, revision, party_id,"
            " account, amount_minor, currency, description)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[],"
            " $5::text[], $6::text[], $7::bigint[], $8::text[], $9::text[])",
            [source for source, _ in entries],
            [e.period_id for _, e in entries],
            [e.journey_id for _, e in entries],
            [e.revision for _, e in entries],
            [e.party_id for _, e in entries],
            [e.account for _, e in entries],
            [e.amount.amount_minor for _, e in entries],
            [e.amount.currency for _, e in entries],
            [e.description for _, e in entries],
        )

    @staticmethod
    async def _insert_bases(
        conn: asyncpg.Connection, bases: Sequence[tuple[str, str, int, _StoredBasis, str | None]]
    ) -> None:
        """Insert the bases with what their file lines need: what migration v4 takes from
        the JSON of earlier bases is taken here the same way, by PostgreSQL."""
        if not bases:
            return
        await conn.execute(
            "INSERT INTO bases (source, source_id, revision, basis, period_id, service_day,"
            " currency, targets, weights, line_columns, line_tail)"
            " SELECT source, source_id, revision, basis, period_id, d ->> 'service_day',"
            " d ->> 'currency', d -> 'targets', d -> 'weights', line_columns, line_tail"
            " FROM (SELECT n.*, n.basis::jsonb AS d"
            "       FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],"
            "                   $6::text[], $7::text[])"
            "       AS n(source, source_id, revision, basis, period_id, line_columns, line_tail)"
            "       OFFSET 0) AS x"  # OFFSET 0: parse each JSON once, not once per field
            " ON CONFLICT DO NOTHING",
            [b[0] for b in bases],
            [b[1] for b in bases],
            [b[2] for b in bases],
            [b[3].document for b in bases],
            [b[4] for b in bases],
            [b[3].line_columns for b in bases],
            [b[3].line_tail for b in bases],
        )

    @staticmethod
    async def _standings(
        conn: asyncpg.Connection, sources: Sequence[tuple[str, str, int]]
    ) -> dict[tuple[str, str], dict[tuple[str, str], Money]]:
        """What is already posted for each source, per (party, account), in all periods."""
        unique = sorted({(source, source_id) for source, source_id, _ in sources})
        rows = await conn.fetch(
            "SELECT e.source, e.journey_id, e.party_id, e.account, e.currency,"
            " sum(e.amount_minor)::bigint AS amount FROM ledger_entries e"
            " JOIN unnest($1::text[], $2::text[]) AS s(source, source_id)"
            " ON e.source = s.source AND e.journey_id = s.source_id"
            " GROUP BY e.source, e.journey_id, e.party_id, e.account, e.currency"
            " ORDER BY e.source, e.journey_id, e.party_id, e.account, e.currency",
            [source for source, _ in unique],
            [source_id for _, source_id in unique],
        )
        standings: dict[tuple[str, str], dict[tuple[str, str], Money]] = {}
        for row in rows:
            standing = standings.setdefault((row["source"], row["journey_id"]), {})
            key = (row["party_id"], row["account"])
            if key in standing:
                raise InvalidJourneyError(
                    "CURRENCY_MISMATCH",
                    f"{row['journey_id']} stands in several currencies at {key[0]}",
                )
            standing[key] = Money(row["amount"], row["currency"].strip())
        return standings

    async def _lock_open_period(self, conn: asyncpg.Connection, service_day: str) -> str:
        """The period to post into, share-locked open until the posting commits.

        The share lock makes a concurrent close wait for this posting (and this posting
        see the close), so a period's files contain exactly what was posted in it.
        """
        while True:
            closed = await conn.fetch(
                "SELECT period_id FROM periods WHERE state = 'closed' AND period_id >= $1",
                service_day,
            )
            period_id = posting_period(service_day, {r["period_id"] for r in closed})
            await conn.execute(
                "INSERT INTO periods (period_id, state) VALUES ($1, 'open') ON CONFLICT DO NOTHING",
                period_id,
            )
            state = await conn.fetchval(
                "SELECT state FROM periods WHERE period_id = $1 FOR SHARE", period_id
            )
            if state == "open":
                return period_id

    async def mark_closed(self, period_id: str) -> bool:
        """Close `period_id` (idempotent); True when this call closed it. Postings of the
        period that are under way finish first (they hold a share lock on its row)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO periods (period_id, state) VALUES ($1, 'open') ON CONFLICT DO NOTHING",
                period_id,
            )
            state = await conn.fetchval(
                "SELECT state FROM periods WHERE period_id = $1 FOR UPDATE", period_id
            )
            if state == "closed":
                return False
            await conn.execute(
                "UPDATE periods SET state = 'closed', closed_at = $2 WHERE period_id = $1",
                period_id,
                dt.datetime.now(dt.UTC),
            )
            return True

    async def is_closed(self, period_id: str) -> bool:
        """Whether `period_id` has been closed."""
        state = await self._pool.fetchval(
            "SELECT state FROM periods WHERE period_id = $1", period_id
        )
        return bool(state == "closed")

    async def periods(self) -> list[tuple[str, str]]:
        """Every period known, (id, state), newest first."""
        rows = await self._pool.fetch(
            "SELECT period_id, state FROM periods ORDER BY period_id DESC"
        )
        return [(r["period_id"], r["state"]) for r in rows]

    async def nets(self, period_id: str) -> dict[str, Money]:
        """Each party's net movement in `period_id` (credits minus debits)."""
        rows = await self._pool.fetch(
            "SELECT party_id, currency, sum(amount_minor)::bigint AS net FROM ledger_entries"
            " WHERE period_id = $1 GROUP BY party_id, currency ORDER BY party_id",
            period_id,
        )
        return {r["party_id"]: Money(r["net"], r["currency"].strip()) for r in rows}

    async def account_totals(self, period_id: str) -> dict[tuple[str, str], Money]:
        """What moved in `period_id` per (party, account)."""
        rows = await self._pool.fetch(
            "SELECT party_id, account, currency, sum(amount_minor)::bigint AS amount"
            " FROM ledger_entries WHERE period_id = $1"
            " GROUP BY party_id, account, currency ORDER BY party_id, account",
            period_id,
        )
        return {
            (r["party_id"], r["account"]): Money(r["amount"], r["currency"].strip()) for r in rows
        }

    async def positions(self, party_id: str) -> dict[str, Money]:
        """A party's net movement per open period (its current position)."""
        rows = await self._pool.fetch(
            "SELECT e.period_id, e.currency, sum(e.amount_minor)::bigint AS net"
            " FROM ledger_entries e JOIN periods p USING (period_id)"
            " WHERE e.party_id = $1 AND p.state = 'open'"
            " GROUP BY e.period_id, e.currency ORDER BY e.period_id",
            party_id,
        )
        return {r["period_id"]: Money(r["net"], r["currency"].strip()) for r in rows}

    async def open_period_totals(self) -> list[tuple[str, str, str, int]]:
        """What moved in each open period per account, over all parties: (period, account,
        currency, amount in minor units); a balanced ledger's totals of a period sum to 0."""
        rows = await self._pool.fetch(
            "SELECT e.period_id, e.account, e.currency, sum(e.amount_minor)::bigint AS amount"
            " FROM ledger_entries e JOIN periods p USING (period_id)"
            " WHERE p.state = 'open'"
            " GROUP BY e.period_id, e.account, e.currency"
            " ORDER BY e.period_id, e.account, e.currency"
        )
        return [
            (r["period_id"], r["account"], r["currency"].strip(), int(r["amount"])) for r in rows
        ]

    async def copy_period_lines(
        self, period_id: str, on_rows: Callable[[list[list[bytes]]], Awaitable[None]]
    ) -> None:
        """Every (source, party, account) with entries in `period_id`, as rows of
        LINE_PARTS, in one pass in lines.csv order of every party at once (source, source
        id, party, account; strings in code point order), handed to `on_rows` a chunk at
        a time while PostgreSQL produces the next (a COPY: never the period in memory).

        Rows that net to 0 come too, and rows without a basis (service day b""), so every
        party with entries is seen. A basis posted before migration v4 has no rendered
        columns: they are rendered here from its JSON, as its lines were before v4.
        """
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            for setting in PERIOD_LINES_SETTINGS:
                await conn.execute(setting)
            legacy = _LegacyColumns(period_id)

            async def sink(data: bytes | bytearray) -> None:
                chunk = bytes(data)  # asyncpg hands a bytearray: rows must be hashable
                rows = [row.split(b"\t") for row in chunk.split(b"\n")]
                rows.pop()  # the chunk ends with a row's end
                if b"\\" in chunk:  # a NULL (\\N) or an escaped character somewhere
                    rows = [_copy_fields(row) for row in rows]
                    legacy.resolve(rows)
                await on_rows(rows)

            await conn.copy_from_query(PERIOD_LINES_QUERY, period_id, output=sink)

    async def record_file_set(self, stored: StoredFileSet) -> None:
        """Remember a party's file set of a closed period (rewriting the same is a no-op)."""
        await self._pool.execute(
            "INSERT INTO file_sets (period_id, party_id, directory, manifest_sha256,"
            " line_count, net_minor, currency, end_to_end_id, files)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT (period_id, party_id) DO UPDATE SET directory = excluded.directory,"
            " manifest_sha256 = excluded.manifest_sha256, line_count = excluded.line_count,"
            " net_minor = excluded.net_minor, currency = excluded.currency,"
            " end_to_end_id = excluded.end_to_end_id, files = excluded.files",
            stored.period_id,
            stored.party_id,
            stored.directory,
            stored.manifest_sha256,
            stored.line_count,
            stored.net.amount_minor,
            stored.net.currency,
            stored.end_to_end_id,
            json.dumps([list(f) for f in stored.files]),
        )

    async def file_sets(
        self, period_id: str | None = None, party_id: str | None = None
    ) -> list[StoredFileSet]:
        """Recorded file sets (of a period and/or a party), by period then party."""
        rows = await self._pool.fetch(
            "SELECT * FROM file_sets WHERE ($1::text IS NULL OR period_id = $1)"
            " AND ($2::text IS NULL OR party_id = $2) ORDER BY period_id, party_id",
            period_id,
            party_id,
        )
        return [
            StoredFileSet(
                r["period_id"],
                r["party_id"],
                r["directory"],
                r["manifest_sha256"],
                r["line_count"],
                Money(r["net_minor"], r["currency"].strip()),
                r["end_to_end_id"],
                tuple((str(n), int(b), str(h)) for n, b, h in json.loads(r["files"])),
            )
            for r in rows
        ]

    async def entries(self, journey_id: str | None = None) -> Sequence[LedgerEntry]:
        """Ledger entries (of one source id, or all), in a stable order; tests and audits."""
        query = _SELECT_ENTRIES
        args: list[object] = []
        if journey_id is not None:
            query += " WHERE journey_id = $1"
            args.append(journey_id)
        rows = await self._pool.fetch(
            query + " ORDER BY journey_id, revision, party_id, account", *args
        )
        return [_entry(r) for r in rows]
