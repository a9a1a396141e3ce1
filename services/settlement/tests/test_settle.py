"""Settling journeys under a scheme: methods, fees, caps, transfers, late adjustments,
concession funding and top-up commission, hand-computed; invariants by hypothesis."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time
from fractions import Fraction
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clearway.money import Money
from clearway.scheme.model import (
    BankAccount,
    Dated,
    DefaultMethod,
    Fees,
    FundingRule,
    HoursWindow,
    Method,
    MethodRule,
    Party,
    PartyKind,
    Reimbursement,
    ReimbursementForm,
    Scheme,
    SettlementCalendar,
)
from services.settlement.domain.errors import InvalidJourneyError
from services.settlement.domain.ledger import (
    LedgerEntry,
    postings_for_settlement,
    standing_of,
)
from services.settlement.domain.periods import posting_period
from services.settlement.domain.settle import (
    CLEARING_FEES,
    COMMISSION,
    COMMISSION_PAID,
    CONCESSION_REIMBURSEMENTS,
    DEFAULT_RULE_ID,
    FARE_REVENUE,
    TOP_UPS_SOLD,
    TRAVELLER_CHARGES,
    TRAVELLER_FLOAT,
    InvalidTopUpError,
    JourneyBasis,
    Leg,
    Settlement,
    clearing_fee,
    commission_for_top_up,
    round_half_up,
    settle_journey,
    top_up_position,
)

GBP = "GBP"
SCHEME = "scheme:clearway"
BUS = "operator:townbus"  # agencies BUS and BUS2, local network
TRAM = "operator:metrotram"  # agency TRAM, regional network
RAIL = "operator:natrail"  # agency RAIL, national network
COUNTY = "funder:county"
SHOP = "retailer:cornershop"
DAY = date(2026, 11, 25)  # a Wednesday
SINCE = Dated(date(2026, 1, 1))


def p(amount: int) -> Money:
    return Money(amount, GBP)


def party(party_id: str, kind: PartyKind, agencies: frozenset[str] = frozenset()) -> Party:
    return Party(party_id, kind, party_id, BankAccount(), SINCE, agency_ids=agencies)


PARTIES = (
    party(SCHEME, PartyKind.SCHEME),
    party(BUS, PartyKind.OPERATOR, frozenset({"BUS", "BUS2"})),
    party(TRAM, PartyKind.OPERATOR, frozenset({"TRAM"})),
    party(RAIL, PartyKind.OPERATOR, frozenset({"RAIL"})),
    party(COUNTY, PartyKind.FUNDER),
    party(SHOP, PartyKind.RETAILER),
)
NO_FEE = Fees(SINCE)
FEE_150_BPS_1P = Fees(SINCE, clearing_fee_bps=150, clearing_fee_per_journey_minor=1)
FIXED_50_30_20 = MethodRule(
    "bus-tram-rail-fixed",
    Method.FIXED,
    SINCE,
    agency_ids=frozenset({"BUS", "TRAM", "RAIL"}),
    percentages=(("BUS", Fraction(50)), ("TRAM", Fraction(30)), ("RAIL", Fraction(20))),
)
# England's concessionary scheme: free on buses 09:30-23:00 on weekdays, all day at weekends.
SENIOR_HOURS = (
    HoursWindow(frozenset(range(5)), time(9, 30), time(23, 0)),
    HoursWindow(frozenset({5, 6}), time(0, 0), None),
)


def senior_bus(reimbursement: Reimbursement) -> FundingRule:
    return FundingRule(
        "county-senior-bus",
        COUNTY,
        frozenset({"SENIOR"}),
        frozenset({"local"}),
        SENIOR_HOURS,
        reimbursement,
        SINCE,
    )


def make_scheme(
    default: Method = Method.EQUAL,
    rules: tuple[MethodRule, ...] = (),
    fees: tuple[Fees, ...] = (NO_FEE,),
    funding: tuple[FundingRule, ...] = (),
) -> Scheme:
    return Scheme(
        scheme_id="clearway",
        name="Clearway",
        currency=GBP,
        calendar=SettlementCalendar("Europe/London", time(4, 30)),
        parties=PARTIES,
        fees=fees,
        default_methods=(DefaultMethod(default, SINCE),),
        method_rules=rules,
        funding_rules=funding,
    )


# One journey: a town bus (3 km, 2.50 alone), a regional tram (5 km, 3.80 alone) and
# national rail (12 km, 10.90 alone). Alone they cost 17.20; the through fare is 12.34.
BUS_LEG = Leg("l1", "BUS", "local", 3_000, p(250), p(250))
TRAM_LEG = Leg("l2", "TRAM", "regional", 5_000, p(380), p(380))
RAIL_LEG = Leg("l3", "RAIL", "national", 12_000, p(1090), p(1090))
THREE_LEGS = (BUS_LEG, TRAM_LEG, RAIL_LEG)


def basis(
    charge: int,
    legs: tuple[Leg, ...] = THREE_LEGS,
    *,
    revision: int = 1,
    category: str = "ADULT",
    started_at: datetime | None = datetime(2026, 11, 25, 8, 0, tzinfo=UTC),
    day: date = DAY,
    journey_id: str = "j1",
) -> JourneyBasis:
    return JourneyBasis(journey_id, revision, day, started_at, category, p(charge), legs)


def gross(s: Settlement) -> list[int]:
    return [share.gross.amount_minor for share in s.shares]


def fees(s: Settlement) -> list[int]:
    return [share.fee.amount_minor for share in s.shares]


def nets(s: Settlement) -> list[int]:
    return [share.net.amount_minor for share in s.shares]


def position_sum(position: Mapping[tuple[str, str], Money]) -> int:
    return sum(m.amount_minor for m in position.values())


# --- each method on one journey, without a fee ------------------------------------------


def test_distance_share_splits_the_charge_by_km_on_each_operator() -> None:
    # 1234 x 3/20 = 185.1, x 5/20 = 308.5, x 12/20 = 740.4 -> 185 + 308 + 740 = 1233;
    # the last penny to the largest remainder (tram, .5) -> 185 / 309 / 740.
    s = settle_journey(make_scheme(Method.DISTANCE), basis(1234))
    assert [sh.party_id for sh in s.shares] == [BUS, TRAM, RAIL]
    assert gross(s) == [185, 309, 740]
    assert [sh.weight for sh in s.shares] == [3000, 5000, 12000]
    assert [sh.proportion for sh in s.shares] == [Fraction(3, 20), Fraction(1, 4), Fraction(3, 5)]
    assert (s.method, s.method_rule_id, s.fell_back_to_equal) == (
        Method.DISTANCE,
        DEFAULT_RULE_ID,
        False,
    )
    assert dict(s.position) == {
        (SCHEME, TRAVELLER_CHARGES): p(-1234),
        (BUS, FARE_REVENUE): p(185),
        (TRAM, FARE_REVENUE): p(309),
        (RAIL, FARE_REVENUE): p(740),
    }


def test_standalone_fare_share_splits_the_charge_by_each_leg_priced_alone() -> None:
    # weights 250 : 380 : 1090 (sum 1720). 1234 x 250/1720 = 179.36, x 380/1720 = 272.63,
    # x 1090/1720 = 782.01 -> 179 + 272 + 782 = 1233; the penny to tram (.63) -> 179/273/782.
    s = settle_journey(make_scheme(Method.STANDALONE_FARE), basis(1234))
    assert gross(s) == [179, 273, 782]
    assert [sh.weight for sh in s.shares] == [250, 380, 1090]


def test_equal_split_gives_the_leftover_penny_to_the_first_operator() -> None:
    # 1234 / 3 = 411.33 each -> 411 x 3 = 1233; equal remainders: the penny to the bus.
    s = settle_journey(make_scheme(Method.EQUAL), basis(1234))
    assert gross(s) == [412, 411, 411]


def test_fixed_percentages_for_the_operator_set_split_50_30_20() -> None:
    # 1234 x 50% = 617, x 30% = 370.2, x 20% = 246.8 -> 617 + 370 + 246 = 1233;
    # the penny to rail (.8) -> 617 / 370 / 247.
    s = settle_journey(make_scheme(Method.DISTANCE, rules=(FIXED_50_30_20,)), basis(1234))
    assert gross(s) == [617, 370, 247]
    assert (s.method, s.method_rule_id) == (Method.FIXED, "bus-tram-rail-fixed")
    assert [sh.weight for sh in s.shares] == [50, 30, 20]


# --- each method with a fee of 150 bps + 1p ----------------------------------------------
# fee = half_up(1234 x 150 / 10000 = 18.51) + 1 = 19 + 1 = 20; revenue 1234, nets 1214.
# The fee is split in proportion to the gross shares (largest remainder, 20 x g / 1234).


@pytest.mark.parametrize(
    ("method", "rules", "expected_gross", "expected_fees"),
    [
        # 20 x 185/1234 = 2.998, x 309/1234 = 5.008, x 740/1234 = 11.993 -> 2+5+11 = 18;
        # two pennies to bus (.998) and rail (.993) -> 3 / 5 / 12.
        (Method.DISTANCE, (), [185, 309, 740], [3, 5, 12]),
        # 20 x 179/1234 = 2.901, x 273/1234 = 4.425, x 782/1234 = 12.674 -> 2+4+12 = 18;
        # two pennies to bus (.901) and rail (.674) -> 3 / 4 / 13.
        (Method.STANDALONE_FARE, (), [179, 273, 782], [3, 4, 13]),
        # 20 x 412/1234 = 6.677, x 411/1234 = 6.661 (twice) -> 6+6+6 = 18; a penny to the
        # bus (.677), one to the tram (.661, tied with rail, appears first) -> 7 / 7 / 6.
        (Method.EQUAL, (), [412, 411, 411], [7, 7, 6]),
        # 20 x 617/1234 = 10 exactly, x 370/1234 = 5.997, x 247/1234 = 4.003 -> 10+5+4 = 19;
        # the penny to tram (.997) -> 10 / 6 / 4.
        (Method.DISTANCE, (FIXED_50_30_20,), [617, 370, 247], [10, 6, 4]),
    ],
)
def test_each_method_with_a_clearing_fee_of_150_bps_plus_1p(
    method: Method,
    rules: tuple[MethodRule, ...],
    expected_gross: list[int],
    expected_fees: list[int],
) -> None:
    scheme = make_scheme(method, rules, fees=(FEE_150_BPS_1P,))
    s = settle_journey(scheme, basis(1234))
    assert s.fee == p(20)
    assert gross(s) == expected_gross
    assert fees(s) == expected_fees
    assert nets(s) == [g - f for g, f in zip(expected_gross, expected_fees, strict=True)]
    assert sum(nets(s)) + s.fee.amount_minor == 1234
    assert s.position[(SCHEME, CLEARING_FEES)] == p(20)
    assert s.position[(BUS, CLEARING_FEES)] == p(-expected_fees[0])
    assert position_sum(s.position) == 0


def test_fee_part_never_exceeds_gross_share_even_where_largest_remainder_is_not_monotone() -> None:
    # Revenue 11, fee 10 (10p per journey), weights 6:6:2. By the weights the revenue splits
    # 5/5/1 but the fee 4/4/2 (the Alabama paradox): rail would net -1. Splitting the fee by
    # the gross shares instead: 10 x 5/11 = 4.55 (twice), 10 x 1/11 = 0.91 -> 4+4+0 = 8;
    # two pennies to rail (.91) and bus (.55, tied with tram, first) -> 5 / 4 / 1.
    legs = (
        Leg("a", "BUS", "local", 6_000),
        Leg("b", "TRAM", "regional", 6_000),
        Leg("c", "RAIL", "national", 2_000),
    )
    scheme = make_scheme(Method.DISTANCE, fees=(Fees(SINCE, clearing_fee_per_journey_minor=10),))
    s = settle_journey(scheme, basis(11, legs))
    assert gross(s) == [5, 5, 1]
    assert fees(s) == [5, 4, 1]
    assert nets(s) == [0, 1, 0]


# --- caps and transfer discounts ---------------------------------------------------------


def test_capped_day_saving_is_borne_by_the_same_weights() -> None:
    # The cap leaves 5.00 of 17.20 to pay. Standalone weights 250 : 380 : 1090:
    # 500 x 250/1720 = 72.67, x 380/1720 = 110.47, x 1090/1720 = 316.86 -> 72+110+316 = 498;
    # pennies to rail (.86) and bus (.67) -> 73 / 110 / 317. The saving 1220 is borne
    # 177 / 270 / 773 (250-73, 380-110, 1090-317).
    s = settle_journey(make_scheme(Method.STANDALONE_FARE), basis(500))
    assert gross(s) == [73, 110, 317]
    standalone = [250, 380, 1090]
    assert [a - g for a, g in zip(standalone, gross(s), strict=True)] == [177, 270, 773]


def test_transfer_discount_is_borne_by_the_same_weights() -> None:
    # Bus then tram: 2.50 + 3.80 = 6.30 alone, 1.00 off for the transfer -> charge 5.30.
    # 530 x 250/630 = 210.32, x 380/630 = 319.68 -> 210 + 319 = 529; the penny to tram -> 210
    # / 320: the discount is borne 40 / 60.
    s = settle_journey(make_scheme(Method.STANDALONE_FARE), basis(530, (BUS_LEG, TRAM_LEG)))
    assert gross(s) == [210, 320]
    assert s.position == {
        (SCHEME, TRAVELLER_CHARGES): p(-530),
        (BUS, FARE_REVENUE): p(210),
        (TRAM, FARE_REVENUE): p(320),
    }


# --- a late adjustment across a closed period --------------------------------------------


def test_late_adjustment_posts_the_difference_into_the_next_open_period() -> None:
    # Fees: 150 bps + 1p until 2026-11-26, then 200 bps; the journey of 2026-11-25 is
    # settled under the first in both revisions.
    # Rev 1: distance 3/5/12 km, charge 1234: gross 185/309/740, fee 20 split 3/5/12.
    # Rev 2 (the rail exit turns up late: 16 km, charge 15.00), weights 3000:5000:16000:
    #   1500 x 3/24 = 187.5, x 5/24 = 312.5, x 16/24 = 1000 -> 1499; the penny to the bus
    #   (.5, tied with tram, first) -> 188 / 312 / 1000.
    #   fee = half_up(1500 x 150 / 10000 = 22.5) + 1 = 23 + 1 = 24;
    #   24 x 188/1500 = 3.008, x 312/1500 = 4.992, x 1000/1500 = 16 -> 23; the penny to the
    #   tram -> 3 / 5 / 16.
    # Differences: charges -1500 - -1234 = -266; scheme fees 24 - 20 = +4; bus +3 (fee 0);
    # tram +3 (fee 0); rail +260 revenue, -4 fee. Sum: -266 + 4 + 3 + 3 + 260 - 4 = 0.
    scheme = make_scheme(
        Method.DISTANCE,
        fees=(
            Fees(Dated(date(2026, 1, 1), date(2026, 11, 26)), 150, 1),
            Fees(Dated(date(2026, 11, 26)), 200, 0),
        ),
    )
    rev1 = settle_journey(scheme, basis(1234))
    posted1 = postings_for_settlement("j1", 1, "2026-11-25", rev1, {})
    assert sum(e.amount.amount_minor for e in posted1) == 0
    late_rail = Leg("l3", "RAIL", "national", 16_000, p(1090), p(1090))
    rev2 = settle_journey(scheme, basis(1500, (BUS_LEG, TRAM_LEG, late_rail), revision=2))
    assert rev2.fee == p(24)
    period = posting_period("2026-11-25", closed={"2026-11-25"})
    posted2 = postings_for_settlement("j1", 2, period, rev2, standing_of(posted1))
    assert [(e.period_id, e.party_id, e.account, e.amount.amount_minor) for e in posted2] == [
        ("2026-11-26", SCHEME, TRAVELLER_CHARGES, -266),
        ("2026-11-26", SCHEME, CLEARING_FEES, 4),
        ("2026-11-26", BUS, FARE_REVENUE, 3),
        ("2026-11-26", TRAM, FARE_REVENUE, 3),
        ("2026-11-26", RAIL, FARE_REVENUE, 260),
        ("2026-11-26", RAIL, CLEARING_FEES, -4),
    ]
    assert all(e.revision == 2 and e.journey_id == "j1" for e in posted2)
    assert posted2[0].description == "adjustment: charge of journey j1 rev 2"
    assert posted1[1].description == "clearing fee of journey j1 rev 1"
    assert posted1[2].description == "distance share of journey j1 rev 1"
    assert nonzero(standing_of([*posted1, *posted2])) == dict(rev2.position)


def nonzero(position: dict[tuple[str, str], Money]) -> dict[tuple[str, str], Money]:
    return {k: v for k, v in position.items() if v.amount_minor}


def test_withdrawn_journey_refunds_everything_that_stood() -> None:
    scheme = make_scheme(Method.DISTANCE, fees=(FEE_150_BPS_1P,))
    posted1 = postings_for_settlement("j1", 1, None, settle_journey(scheme, basis(1234)))
    gone = settle_journey(scheme, basis(0, (), revision=2))
    assert (gone.method, gone.method_rule_id, dict(gone.position)) == (None, None, {})
    posted2 = postings_for_settlement("j1", 2, None, gone, standing_of(posted1))
    assert {(e.party_id, e.account): e.amount for e in posted2} == {
        (e.party_id, e.account): -e.amount for e in posted1
    }
    assert posted1[0].period_id == "2026-11-25"


def test_postings_refuse_a_settlement_of_another_revision_or_currency() -> None:
    s = settle_journey(make_scheme(), basis(100))
    with pytest.raises(InvalidJourneyError) as err:
        postings_for_settlement("j1", 2, None, s)
    assert err.value.code == "JOURNEY_MISMATCH"
    with pytest.raises(InvalidJourneyError) as err:
        postings_for_settlement("j1", 1, None, s, {(SCHEME, TRAVELLER_CHARGES): Money(5, "EUR")})
    assert err.value.code == "CURRENCY_MISMATCH"


# --- council-funded concession travel ----------------------------------------------------

SENIOR_BUS_LEG = Leg("s1", "BUS", "local", 4_000, standalone_fare=p(0), reference_fare=p(270))
PERCENT_55 = Reimbursement(ReimbursementForm.PERCENT_OF_FARE_FORGONE, percent=Fraction(55))
NBNW = Reimbursement(
    ReimbursementForm.NO_BETTER_NO_WORSE, factor=Fraction(48, 100), additional_per_journey_minor=9
)
# July: London is on BST (UTC+1), so 10:00 local is 09:00 UTC.
WEDNESDAY_10_00 = datetime(2026, 7, 15, 9, 0, tzinfo=UTC)
WEDNESDAY_08_00 = datetime(2026, 7, 15, 7, 0, tzinfo=UTC)
SATURDAY_07_00 = datetime(2026, 7, 18, 6, 0, tzinfo=UTC)


def senior_journey(charge: int, started_at: datetime, category: str = "SENIOR") -> JourneyBasis:
    return basis(
        charge,
        (SENIOR_BUS_LEG,),
        category=category,
        started_at=started_at,
        day=started_at.date(),
    )


def test_senior_bus_wednesday_10_00_is_reimbursed_55_percent_of_the_adult_fare() -> None:
    # forgone 270 (adult fare; the senior paid 0); 270 x 55% = 148.5 -> half up 149.
    # revenue 0 + 149; fee = half_up(149 x 1.5% = 2.235) + 1 = 3; the bus nets 146.
    scheme = make_scheme(fees=(FEE_150_BPS_1P,), funding=(senior_bus(PERCENT_55),))
    s = settle_journey(scheme, senior_journey(0, WEDNESDAY_10_00))
    assert (s.funding_rule_id, s.funder_id) == ("county-senior-bus", COUNTY)
    assert (s.fare_forgone, s.reimbursement, s.revenue, s.fee) == (p(270), p(149), p(149), p(3))
    assert nets(s) == [146]
    assert dict(s.position) == {
        (SCHEME, CLEARING_FEES): p(3),
        (BUS, FARE_REVENUE): p(149),
        (BUS, CLEARING_FEES): p(-3),
        (COUNTY, CONCESSION_REIMBURSEMENTS): p(-149),
    }


def test_senior_bus_wednesday_10_00_no_better_no_worse_off() -> None:
    # 270 x 0.48 = 129.6 -> 130; + 9 per journey = 139. fee = half_up(2.085) + 1 = 3.
    scheme = make_scheme(fees=(FEE_150_BPS_1P,), funding=(senior_bus(NBNW),))
    s = settle_journey(scheme, senior_journey(0, WEDNESDAY_10_00))
    assert (s.reimbursement, s.fee, nets(s)) == (p(139), p(3), [136])
    assert s.position[(COUNTY, CONCESSION_REIMBURSEMENTS)] == p(-139)
    assert position_sum(s.position) == 0


def test_senior_bus_wednesday_08_00_is_not_funded() -> None:
    # Before 09:30 on a weekday the senior pays the adult fare; the county pays nothing.
    scheme = make_scheme(funding=(senior_bus(PERCENT_55),))
    s = settle_journey(scheme, senior_journey(270, WEDNESDAY_08_00))
    assert (s.funding_rule_id, s.reimbursement, s.fare_forgone) == (None, p(0), p(0))
    assert dict(s.position) == {(SCHEME, TRAVELLER_CHARGES): p(-270), (BUS, FARE_REVENUE): p(270)}


def test_senior_bus_saturday_07_00_is_funded_all_day() -> None:
    scheme = make_scheme(funding=(senior_bus(PERCENT_55),))
    s = settle_journey(scheme, senior_journey(0, SATURDAY_07_00))
    assert (s.funding_rule_id, s.reimbursement) == ("county-senior-bus", p(149))


@pytest.mark.parametrize(
    ("utc", "funded"),
    [
        (datetime(2026, 7, 15, 8, 29, tzinfo=UTC), False),  # 09:29 BST
        (datetime(2026, 7, 15, 8, 30, tzinfo=UTC), True),  # 09:30 BST
        (datetime(2026, 7, 15, 21, 59, tzinfo=UTC), True),  # 22:59 BST
        (datetime(2026, 7, 15, 22, 0, tzinfo=UTC), False),  # 23:00 BST
        (datetime(2026, 11, 25, 9, 30, tzinfo=UTC), True),  # 09:30 GMT
    ],
)
def test_funding_hours_are_judged_in_the_schemes_timezone(utc: datetime, funded: bool) -> None:
    scheme = make_scheme(funding=(senior_bus(PERCENT_55),))
    s = settle_journey(scheme, senior_journey(0, utc))
    assert (s.funding_rule_id is not None) is funded


def test_funding_needs_the_category_and_every_leg_on_a_funded_network() -> None:
    scheme = make_scheme(funding=(senior_bus(PERCENT_55),))
    adult = settle_journey(scheme, senior_journey(0, WEDNESDAY_10_00, category="ADULT"))
    tram = Leg("t", "TRAM", "regional", 1_000, p(0), p(300))
    on_tram = settle_journey(
        scheme,
        basis(0, (SENIOR_BUS_LEG, tram), category="SENIOR", started_at=WEDNESDAY_10_00),
    )
    no_time = settle_journey(
        scheme, basis(0, (SENIOR_BUS_LEG,), category="SENIOR", started_at=None)
    )
    assert adult.funding_rule_id is on_tram.funding_rule_id is no_time.funding_rule_id is None


def test_fare_forgone_falls_back_to_the_standalone_fare_and_deducts_what_was_charged() -> None:
    # Half-fare concession: reference 270 on one leg, a leg with only a standalone fare of
    # 100; the traveller paid 50. Forgone = 270 + 100 - 50 = 320; 55% = 176.
    legs = (SENIOR_BUS_LEG, Leg("s2", "BUS2", "local", 1_000, standalone_fare=p(100)))
    scheme = make_scheme(funding=(senior_bus(PERCENT_55),))
    s = settle_journey(
        scheme,
        basis(50, legs, category="SENIOR", started_at=WEDNESDAY_10_00, day=date(2026, 7, 15)),
    )
    assert (s.fare_forgone, s.reimbursement, s.revenue) == (p(320), p(176), p(226))
    assert [sh.party_id for sh in s.shares] == [BUS]  # BUS and BUS2: one operator


# --- rounding, tie-break, method choice, refusals ----------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Fraction(5, 2), 3),
        (Fraction(-5, 2), -3),
        (Fraction(9, 2), 5),
        (Fraction(249, 100), 2),
        (Fraction(251, 100), 3),
        (Fraction(7, 3), 2),
        (0, 0),
        (7, 7),
    ],
)
def test_round_half_up_rounds_halves_away_from_zero(value: Fraction | int, expected: int) -> None:
    assert round_half_up(value) == expected


def test_fee_of_exactly_half_a_penny_rounds_up() -> None:
    # 2500 x 10 bps = 2.5 -> 3 (banker's rounding would give 2).
    scheme = make_scheme(fees=(Fees(SINCE, clearing_fee_bps=10),))
    assert clearing_fee(scheme, DAY, p(2500)) == p(3)
    assert settle_journey(scheme, basis(2500)).fee == p(3)


def test_fee_never_exceeds_the_revenue_and_is_zero_without_revenue() -> None:
    scheme = make_scheme(fees=(FEE_150_BPS_1P,))
    assert clearing_fee(scheme, DAY, p(1)) == p(1)  # half_up(0.015) + 1 = 1
    assert clearing_fee(scheme, DAY, p(0)) == p(0)
    s = settle_journey(scheme, basis(0))
    assert (s.fee, dict(s.position)) == (p(0), {})


def test_tie_break_gives_the_penny_to_the_operator_of_the_first_leg() -> None:
    # 100 / 3 = 33.33 each, equal remainders: 34 / 33 / 33, the 34 to the first to appear.
    s = settle_journey(make_scheme(Method.EQUAL), basis(100))
    assert [(sh.party_id, sh.gross.amount_minor) for sh in s.shares] == [
        (BUS, 34),
        (TRAM, 33),
        (RAIL, 33),
    ]
    reversed_legs = settle_journey(make_scheme(Method.EQUAL), basis(100, THREE_LEGS[::-1]))
    assert [(sh.party_id, sh.gross.amount_minor) for sh in reversed_legs.shares] == [
        (RAIL, 34),
        (TRAM, 33),
        (BUS, 33),
    ]


def test_operator_set_rule_beats_network_rule_and_a_subset_matches_neither() -> None:
    local_equal = MethodRule("local-equal", Method.EQUAL, SINCE, network_id="local")
    scheme = make_scheme(Method.DISTANCE, rules=(local_equal, FIXED_50_30_20))
    assert settle_journey(scheme, basis(100)).method_rule_id == "bus-tram-rail-fixed"
    two = settle_journey(scheme, basis(100, (BUS_LEG, TRAM_LEG)))
    assert (two.method, two.method_rule_id) == (Method.DISTANCE, DEFAULT_RULE_ID)
    bus2 = Leg("l9", "BUS2", "local", 0)
    local = settle_journey(scheme, basis(100, (BUS_LEG, bus2)))
    assert (local.method_rule_id, gross(local)) == ("local-equal", [100])


def test_fixed_percentages_in_thirds_use_a_common_denominator() -> None:
    thirds = MethodRule(
        "thirds",
        Method.FIXED,
        SINCE,
        agency_ids=frozenset({"BUS", "TRAM", "RAIL"}),
        percentages=(
            ("BUS", Fraction(100, 3)),
            ("TRAM", Fraction(100, 3)),
            ("RAIL", Fraction(100, 3)),
        ),
    )
    s = settle_journey(make_scheme(rules=(thirds,)), basis(100))
    assert [sh.weight for sh in s.shares] == [100, 100, 100]
    assert gross(s) == [34, 33, 33]


def test_all_zero_weights_fall_back_to_equal_and_say_so() -> None:
    legs = (Leg("a", "BUS"), Leg("b", "RAIL"))
    s = settle_journey(make_scheme(Method.DISTANCE), basis(101, legs))
    assert (s.method, s.fell_back_to_equal, gross(s)) == (Method.DISTANCE, True, [51, 50])


def test_unmapped_agency_and_foreign_currency_are_refused() -> None:
    with pytest.raises(InvalidJourneyError) as err:
        settle_journey(make_scheme(), basis(100, (Leg("x", "FERRY"),)))
    assert err.value.code == "UNMAPPED_OPERATOR"
    eur = JourneyBasis("j1", 1, DAY, None, "ADULT", Money(100, "EUR"), (Leg("x", "BUS"),))
    with pytest.raises(InvalidJourneyError) as err:
        settle_journey(make_scheme(), eur)
    assert err.value.code == "CURRENCY_MISMATCH"


@pytest.mark.parametrize(
    ("build", "code"),
    [
        (lambda: basis(100, ()), "NO_LEGS"),
        (lambda: basis(100, revision=0), "INVALID_REVISION"),
        (lambda: basis(100, started_at=datetime(2026, 11, 25, 8, 0)), "INVALID_STARTED_AT"),
        (lambda: Leg("x", ""), "MISSING_OPERATOR"),
        (lambda: Leg("x", "BUS", distance_m=-1), "INVALID_LEG"),
        (
            lambda: basis(100, (Leg("x", "BUS", standalone_fare=Money(1, "EUR")),)),
            "CURRENCY_MISMATCH",
        ),
    ],
)
def test_invalid_journeys_are_refused_with_a_code(build: Callable[[], object], code: str) -> None:
    with pytest.raises(InvalidJourneyError) as err:
        build()
    assert err.value.code == code


# --- top-ups -----------------------------------------------------------------------------


def test_top_up_commission_and_position() -> None:
    # 75 bps of 10.00 = 7.5p -> 8p; the retailer owes 10.00 and earns 8p.
    scheme = make_scheme(fees=(Fees(SINCE, retailer_commission_bps=75),))
    assert commission_for_top_up(scheme, DAY, p(1000)) == p(8)
    assert commission_for_top_up(scheme, DAY, p(-1000)) == p(-8)
    position = top_up_position(scheme, DAY, SHOP, p(1000))
    assert position == {
        (SHOP, TOP_UPS_SOLD): p(-1000),
        (SHOP, COMMISSION): p(8),
        (SCHEME, TRAVELLER_FLOAT): p(1000),
        (SCHEME, COMMISSION_PAID): p(-8),
    }
    assert position_sum(position) == 0


def test_top_up_refuses_unknown_retailer_and_foreign_currency() -> None:
    scheme = make_scheme()
    with pytest.raises(InvalidTopUpError) as err:
        top_up_position(scheme, DAY, BUS, p(1000))
    assert err.value.code == "UNKNOWN_RETAILER"
    with pytest.raises(InvalidTopUpError) as err:
        top_up_position(scheme, DAY, SHOP, Money(1000, "EUR"))
    assert err.value.code == "CURRENCY_MISMATCH"


# --- properties --------------------------------------------------------------------------

AGENCIES = ["BUS", "BUS2", "TRAM", "RAIL"]
NETWORKS = ["local", "regional", "national", ""]
fares = st.none() | st.integers(0, 5_000).map(p)
legs_st = st.lists(
    st.builds(
        Leg,
        leg_id=st.text("abc", min_size=1, max_size=3),
        agency_id=st.sampled_from(AGENCIES),
        network_id=st.sampled_from(NETWORKS),
        distance_m=st.integers(0, 60_000),
        standalone_fare=fares,
        reference_fare=fares,
    ),
    min_size=1,
    max_size=6,
).map(tuple)


@st.composite
def fixed_rules(draw: st.DrawFn) -> MethodRule:
    agencies = draw(st.lists(st.sampled_from(AGENCIES), min_size=1, max_size=4, unique=True))
    n = len(agencies) - 1
    cuts = sorted(draw(st.lists(st.integers(0, 300), min_size=n, max_size=n)))
    bounds = [0, *cuts, 300]
    parts = [Fraction(b - a, 3) for a, b in pairwise(bounds)]
    return MethodRule(
        "fixed",
        Method.FIXED,
        SINCE,
        agency_ids=frozenset(agencies),
        percentages=tuple(zip(agencies, parts, strict=True)),
    )


reimbursements = st.builds(
    Reimbursement,
    form=st.sampled_from(ReimbursementForm),
    percent=st.fractions(0, 100, max_denominator=8),
    factor=st.fractions(0, 2, max_denominator=100),
    additional_per_journey_minor=st.integers(0, 100),
)


@st.composite
def schemes(draw: st.DrawFn) -> Scheme:
    rules: list[MethodRule] = draw(st.lists(fixed_rules(), max_size=2))
    if draw(st.booleans()):
        network = draw(st.sampled_from(NETWORKS[:3]))
        method = draw(st.sampled_from([Method.DISTANCE, Method.STANDALONE_FARE, Method.EQUAL]))
        rules.append(MethodRule("net", method, SINCE, network_id=network))
    fee = Fees(
        SINCE,
        clearing_fee_bps=draw(st.integers(0, 3_000)),
        clearing_fee_per_journey_minor=draw(st.integers(0, 50)),
    )
    funding = FundingRule(
        "county-senior",
        COUNTY,
        frozenset({"SENIOR"}),
        draw(st.just(frozenset(NETWORKS)) | st.frozensets(st.sampled_from(NETWORKS), min_size=1)),
        SENIOR_HOURS,
        draw(reimbursements),
        SINCE,
    )
    return make_scheme(draw(st.sampled_from(Method)), tuple(rules), (fee,), (funding,))


times = st.datetimes(datetime(2026, 1, 1), datetime(2026, 12, 31), timezones=st.just(UTC))


@st.composite
def bases(
    draw: st.DrawFn, revision: int = 1, charges: st.SearchStrategy[int] | None = None
) -> JourneyBasis:
    legs = draw(legs_st)
    charge = draw(charges if charges is not None else st.integers(0, 30_000))
    return basis(
        charge,
        legs,
        revision=revision,
        category=draw(st.sampled_from(["SENIOR", "SENIOR", "ADULT"])),
        started_at=None if draw(st.integers(0, 9)) == 0 else draw(times),
    )


@settings(deadline=None)
@given(scheme=schemes(), b=bases(charges=st.integers(-30_000, 30_000)))
def test_position_always_sums_to_zero_and_nets_plus_fee_make_the_revenue(
    scheme: Scheme, b: JourneyBasis
) -> None:
    s = settle_journey(scheme, b)
    assert position_sum(s.position) == 0
    assert all(amount.amount_minor != 0 for amount in s.position.values())
    assert sum(nets(s)) + s.fee.amount_minor == s.revenue.amount_minor
    assert sum(gross(s)) == s.revenue.amount_minor
    assert s.revenue == s.charge + s.reimbursement
    assert sum(sh.proportion for sh in s.shares) == 1


@settings(deadline=None)
@given(scheme=schemes(), b=bases())
def test_every_share_is_non_negative_when_the_charge_is(scheme: Scheme, b: JourneyBasis) -> None:
    s = settle_journey(scheme, b)
    assert 0 <= s.fee.amount_minor <= s.revenue.amount_minor
    for share in s.shares:
        assert share.gross.amount_minor >= 0
        assert 0 <= share.fee.amount_minor <= share.gross.amount_minor
        assert share.net.amount_minor >= 0


@st.composite
def revisions(draw: st.DrawFn) -> list[JourneyBasis]:
    count = draw(st.integers(1, 5))
    out = []
    for revision in range(1, count + 1):
        if revision > 1 and draw(st.integers(0, 4)) == 0:
            out.append(basis(0, (), revision=revision))  # withdrawn
        else:
            out.append(draw(bases(revision=revision)))
    return out


@settings(deadline=None)
@given(scheme=schemes(), revs=revisions())
def test_posting_revision_after_revision_lands_on_the_last_target(
    scheme: Scheme, revs: list[JourneyBasis]
) -> None:
    posted: list[LedgerEntry] = []
    for b in revs:
        target = settle_journey(scheme, b)
        entries = postings_for_settlement(
            b.journey_id, b.revision, None, target, standing_of(posted)
        )
        assert sum(e.amount.amount_minor for e in entries) == 0
        posted.extend(entries)
        assert nonzero(standing_of(posted)) == dict(target.position)
