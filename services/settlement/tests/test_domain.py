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
    ISSUER_ACCOUNT,
    ISSUER_PARTY,
    OPERATOR_ACCOUNT,
    JourneyRevision,
    LedgerEntry,
    net_positions,
    operator_party,
    postings_for,
    standing_of,
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
def test_postings_without_standing_charge_the_whole_charge(
    charge: int, legs: tuple[Leg, ...], rev: int, delta: int
) -> None:
    # Settlement saw no earlier revision: the ledger goes straight to the full charge.
    j = JourneyRevision("j1", rev, "2026-11-26", legs, Money(charge, "GBP"), Money(delta, "GBP"))
    entries = postings_for(j)
    assert total((e.amount for e in entries), "GBP") == Money(0, "GBP")
    assert len({e.key for e in entries}) == len(entries)
    if charge:
        issuer = [e for e in entries if e.party_id == ISSUER_PARTY]
        assert [e.amount for e in issuer] == [Money(-charge, "GBP")]
        shares = apportion(Money(charge, "GBP"), legs)
        assert {e.party_id for e in entries} == {ISSUER_PARTY} | {
            operator_party(s.operator_id) for s in shares if s.amount.amount_minor
        }
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
        ({"legs": (), "revision": 2, "charge": Money(5, "GBP")}, "NO_LEGS"),
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


def test_a_vanished_journey_is_valid_and_refunds_everything() -> None:
    rev1 = journey("j1", 1, 940, 940, ["LUL"])
    gone = journey("j1", 2, 0, -940, [])
    assert gone.legs == ()
    entries = postings_for(gone, standing=standing_of(postings_for(rev1)))
    assert [(e.party_id, e.account, e.amount.amount_minor) for e in entries] == [
        ("operator:LUL", "fare_revenue", -940),
        ("scheme:issuer", "traveller_charges", 940),
    ]
    assert {e.description for e in entries} == {
        "adjustment of journey j1 to rev 2",
        "adjustment of journey j1 to rev 2 (service day 2026-11-26)",
    }
    # A legless zero-charge revision with nothing standing posts nothing.
    assert postings_for(journey("j2", 1, 0, 0, [])) == []


def test_changed_operators_converge_to_a_split_of_the_final_charge() -> None:
    rev1 = postings_for(journey("j1", 1, 300, 300, ["bus"]))
    rev2 = postings_for(journey("j1", 2, 300, 0, ["bus", "tram"]), standing=standing_of(rev1))
    assert [(e.party_id, e.amount.amount_minor) for e in rev2] == [
        ("operator:bus", -150),
        ("operator:tram", 150),
    ]
    assert net_positions(rev1 + rev2) == {
        "operator:bus": Money(150, "GBP"),
        "operator:tram": Money(150, "GBP"),
        "scheme:issuer": Money(-300, "GBP"),
    }


def test_a_standing_in_another_currency_is_refused() -> None:
    standing = {(ISSUER_PARTY, ISSUER_ACCOUNT): Money(-100, "EUR")}
    with pytest.raises(InvalidJourneyError) as err:
        postings_for(journey("j1", 2, 100, 0, ["bus"]), standing=standing)
    assert err.value.code == "CURRENCY_MISMATCH"


# One revision of a journey: a charge >= 0 over some legs, or a vanished journey
# (charge 0, no legs).
revision_st = st.one_of(
    st.tuples(st.integers(min_value=0, max_value=10**7), legs_st),
    st.just((0, ())),
)
revision_seq_st = st.lists(revision_st, min_size=1, max_size=8)


def revisions_of(jid: str, specs: list[tuple[int, tuple[Leg, ...]]]) -> list[JourneyRevision]:
    """The revisions fares would publish for `specs`, with deltas against the previous one."""
    out: list[JourneyRevision] = []
    previous = 0
    for rev, (charge, legs) in enumerate(specs, start=1):
        out.append(
            JourneyRevision(
                jid, rev, "2026-11-26", legs, Money(charge, "GBP"), Money(charge - previous, "GBP")
            )
        )
        previous = charge
    return out


def expected_standing(charge: int, legs: tuple[Leg, ...]) -> dict[tuple[str, str], Money]:
    if not legs:
        return {}
    expected = {(ISSUER_PARTY, ISSUER_ACCOUNT): Money(-charge, "GBP")}
    for share in apportion(Money(charge, "GBP"), legs):
        expected[(operator_party(share.operator_id), OPERATOR_ACCOUNT)] = share.amount
    return expected


def nonzero(position: dict[tuple[str, str], Money]) -> dict[tuple[str, str], Money]:
    return {k: v for k, v in position.items() if v.amount_minor}


@given(specs=revision_seq_st)
def test_revisions_in_order_converge_to_the_split_of_the_final_charge(
    specs: list[tuple[int, tuple[Leg, ...]]],
) -> None:
    ledger: list[LedgerEntry] = []
    for j in revisions_of("j1", specs):
        entries = postings_for(j, standing=standing_of(ledger))
        # (a) every revision's entries balance, one per (party, account)
        assert total((e.amount for e in entries), "GBP") == Money(0, "GBP")
        assert len({e.key for e in entries}) == len(entries)
        assert all(e.amount.amount_minor != 0 for e in entries)
        assert {e.revision for e in entries} <= {j.revision}
        # Having seen every earlier revision, the issuer moves by exactly -delta.
        issuer = sum(e.amount.amount_minor for e in entries if e.party_id == ISSUER_PARTY)
        assert issuer == -j.delta.amount_minor
        ledger += entries
    # (b) the ledger stands where the final revision says, whatever came before
    charge, legs = specs[-1]
    assert nonzero(standing_of(ledger)) == nonzero(expected_standing(charge, legs))
    issuer_total = sum(e.amount.amount_minor for e in ledger if e.party_id == ISSUER_PARTY)
    assert issuer_total == -charge


@given(specs=revision_seq_st, data=st.data())
def test_missed_revisions_still_converge(
    specs: list[tuple[int, tuple[Leg, ...]]], data: st.DataObject
) -> None:
    revisions = revisions_of("j1", specs)
    seen = [r for r in revisions[:-1] if data.draw(st.booleans())] + [revisions[-1]]
    ledger: list[LedgerEntry] = []
    for j in seen:
        entries = postings_for(j, standing=standing_of(ledger))
        assert total((e.amount for e in entries), "GBP") == Money(0, "GBP")
        ledger += entries
    charge, legs = specs[-1]
    assert nonzero(standing_of(ledger)) == nonzero(expected_standing(charge, legs))


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
