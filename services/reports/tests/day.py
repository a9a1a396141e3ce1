"""A hand-counted small service day of priced journeys (BST: local = UTC + 1).

- LUL: cards tokLUL01..12, one journey each KGX->BRX (Z1->Z2) entering 07:0x UTC =
  08:xx local, ADULT. tokLUL01 makes a second journey: revision 1 KGX->OXC (Z1->Z1),
  replaced by revision 2 KGX->BRX. So LUL 08: 13 boardings, 12 cards.
- BUSCO: cards tokBUS01..09, BUS_A1->BUS_A3 entering 08:1x UTC = 09:xx local, SENIOR:
  9 cards, suppressed.
- ELIZ: card tokWDR01, journey withdrawn by revision 2 (no legs): drops out.
- tokLUL02 travels on the next day too: not in this period.
"""

from __future__ import annotations

from datetime import UTC, datetime

from clearway.events.v1 import events_pb2

PERIOD = "2026-06-15"


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
    for i in range(1, 10):
        at = datetime(2026, 6, 15, 8, 10 + i, tzinfo=UTC)
        out.append(
            journey(
                f"jrnBUS{i:02d}",
                f"tokBUS{i:02d}",
                [leg("BUSCO", "BUS_A1", "BUS_A3", at)],
                category="SENIOR",
            )
        )
    eliz = datetime(2026, 6, 15, 7, 30, tzinfo=UTC)
    out.append(journey("jrnWDR01", "tokWDR01", [leg("ELIZ", "FAR", "WHC", eliz)]))
    out.append(journey("jrnWDR01", "tokWDR01", [], revision=2))
    next_day = datetime(2026, 6, 16, 7, 5, tzinfo=UTC)
    out.append(
        journey("jrnLUL02n", "tokLUL02", [leg("LUL", "KGX", "BRX", next_day)], day="2026-06-16")
    )
    return out


def identifiers(day: list[events_pb2.PricedJourney]) -> set[str]:
    """Every card token and journey id of the day."""
    return {j.card_token for j in day} | {j.journey_id for j in day}


EXPECTED_RIDERSHIP = [
    ["operator_id", "hour", "boardings", "cards"],
    ["BUSCO", "09", "<10", "<10"],
    ["LUL", "08", "13", "12"],
]
EXPECTED_OD_AREAS = [
    ["origin_area", "destination_area", "legs", "cards"],
    ["BUS_A1", "BUS_A3", "<10", "<10"],
    ["Z1", "Z2", "13", "12"],
]
EXPECTED_CONCESSIONS = [
    ["rider_category_id", "journeys", "cards"],
    ["ADULT", "13", "12"],
    ["SENIOR", "<10", "<10"],
]
