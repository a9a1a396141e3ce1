"""A hand-counted small service day (2026-06-15, BST: local = UTC + 1) of priced journeys
and benefit postings, with a scheme whose council funder:camden has area Z2.

Journeys (the London example feed: Z1 = KGX OXC FAR..., Z2 = CMD BRX WHC...; bus stops
are in no area):
- A. LUL: cards tokLUL01..12, one journey each KGX->BRX (Z1->Z2) entering 07:0x UTC =
  08 local, ADULT. tokLUL01 makes a second journey: revision 1 KGX->OXC (Z1->Z1, outside
  Camden), replaced by revision 2 KGX->BRX. So LUL Z1 08: 13 boardings, 12 cards.
- B. LUL outside Camden: cards tokOUT01..03, KGX->OXC (Z1->Z1) at 08 local, ADULT.
- C. BUSCO: cards tokBUS01..09, BUS_A1->BUS_A3 at 09 local, SENIOR: outside Camden.
- D. LUL: cards tokSNR01..09, CMD->KGX (Z2->Z1) at 10 local, SENIOR: in Camden, 9 cards.
- E. ELIZ: card tokWDR01, journey withdrawn by revision 2 (no legs): drops out.
- F. tokLUL02 travels KGX->BRX on 2026-06-16 too: in the month, not the day.

Benefit postings (GBP):
- camden-youth-leisure (Camden, budget 5000.00 a month in June, 6000.00 from July):
  leisure_centre at provider:camden-leisure 12 x 5.00 (one posted twice: counts once);
  pitch_hire at provider:camden-pitches 10 x 8.00; recording_studio at
  provider:camden-studio 9 x 15.00; swimming at provider:camden-leisure 3 x 4.00.
  Day: 34 redemptions, 287.00 = 5.74 % of 5000.00. On 2026-06-20 (month only): 2 more
  leisure_centre x 5.00. On 2026-07-01 (neither): 1 pitch_hire.
- camden-senior-pass (Camden, budget 2000.00): no redemption.
- islington-youth (funder:islington, budget 1000.00): 11 x 3.00 leisure_centre at
  provider:islington-gym: not Camden's.
- Rewards: camden-volunteering 10 x 10.00, camden-off-peak 9 x 0.50 (Camden);
  lul-loyalty 12 x 1.00 paid by operator:LUL (not Camden's).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from clearway.events.v1 import events_pb2
from clearway.scheme.model import (
    BankAccount,
    Dated,
    EntitlementKind,
    EntitlementScheme,
    Party,
    PartyKind,
    Scheme,
    SettlementCalendar,
)

PERIOD = "2026-06-15"
MONTH = "2026-06"
COUNCIL = "funder:camden"


def leg(operator: str, from_stop: str, to_stop: str, at: datetime) -> events_pb2.PricedLeg:
    out = events_pb2.PricedLeg(
        leg_id=f"leg-{operator}-{at.isoformat()}",
        operator_id=operator,
        from_stop_id=from_stop,
        to_stop_id=to_stop,
    )
    out.entry_at.FromDatetime(at)
    out.exit_at.FromDatetime(at.replace(minute=min(at.minute + 20, 59)))
    out.charge.currency = "GBP"
    out.charge.amount_minor = 280
    return out


def journey(
    journey_id: str,
    card: str,
    legs: list[events_pb2.PricedLeg],
    *,
    revision: int = 1,
    day: str = PERIOD,
    category: str = "ADULT",
) -> events_pb2.PricedJourney:
    out = events_pb2.PricedJourney(
        journey_id=journey_id,
        card_token=card,
        revision=revision,
        service_day=day,
        legs=legs,
        rider_category_id=category,
    )
    out.charge.currency = "GBP"
    out.charge.amount_minor = sum(x.charge.amount_minor for x in legs)
    return out


def hand_counted_day() -> list[events_pb2.PricedJourney]:
    """Every revision, in publication order."""
    out: list[events_pb2.PricedJourney] = []
    for i in range(1, 13):
        at = datetime(2026, 6, 15, 7, i, tzinfo=UTC)
        out.append(journey(f"jrnLUL{i:02d}", f"tokLUL{i:02d}", [leg("LUL", "KGX", "BRX", at)]))
    second = datetime(2026, 6, 15, 7, 40, tzinfo=UTC)
    out.append(journey("jrnLUL01b", "tokLUL01", [leg("LUL", "KGX", "OXC", second)]))
    out.append(journey("jrnLUL01b", "tokLUL01", [leg("LUL", "KGX", "BRX", second)], revision=2))
    for i in range(1, 4):
        at = datetime(2026, 6, 15, 7, 44 + i, tzinfo=UTC)
        out.append(journey(f"jrnOUT{i:02d}", f"tokOUT{i:02d}", [leg("LUL", "KGX", "OXC", at)]))
    for i in range(1, 10):
        at = datetime(2026, 6, 15, 8, 10 + i, tzinfo=UTC)
        bus = [leg("BUSCO", "BUS_A1", "BUS_A3", at)]
        out.append(journey(f"jrnBUS{i:02d}", f"tokBUS{i:02d}", bus, category="SENIOR"))
    for i in range(1, 10):
        at = datetime(2026, 6, 15, 9, 10 + i, tzinfo=UTC)
        tube = [leg("LUL", "CMD", "KGX", at)]
        out.append(journey(f"jrnSNR{i:02d}", f"tokSNR{i:02d}", tube, category="SENIOR"))
    eliz = datetime(2026, 6, 15, 7, 30, tzinfo=UTC)
    out.append(journey("jrnWDR01", "tokWDR01", [leg("ELIZ", "FAR", "WHC", eliz)]))
    out.append(journey("jrnWDR01", "tokWDR01", [], revision=2))
    next_day = datetime(2026, 6, 16, 7, 5, tzinfo=UTC)
    out.append(
        journey("jrnLUL02n", "tokLUL02", [leg("LUL", "KGX", "BRX", next_day)], day="2026-06-16")
    )
    return out


def posting(
    serial: int,
    kind: events_pb2.BenefitPosting.Kind.ValueType,
    funder: str,
    amount: int,
    *,
    day: str = PERIOD,
    provider: str = "",
    scheme: str = "",
    category: str = "",
    rule: str = "",
) -> events_pb2.BenefitPosting:
    prefix = "redemption" if kind == events_pb2.BenefitPosting.KIND_REDEMPTION else "reward"
    out = events_pb2.BenefitPosting(
        posting_id=f"{prefix}:pst{serial:05d}",
        kind=kind,
        funder_id=funder,
        provider_id=provider,
        service_day=day,
        entitlement_scheme_id=scheme,
        category=category,
        reward_rule_id=rule,
    )
    out.amount.currency = "GBP"
    out.amount.amount_minor = amount
    out.at.FromDatetime(datetime.fromisoformat(f"{day}T12:00:00+00:00"))
    return out


def hand_counted_postings() -> list[events_pb2.BenefitPosting]:
    """Every benefit posting, in publication order (one published twice)."""
    redeem = events_pb2.BenefitPosting.KIND_REDEMPTION
    reward = events_pb2.BenefitPosting.KIND_REWARD
    youth = {"funder": COUNCIL, "scheme": "camden-youth-leisure"}
    spend = [
        # (how many, category, provider, amount, day)
        (12, "leisure_centre", "provider:camden-leisure", 500, PERIOD),
        (10, "pitch_hire", "provider:camden-pitches", 800, PERIOD),
        (9, "recording_studio", "provider:camden-studio", 1500, PERIOD),
        (3, "swimming", "provider:camden-leisure", 400, PERIOD),
        (2, "leisure_centre", "provider:camden-leisure", 500, "2026-06-20"),
        (1, "pitch_hire", "provider:camden-pitches", 800, "2026-07-01"),
    ]
    out: list[events_pb2.BenefitPosting] = []
    for n, category, provider, amount, day in spend:
        for _ in range(n):
            out.append(
                posting(
                    len(out),
                    redeem,
                    youth["funder"],
                    amount,
                    day=day,
                    provider=provider,
                    scheme=youth["scheme"],
                    category=category,
                )
            )
    out.append(out[0])  # published twice (a producer's retry): one posting
    for _ in range(11):
        out.append(
            posting(
                len(out),
                redeem,
                "funder:islington",
                300,
                provider="provider:islington-gym",
                scheme="islington-youth",
                category="leisure_centre",
            )
        )
    for n, funder, rule, amount in [
        (10, COUNCIL, "camden-volunteering", 1000),
        (9, COUNCIL, "camden-off-peak", 50),
        (12, "operator:LUL", "lul-loyalty", 100),
    ]:
        for _ in range(n):
            out.append(posting(len(out), reward, funder, amount, rule=rule))
    return out


def identifiers(
    day: list[events_pb2.PricedJourney], postings: list[events_pb2.BenefitPosting]
) -> set[str]:
    """Every card token, journey id, leg id and posting id of the inputs."""
    return (
        {j.card_token for j in day}
        | {j.journey_id for j in day}
        | {x.leg_id for j in day for x in j.legs}
        | {p.posting_id for p in postings}
    )


def _party(party_id: str, kind: PartyKind, name: str, areas: set[str]) -> Party:
    return Party(
        party_id, kind, name, BankAccount(), Dated(date(2025, 1, 1)), areas=frozenset(areas)
    )


def _allowance(
    scheme_id: str, funder: str, name: str, budget: int, dates: Dated
) -> EntitlementScheme:
    return EntitlementScheme(
        scheme_id=scheme_id,
        funder_id=funder,
        name=name,
        kind=EntitlementKind.ALLOWANCE,
        dates=dates,
        min_age=11,
        max_age=18,
        areas=frozenset({"Z2"}),
        validity_days=365,
        renewal_window_days=30,
        monthly_budget_minor=budget,
        allowance_per_month_minor=2000,
        categories=frozenset({"leisure_centre", "pitch_hire", "recording_studio", "swimming"}),
        per_visit_limit_minor=1500,
    )


def day_scheme() -> Scheme:
    """The scheme of the test day: Camden's area is Z2, Islington's Z1."""
    since = Dated(date(2025, 1, 1))
    return Scheme(
        scheme_id="london-example",
        name="test scheme",
        currency="GBP",
        calendar=SettlementCalendar("Europe/London", time(10)),
        parties=(
            _party("operator:LUL", PartyKind.OPERATOR, "London Underground", set()),
            _party(COUNCIL, PartyKind.FUNDER, "London Borough of Camden", {"Z2"}),
            _party("funder:islington", PartyKind.FUNDER, "Islington Council", {"Z1"}),
        ),
        fees=(),
        default_methods=(),
        method_rules=(),
        funding_rules=(),
        entitlement_schemes=(
            _allowance(
                "camden-youth-leisure",
                COUNCIL,
                "Youth leisure allowance",
                500000,
                Dated(date(2025, 1, 1), date(2026, 7, 1)),
            ),
            _allowance(
                "camden-youth-leisure",
                COUNCIL,
                "Youth leisure allowance",
                600000,
                Dated(date(2026, 7, 1)),
            ),
            EntitlementScheme(
                scheme_id="camden-senior-pass",
                funder_id=COUNCIL,
                name="Senior bus pass",
                kind=EntitlementKind.TRAVEL_PASS,
                dates=since,
                min_age=66,
                max_age=130,
                areas=frozenset({"Z2"}),
                validity_days=365,
                renewal_window_days=30,
                monthly_budget_minor=200000,
                rider_category="SENIOR",
            ),
            _allowance("islington-youth", "funder:islington", "Islington youth", 100000, since),
        ),
    )


# -- the whole network, the day --------------------------------------------------------
NETWORK_RIDERSHIP = [
    ["boarding_area", "hour", "operator_id", "boardings", "cards"],
    ["BUS_A1", "09", "BUSCO", "<10", "<10"],
    ["Z1", "08", "LUL", "16", "15"],
    ["Z2", "10", "LUL", "<10", "<10"],
]
# Z1 -> Z1 (3 cards) is suppressed; Z1 -> Z2 is withheld, else ridership's Z1 boardings
# (16) minus its 13 legs would give Z1 -> Z1's 3.
NETWORK_OD = [
    ["origin_area", "destination_area", "legs", "cards"],
    ["BUS_A1", "BUS_A3", "<10", "<10"],
    ["Z1", "Z1", "<10", "<10"],
    ["Z1", "Z2", "withheld", "withheld"],
    ["Z2", "Z1", "<10", "<10"],
]
NETWORK_CONCESSIONS = [
    ["rider_category_id", "journeys", "cards"],
    ["ADULT", "16", "15"],
    ["SENIOR", "18", "18"],
]

# -- Camden (area Z2), the day ---------------------------------------------------------
CAMDEN_RIDERSHIP = [
    ["boarding_area", "hour", "operator_id", "boardings", "cards"],
    ["Z1", "08", "LUL", "13", "12"],
    ["Z2", "10", "LUL", "<10", "<10"],
]
CAMDEN_OD = [
    ["origin_area", "destination_area", "legs", "cards"],
    ["Z1", "Z2", "13", "12"],
    ["Z2", "Z1", "<10", "<10"],
]
CAMDEN_CONCESSIONS = [
    ["rider_category_id", "journeys", "cards"],
    ["ADULT", "13", "12"],
    ["SENIOR", "<10", "<10"],
]
VOUCHER_COLUMNS = [
    "entitlement_scheme_id",
    "category",
    "provider_id",
    "redemptions",
    "amount_minor",
    "currency",
]
CAMDEN_VOUCHERS = [
    VOUCHER_COLUMNS,
    ["camden-youth-leisure", "leisure_centre", "provider:camden-leisure", "12", "6000", "GBP"],
    ["camden-youth-leisure", "pitch_hire", "provider:camden-pitches", "10", "8000", "GBP"],
    ["camden-youth-leisure", "recording_studio", "provider:camden-studio", "<10", "<10", "GBP"],
    ["camden-youth-leisure", "swimming", "provider:camden-leisure", "<10", "<10", "GBP"],
]
BUDGET_COLUMNS = [
    "entitlement_scheme_id",
    "name",
    "budget_months",
    "budget_minor",
    "redemptions",
    "used_minor",
    "used_percent",
    "currency",
]
CAMDEN_BUDGET = [
    BUDGET_COLUMNS,
    ["camden-senior-pass", "Senior bus pass", "2026-06", "200000", "0", "0", "0.0", "GBP"],
    # 12 x 500 + 10 x 800 + 9 x 1500 + 3 x 400 = 28700 of 500000 = 5.74 %
    [
        "camden-youth-leisure",
        "Youth leisure allowance",
        "2026-06",
        "500000",
        "34",
        "28700",
        "5.7",
        "GBP",
    ],
]
CAMDEN_REWARDS = [
    ["reward_rule_id", "rewards", "amount_minor", "currency"],
    ["camden-off-peak", "<10", "<10", "GBP"],
    ["camden-volunteering", "10", "10000", "GBP"],
]

# -- Camden, the month: + tokLUL02's 2026-06-16 journey, + 2 redemptions of 2026-06-20 -----
CAMDEN_MONTH_RIDERSHIP = [
    ["boarding_area", "hour", "operator_id", "boardings", "cards"],
    ["Z1", "08", "LUL", "14", "12"],
    ["Z2", "10", "LUL", "<10", "<10"],
]
CAMDEN_MONTH_BUDGET = [
    BUDGET_COLUMNS,
    ["camden-senior-pass", "Senior bus pass", "2026-06", "200000", "0", "0", "0.0", "GBP"],
    # 28700 + 2 x 500 = 29700 of 500000 = 5.94 %
    [
        "camden-youth-leisure",
        "Youth leisure allowance",
        "2026-06",
        "500000",
        "36",
        "29700",
        "5.9",
        "GBP",
    ],
]
