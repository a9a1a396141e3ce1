"""Pure settlement rules: apportionment, postings, netting, statements (no servers)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clearway.money import Money, total
from services.settlement.domain.apportionment import Leg, apportion, operators_of
from services.settlement.domain.errors import (
    InvalidJourneyError,
    InvalidPeriodError,
    MixedCurrencyError,
)
from services.settlement.domain.ledger import (
    ISSUER_PARTY,
    JourneyRevision,
    LedgerEntry,
    net_positions,
    postings_for,
)
from services.settlement.domain.periods import parse_period_id, posting_period
from services.settlement.domain.statement import (
    build_statement,
    issue_statements,
    parse_statement,
    period_totals,
    render_statement,
    sha256_hex,
)

operator_ids = st.sampled_from(["bus", "tram", "rail", "ferry", "metro"])
legs_st = st.lists(operator_ids, min_size=1, max_size=8).map(
    lambda ops: tuple(Leg(f"leg{i}", op) for i, op in enumerate(ops))
)
amounts = st.integers(min_value=-(10**12), max_value=10**12)


def journey(jid: str, rev: int, charge: int, delta: int, ops: list[str]) -> JourneyRevision:
    return JourneyRevision(
        journey_id=jid,
        revision=rev,
        service_day="2026-11-26",
        legs=tuple(Leg(f"{jid}-{i}", op) for i, op in enumerate(ops)),
        charge=Money(charge, "GBP"),
        delta=Money(delta, "GBP"),
    )


@given(amount=amounts, legs=legs_st)
def test_shares_sum_exactly_to_the_charge(amount: int, legs: tuple[Leg, ...]) -> None:
    shares = apportion(Money(amount, "GBP"), legs)
    assert total((s.amount for s in shares), "GBP") == Money(amount, "GBP")
    assert [s.operator_id for s in shares] == operators_of(legs)
    # An equal split never differs by more than a penny between operators.
    values = [s.amount.amount_minor for s in shares]
    assert max(values) - min(values) <= 1


def test_equal_split_gives_remainder_pennies_to_first_operators() -> None:
    legs = (Leg("a", "bus"), Leg("b", "tram"), Leg("c", "bus"), Leg("d", "rail"))
    shares = apportion(Money(100, "GBP"), legs)
    assert [(s.operator_id, s.amount.amount_minor) for s in shares] == [
        ("bus", 34),
        ("tram", 33),
        ("rail", 33),
    ]


def test_refund_adjustment_splits_mirrored() -> None:
    legs = (Leg("a", "bus"), Leg("b", "tram"), Leg("c", "rail"))
    shares = apportion(Money(-100, "GBP"), legs)
    assert [s.amount.amount_minor for s in shares] == [-34, -33, -33]


def test_apportion_without_legs_is_rejected() -> None:
    with pytest.raises(InvalidJourneyError) as err:
        apportion(Money(100, "GBP"), ())
    assert err.value.code == "NO_LEGS"


@given(charge=amounts, legs=legs_st, rev=st.integers(min_value=2, max_value=9), delta=amounts)
def test_postings_of_a_revision_sum_to_zero(
    charge: int, legs: tuple[Leg, ...], rev: int, delta: int
) -> None:
    j = JourneyRevision("j1", rev, "2026-11-26", legs, Money(charge, "GBP"), Money(delta, "GBP"))
    entries = postings_for(j)
    assert total((e.amount for e in entries), "GBP") == Money(0, "GBP")
    if delta:
        issuer = [e for e in entries if e.party_id == ISSUER_PARTY]
        assert [e.amount for e in issuer] == [Money(-delta, "GBP")]
        assert len({e.key for e in entries}) == len(entries)
    else:
        assert entries == []


def test_revision_one_debits_issuer_and_credits_operators() -> None:
    entries = postings_for(journey("j1", 1, 250, 250, ["bus", "tram"]))
    assert [(e.party_id, e.account, e.amount.amount_minor) for e in entries] == [
        ("scheme:issuer", "traveller_charges", -250),
        ("operator:bus", "fare_revenue", 125),
        ("operator:tram", "fare_revenue", 125),
    ]
    assert {e.period_id for e in entries} == {"2026-11-26"}


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"revision": 0}, "INVALID_REVISION"),
        ({"journey_id": ""}, "MISSING_JOURNEY_ID"),
        ({"service_day": "26/11/2026"}, "INVALID_SERVICE_DAY"),
        ({"legs": ()}, "NO_LEGS"),
        ({"delta": Money(100, "EUR")}, "CURRENCY_MISMATCH"),
        ({"delta": Money(99, "GBP")}, "INVALID_DELTA"),
    ],
)
def test_invalid_revisions_are_rejected_with_a_code(kwargs: dict[str, object], code: str) -> None:
    fields: dict[str, object] = {
        "journey_id": "j1",
        "revision": 1,
        "service_day": "2026-11-26",
        "legs": (Leg("l", "bus"),),
        "charge": Money(100, "GBP"),
        "delta": Money(100, "GBP"),
    }
    fields.update(kwargs)
    with pytest.raises(InvalidJourneyError) as err:
        JourneyRevision(**fields)  # type: ignore[arg-type]
    assert err.value.code == code


journeys_st = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=4),
        st.integers(min_value=-5000, max_value=5000),
        legs_st,
    ),
    min_size=1,
    max_size=30,
)


def entries_from(specs: list[tuple[int, int, tuple[Leg, ...]]]) -> list[LedgerEntry]:
    entries: list[LedgerEntry] = []
    for i, (rev, delta, legs) in enumerate(specs):
        charge = delta if rev == 1 else delta + 100
        j = JourneyRevision(
            f"j{i}", rev, "2026-11-26", legs, Money(charge, "GBP"), Money(delta, "GBP")
        )
        entries.extend(postings_for(j))
    return entries


@given(specs=journeys_st)
def test_net_positions_of_a_period_sum_to_zero(
    specs: list[tuple[int, int, tuple[Leg, ...]]],
) -> None:
    positions = net_positions(entries_from(specs))
    assert total(positions.values(), "GBP") == Money(0, "GBP")
    assert list(positions) == sorted(positions)


@given(specs=journeys_st, seed=st.integers())
def test_statement_bytes_do_not_depend_on_entry_order(
    specs: list[tuple[int, int, tuple[Leg, ...]]], seed: int
) -> None:
    entries = entries_from(specs)
    shuffled = list(entries)
    random.Random(seed).shuffle(shuffled)
    for party in {e.party_id for e in entries}:
        a = build_statement("2026-11-26", party, entries)
        b = build_statement("2026-11-26", party, shuffled)
        assert render_statement(a) == render_statement(b)
        assert a.total_credits - a.total_debits == a.net
        assert a.net == net_positions(entries)[party]
        assert total((ln.amount for ln in a.lines), "GBP") == a.net


def test_statement_rendering_is_canonical_json_with_trailing_newline() -> None:
    entries = postings_for(journey("j1", 1, 301, 301, ["bus", "tram"]))
    body = render_statement(build_statement("2026-11-26", "operator:bus", entries))
    assert body.endswith(b"}\n")
    assert b'"net_minor": 151' in body
    assert b'"statement_id": "2026-11-26/operator:bus"' in body
    assert len(sha256_hex(body)) == 64


def test_statement_ignores_other_parties_and_periods() -> None:
    entries = postings_for(journey("j1", 1, 300, 300, ["bus", "tram"])) + postings_for(
        journey("j2", 1, 100, 100, ["bus"]), period_id="2026-11-27"
    )
    st_ = build_statement("2026-11-26", "operator:bus", entries)
    assert [ln.journey_id for ln in st_.lines] == ["j1"]
    assert st_.net == Money(150, "GBP")


def test_statement_with_mixed_currencies_is_refused() -> None:
    euro = LedgerEntry("2026-11-26", "j2", 1, "operator:bus", "fare_revenue", Money(5, "EUR"), "x")
    entries = [*postings_for(journey("j1", 1, 300, 300, ["bus"])), euro]
    with pytest.raises(MixedCurrencyError):
        build_statement("2026-11-26", "operator:bus", entries)


def test_late_adjustment_posts_into_the_next_open_period() -> None:
    assert posting_period("2026-11-26", set()) == "2026-11-26"
    assert posting_period("2026-11-26", {"2026-11-26"}) == "2026-11-27"
    assert posting_period("2026-11-30", {"2026-11-30", "2026-12-01"}) == "2026-12-02"


@pytest.mark.parametrize("bad", ["", "2026-13-01", "2026-02-30", "20261126", "2026-11-26x"])
def test_period_ids_must_be_real_days(bad: str) -> None:
    with pytest.raises(InvalidPeriodError):
        parse_period_id(bad)


@given(specs=journeys_st)
def test_issued_statements_round_trip_and_balance(
    specs: list[tuple[int, int, tuple[Leg, ...]]],
) -> None:
    issued = issue_statements("2026-11-26", entries_from(specs))
    for item in issued:
        assert parse_statement(item.body) == item.statement
        assert sha256_hex(item.body) == item.sha256
    if issued:
        charged, apportioned = period_totals([i.statement for i in issued], ISSUER_PARTY)
        assert charged == apportioned
