"""The close's way of writing file sets gives the bytes line records give: columns rendered
once per basis equal what csv_line renders per line; the totals of sums equal the totals
counted line by line; PeriodFileSets, fed rows of LINE_PARTS for every party at once,
writes byte for byte what write_file_set writes per party, and refuses what it refuses."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearway.money import Money
from clearway.scheme.file import load_scheme
from clearway.scheme.model import Party, PartyKind, Scheme
from services.settlement.adapters.file_sets import PeriodFileSets, write_file_set
from services.settlement.domain.errors import SettlementError
from services.settlement.domain.settle import (
    CLEARING_FEES,
    COMMISSION,
    COMMISSION_PAID,
    CONCESSION_REIMBURSEMENTS,
    FARE_REVENUE,
    REWARDS_FUNDED,
    TRAVELLER_CHARGES,
    TRAVELLER_FLOAT,
    VOUCHER_REDEMPTIONS,
    VOUCHERS_FUNDED,
    JourneyBasis,
    Leg,
    settle_journey,
)
from services.settlement.domain.settlement_files import (
    LINE_FORMAT,
    LINE_PARTS,
    PAYMENT_FILE,
    LineRecord,
    LineSource,
    SettlementFileError,
    SummaryTotals,
    csv_line,
    format_instant,
    format_legs,
    format_weight,
    journey_columns,
    journey_lines,
    payment_file,
    quoted_field,
    record_basis_columns,
    record_source_columns,
    top_up_columns,
)

from .test_settlement_files import PERIOD, SCHEME_FILE, period_records

SCHEME = load_scheme(SCHEME_FILE)
DAY = date.fromisoformat(PERIOD)
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
GBP = "GBP"


def reference_csv_line(record: LineRecord, line: int | None = None) -> str:
    """csv_line as it was before lines were rendered from parts (the contract's bytes)."""

    def q(value: str) -> str:
        if any(c in value for c in ',"\r\n'):
            return '"' + value.replace('"', '""') + '"'
        return value

    def opt(value: int | None) -> str:
        return "" if value is None else str(value)

    weight = record.weight
    values = (
        str(record.line if line is None else line),
        q(record.period_id),
        q(record.party_id),
        q(record.account),
        record.source.value,
        q(record.source_id),
        record.service_day.isoformat(),
        str(record.revision),
        str(record.amount_minor),
        str(record.previous_minor),
        str(record.target_minor),
        q(record.currency),
        q(record.method),
        q(record.method_rule),
        "1" if record.fell_back_to_equal else "0",
        opt(record.charge_minor),
        opt(record.fare_forgone_minor),
        opt(record.reimbursement_minor),
        opt(record.fee_minor),
        q(record.funding_rule),
        q(record.rider_category),
        format_instant(record.started_at),
        q(format_legs(record.legs)),
        "" if weight is None else f"{weight.numerator}/{weight.denominator}",
        opt(record.top_up_amount_minor),
        q(record.retailer),
        opt(record.benefit_amount_minor),
        q(record.funder),
        q(record.provider),
        q(record.entitlement_scheme),
        q(record.category),
        q(record.reward_rule),
    )
    return ",".join(values) + "\n"


def row_of(record: LineRecord) -> list[bytes]:
    """A record as the close reads it: LINE_PARTS, rendered parts."""
    parts = {
        "party_id": record.party_id,
        "account": record.account,
        "source": record.source.value,
        "source_id": record.source_id,
        "revision": str(record.revision),
        "amount_minor": str(record.amount_minor),
        "target_minor": str(record.target_minor),
        "service_day": record.service_day.isoformat(),
        "currency": record.currency,
        "basis_columns": record_basis_columns(record),
        "weight": format_weight(record.weight),
        "source_columns": record_source_columns(record),
    }
    return [parts[name].encode() for name in LINE_PARTS]


def in_pass_order(records: Iterable[LineRecord]) -> list[list[bytes]]:
    """Rows in the close's order: source, source id, party, account."""
    ordered = sorted(records, key=lambda r: (r.source.value, r.source_id, r.party_id, r.account))
    return [row_of(r) for r in ordered]


async def stream(records: Iterable[LineRecord]) -> AsyncIterator[LineRecord]:
    for record in records:
        yield record


def read_tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def declared(party_id: str) -> Party:
    found = next((p for p in SCHEME.parties if p.party_id == party_id), None)
    if found is None:
        raise SettlementError(f"entries of {party_id}, which the scheme does not declare")
    return found


def parties_in_order(scheme: Scheme) -> list[Party]:
    return sorted(scheme.parties_on(DAY), key=lambda p: (p.kind is PartyKind.SCHEME, p.party_id))


async def write_with_records(root: Path, records: Sequence[LineRecord]) -> None:
    """Every party's set, one write_file_set each (the scheme's last, with the pain.001)."""
    nets: dict[str, Money] = {}
    for party in parties_in_order(SCHEME):
        mine = sorted(
            (r for r in records if r.party_id == party.party_id), key=lambda r: r.sort_key
        )
        extra = {}
        if party.kind is PartyKind.SCHEME:
            owed = [(p, nets[p.party_id]) for p in parties_in_order(SCHEME) if p.party_id in nets]
            extra[PAYMENT_FILE] = payment_file(SCHEME, PERIOD, owed)
        info = await write_file_set(
            root, SCHEME, party, PERIOD, stream(mine), signer=KEY, extra_files=extra
        )
        nets[party.party_id] = info.net


async def write_with_rows(root: Path, rows: Sequence[list[bytes]], chunk: int = 3) -> None:
    """Every party's set from rows in one pass, as ClosePeriod writes them."""
    parties = parties_in_order(SCHEME)
    async with PeriodFileSets(
        root, SCHEME, PERIOD, parties, party_for=declared, signer=KEY
    ) as sets:
        for start in range(0, len(rows), chunk):
            await sets.add_rows(rows[start : start + chunk])
        nets = sets.nets()
        owed = [(p, nets[p.party_id]) for p in parties if p.kind is not PartyKind.SCHEME]
        extra = {PAYMENT_FILE: payment_file(SCHEME, PERIOD, owed)}
        scheme_id = SCHEME.scheme_party(DAY).party_id
        await sets.finish(parties, {scheme_id: extra})


# -- rendering ----------------------------------------------------------------------------

texts = st.text(st.sampled_from('ab,"\r\n;/%é'), max_size=6)
money = st.none() | st.integers(0, 9_999).map(lambda n: Money(n, GBP))
legs = st.lists(
    st.builds(
        Leg,
        leg_id=st.just("1"),
        agency_id=texts.filter(bool),
        network_id=texts,
        distance_m=st.integers(0, 99_999),
        standalone_fare=money,
        reference_fare=money,
    ),
    max_size=3,
).map(tuple)
instants = st.none() | st.datetimes(
    datetime(2026, 1, 1), datetime(2026, 12, 31), timezones=st.just(UTC)
)
records = st.builds(
    LineRecord,
    period_id=st.just(PERIOD),
    party_id=texts,
    account=texts,
    source=st.sampled_from(LineSource),
    source_id=texts,
    service_day=st.dates(date(2026, 1, 1), DAY),
    revision=st.integers(1, 99),
    amount_minor=st.integers(-9_999, 9_999),
    previous_minor=st.integers(-9_999, 9_999),
    target_minor=st.integers(-9_999, 9_999),
    currency=st.just(GBP),
    method=texts,
    method_rule=texts,
    fell_back_to_equal=st.booleans(),
    charge_minor=st.none() | st.integers(0, 9_999),
    fare_forgone_minor=st.none() | st.integers(0, 9_999),
    reimbursement_minor=st.none() | st.integers(0, 9_999),
    fee_minor=st.none() | st.integers(0, 9_999),
    funding_rule=texts,
    rider_category=texts,
    started_at=instants,
    legs=legs,
    weight=st.none() | st.fractions(0, 1),
    top_up_amount_minor=st.none() | st.integers(-9_999, 9_999),
    retailer=texts,
    benefit_amount_minor=st.none() | st.integers(-9_999, 9_999),
    funder=texts,
    provider=texts,
    entitlement_scheme=texts,
    category=texts,
    reward_rule=texts,
    line=st.integers(1, 10**7),
)


@given(record=records)
def test_csv_line_renders_the_bytes_it_always_rendered(record: LineRecord) -> None:
    assert csv_line(record) == reference_csv_line(record)
    assert csv_line(record, 5) == reference_csv_line(record, 5)


@given(record=records)
def test_a_line_from_its_rendered_parts_is_the_line_of_its_record(record: LineRecord) -> None:
    row = dict(zip(LINE_PARTS, row_of(record), strict=True))
    text = LINE_FORMAT % (
        record.line,
        quoted_field(record.period_id.encode()),
        quoted_field(row["party_id"]),
        quoted_field(row["account"]),
        row["source"],
        quoted_field(row["source_id"]),
        row["service_day"],
        row["revision"],
        record.amount_minor,
        record.previous_minor,
        record.target_minor,
        quoted_field(row["currency"]),
        row["basis_columns"],
        row["weight"],
        row["source_columns"],
    )
    assert text.decode() == reference_csv_line(record)


journey_legs = st.lists(
    st.builds(
        Leg,
        leg_id=st.sampled_from(["1", "2", "x"]),
        agency_id=st.sampled_from(["LUL", "BUSCO", "ELIZ", "NATRAIL"]),
        network_id=st.sampled_from(["BUS", "RAIL", "TUBE", ""]),
        distance_m=st.integers(0, 40_000),
        standalone_fare=money,
        reference_fare=money,
    ),
    max_size=3,
).map(tuple)


@settings(deadline=None)
@given(
    legs=journey_legs,
    charge=st.integers(0, 2_000),
    category=st.sampled_from(["ADULT", "SENIOR", "YOUTH", "A,B"]),
    at=st.none()
    | st.datetimes(datetime(2026, 11, 25), datetime(2026, 11, 26), timezones=st.just(UTC)),
    revision=st.integers(1, 9),
)
def test_columns_rendered_at_posting_are_those_of_every_line_of_the_journey(
    legs: tuple[Leg, ...], charge: int, category: str, at: datetime | None, revision: int
) -> None:
    basis = JourneyBasis(
        "j,1", revision, DAY, at, category, Money(charge if legs else 0, GBP), legs
    )
    settled = settle_journey(SCHEME, basis)
    columns = journey_columns(basis, settled)
    previous = {(p, a): Money(7, GBP) for p, a in [("operator:LUL", FARE_REVENUE)]}
    for record in journey_lines(PERIOD, basis, settled, previous):
        assert record_basis_columns(record) == columns
        assert record_source_columns(record) == ",,,,,,,"
        line = csv_line(record)
        assert f",{columns},{format_weight(record.weight)},,,,,,,,\n" in line
        assert line == reference_csv_line(record)


def test_a_top_ups_lines_have_none_of_the_basis_columns() -> None:
    records = [r for r in period_records(SCHEME, PERIOD) if r.source is LineSource.TOP_UP]
    assert records
    for record in records:
        assert record_basis_columns(record) == top_up_columns() == ",,0,,,,,,,,"


accounts = st.sampled_from(
    [FARE_REVENUE, CLEARING_FEES, TRAVELLER_CHARGES, CONCESSION_REIMBURSEMENTS, COMMISSION,
     COMMISSION_PAID, VOUCHER_REDEMPTIONS, VOUCHERS_FUNDED, REWARDS_FUNDED, TRAVELLER_FLOAT,
     "other"]
)  # fmt: skip


@given(
    lines=st.lists(
        st.tuples(accounts, st.integers(-500, 500), st.booleans(), st.sampled_from(LineSource)),
        max_size=30,
    )
)
def test_totals_of_sums_are_the_totals_counted_line_by_line(
    lines: list[tuple[str, int, bool, LineSource]],
) -> None:
    counted = SummaryTotals(PERIOD, GBP)
    sums: dict[str, int] = {}
    adjustments = adjustment_lines = 0
    sources = dict.fromkeys(LineSource, 0)
    for n, (account, amount, late, source) in enumerate(lines):
        day = DAY - timedelta(days=1) if late else DAY
        record = LineRecord(
            PERIOD, "p", account, source, f"s{n:03d}", day, 1, amount, 0, amount, GBP
        )
        counted.add(record)
        sums[account] = sums.get(account, 0) + amount
        adjustments += amount if late else 0
        adjustment_lines += late
        sources[source] += 1
    summed = SummaryTotals.of_sums(
        PERIOD,
        GBP,
        accounts=sums,
        adjustments_minor=adjustments,
        lines=len(lines),
        adjustment_lines=adjustment_lines,
        journeys=sources[LineSource.JOURNEY],
        top_ups=sources[LineSource.TOP_UP],
        redemptions=sources[LineSource.REDEMPTION],
        rewards=sources[LineSource.REWARD],
    )
    summed._last_source = counted._last_source  # only add() reads it
    assert summed == counted


# -- writing every party's set in one pass ------------------------------------------------


async def test_one_pass_over_rows_writes_the_bytes_of_one_set_at_a_time(tmp_path: Path) -> None:
    records = period_records(SCHEME, PERIOD)
    await write_with_records(tmp_path / "records", records)
    for chunk in (1, 4, 1000):
        root = tmp_path / f"rows-{chunk}"
        await write_with_rows(root, in_pass_order(records), chunk)
        assert read_tree(root) == read_tree(tmp_path / "records")


one_party_records = st.lists(
    records.map(
        lambda r: dataclasses.replace(
            r,
            party_id="operator:LUL",
            previous_minor=r.target_minor - r.amount_minor,
            amount_minor=r.amount_minor or 1,
        )
    ),
    max_size=25,
    unique_by=lambda r: r.sort_key,
)


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(lines=one_party_records)
def test_any_lines_come_out_of_one_pass_as_write_file_set_writes_them(
    tmp_path_factory: pytest.TempPathFactory, lines: list[LineRecord]
) -> None:
    lines = [dataclasses.replace(r, previous_minor=r.target_minor - r.amount_minor) for r in lines]
    party = SCHEME.party("operator:LUL", DAY)
    assert party is not None
    by_records = tmp_path_factory.mktemp("records")
    by_rows = tmp_path_factory.mktemp("rows")

    async def both() -> None:
        ordered = sorted(lines, key=lambda r: r.sort_key)
        await write_file_set(by_records, SCHEME, party, PERIOD, stream(ordered), signer=KEY)
        async with PeriodFileSets(
            by_rows, SCHEME, PERIOD, [party], party_for=declared, signer=KEY
        ) as sets:
            await sets.add_rows(in_pass_order(lines))
            await sets.finish([party], {})

    import asyncio  # noqa: PLC0415 - hypothesis drives this test synchronously

    asyncio.run(both())
    assert read_tree(by_rows) == read_tree(by_records)


def refused_rows() -> dict[str, tuple[list[list[bytes]], str]]:
    records = [r for r in period_records(SCHEME, PERIOD) if r.source is LineSource.JOURNEY]
    rows = in_pass_order(records)
    day = LINE_PARTS.index("service_day")
    currency = LINE_PARTS.index("currency")
    source = LINE_PARTS.index("source")
    late = [*rows[:3], [*rows[3][:day], b"2026-11-26", *rows[3][day + 1 :]]]
    bad_day = [*rows[:3], [*rows[3][:day], b"2026-02-30", *rows[3][day + 1 :]]]
    foreign = [*rows[:3], [*rows[3][:currency], b"EUR", *rows[3][currency + 1 :]]]
    unknown = [[*rows[0][:source], b"refund", *rows[0][source + 1 :]]]
    return {
        "unsorted": (rows[::-1], "sorted"),
        "twice": ([rows[0], rows[0]], "sorted"),
        "after the period": (late, "after the period"),
        "not a day": (bad_day, "not a day"),
        "foreign currency": (foreign, "currency EUR"),
        "unknown source": (unknown, "not one of journey, top_up, redemption, reward"),
    }


@pytest.mark.parametrize("case", sorted(refused_rows()))
async def test_a_bad_row_refuses_every_set_and_leaves_nothing(case: str, tmp_path: Path) -> None:
    rows, why = refused_rows()[case]
    parties = parties_in_order(SCHEME)
    with pytest.raises(SettlementFileError, match=why):
        async with PeriodFileSets(
            tmp_path, SCHEME, PERIOD, parties, party_for=declared, signer=KEY
        ) as sets:
            await sets.add_rows(rows)
            await sets.finish(parties, {})
    assert list((tmp_path / PERIOD).iterdir()) == []


async def test_entries_of_a_party_the_scheme_does_not_declare_refuse_the_period(
    tmp_path: Path,
) -> None:
    row = in_pass_order(period_records(SCHEME, PERIOD))[0]
    row[LINE_PARTS.index("party_id")] = b"operator:NOBODY"
    with pytest.raises(SettlementError, match="does not declare"):
        async with PeriodFileSets(
            tmp_path, SCHEME, PERIOD, parties_in_order(SCHEME), party_for=declared, signer=KEY
        ) as sets:
            await sets.add_rows([row])
    assert list((tmp_path / PERIOD).iterdir()) == []


async def test_rows_that_make_no_line_still_count_in_the_partys_net(tmp_path: Path) -> None:
    records = [r for r in period_records(SCHEME, PERIOD) if r.party_id == "operator:LUL"]
    rows = in_pass_order(records)
    no_basis = [*rows[0]]
    no_basis[LINE_PARTS.index("service_day")] = b""
    no_basis[LINE_PARTS.index("amount_minor")] = b"40"
    nothing = [*rows[1]]
    nothing[LINE_PARTS.index("amount_minor")] = b"0"
    party = SCHEME.party("operator:LUL", DAY)
    assert party is not None
    async with PeriodFileSets(
        tmp_path, SCHEME, PERIOD, [party], party_for=declared, signer=KEY
    ) as sets:
        await sets.add_rows([no_basis, nothing, *rows[2:]])
        nets = sets.nets()
        [info] = await sets.finish([party], {})
    assert info.line_count == len(rows) - 2
    kept = sum(r.amount_minor for r in sorted(records, key=lambda r: r.sort_key)[2:])
    assert info.net.amount_minor == kept
    assert nets["operator:LUL"].amount_minor == kept + 40
