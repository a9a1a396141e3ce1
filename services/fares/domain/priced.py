"""What the fare engine returns: priced legs and journeys, caps applied, revisions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from clearway.money import Money


@dataclass(frozen=True, slots=True)
class PricedLeg:
    """One physical leg (entry+exit, a single on-board tap, or an unmatched tap), priced.

    `fare` is before caps; `charge` is what remains after caps (None only when built by hand).
    `standalone_fare` is the leg priced as if travelled alone (the traveller's rider category
    and fare media, before transfer rules and caps); `reference_fare` the same for the fare
    data's default rider category (the adult fare a concession forgoes). A leg joined with
    others into one fare leg gets its share of each; a leg with a no-fare reason gets 0. Both
    are None only when built by hand.
    """

    leg_id: str
    operator_id: str
    network_id: str | None
    route_id: str | None
    from_stop_id: str
    to_stop_id: str | None
    entry_at: datetime
    exit_at: datetime | None
    fare: Money
    fare_product_id: str | None
    incomplete: bool
    tap_ids: tuple[str, ...]
    transfer_rule_id: str | None
    distance_m: int | None
    leg_group_id: str | None = None
    transfer_product_id: str | None = None
    maximum_fare: bool = False
    charge: Money | None = None
    standalone_fare: Money | None = None
    reference_fare: Money | None = None


@dataclass(frozen=True, slots=True)
class CapApplied:
    """A cap that reduced a journey's charge, and by how much."""

    cap_id: str
    saved: Money


@dataclass(frozen=True, slots=True)
class PricedJourney:
    """Legs linked by transfer or join rules, priced and capped; `charge` is what the card pays."""

    journey_id: str
    card_token: str
    service_day: date
    legs: tuple[PricedLeg, ...]
    amount_before_caps: Money
    caps: tuple[CapApplied, ...]
    charge: Money
    incomplete: bool
    fare_version: str
    rider_category_id: str
    fare_media_id: str
    explanation: tuple[str, ...]
    no_fare_reason: str | None


@dataclass(frozen=True, slots=True)
class JourneyRevision:
    """A change to publish: a new journey, a re-priced one, or one that vanished (journey None).

    `delta` is the signed Adjustment against the last published charge.
    """

    journey: PricedJourney | None
    journey_id: str
    card_token: str
    revision: int
    charge: Money
    delta: Money
