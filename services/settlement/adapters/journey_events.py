"""Decode `PricedJourney` events from the journeys topic into domain revisions."""

from __future__ import annotations

import re

from google.protobuf.message import DecodeError

from clearway.common.v1 import money_pb2
from clearway.events.v1 import events_pb2
from clearway.money import Money
from services.settlement.domain.apportionment import Leg
from services.settlement.domain.errors import InvalidJourneyError
from services.settlement.domain.ledger import JourneyRevision

# Operator ids become party ids and statement file names: keep them plain.
_OPERATOR_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _money(field: str, value: money_pb2.Money) -> Money:
    if not value.currency:
        raise InvalidJourneyError("MISSING_CURRENCY", f"{field} has no currency")
    try:
        return Money(value.amount_minor, value.currency)
    except ValueError as exc:
        raise InvalidJourneyError("INVALID_MONEY", f"{field}: {exc}") from None


def decode_journey(value: bytes | None) -> JourneyRevision:
    """The journey revision in a Kafka record value; InvalidJourneyError with a code if not."""
    if not value:
        raise InvalidJourneyError("EMPTY_MESSAGE", "record has no value")
    event = events_pb2.PricedJourney()
    try:
        event.ParseFromString(value)
    except DecodeError as exc:
        raise InvalidJourneyError("UNDECODABLE", f"not a PricedJourney: {exc}") from None
    if not event.HasField("charge"):
        raise InvalidJourneyError("MISSING_CHARGE", "charge is missing")
    if not event.HasField("delta"):
        raise InvalidJourneyError("MISSING_DELTA", "delta is missing")
    for leg in event.legs:
        if not _OPERATOR_ID.match(leg.operator_id):
            raise InvalidJourneyError(
                "INVALID_OPERATOR_ID", f"leg {leg.leg_id!r} has operator {leg.operator_id!r}"
            )
    return JourneyRevision(
        journey_id=event.journey_id,
        revision=event.revision,
        service_day=event.service_day,
        legs=tuple(Leg(leg.leg_id, leg.operator_id, leg.distance_m) for leg in event.legs),
        charge=_money("charge", event.charge),
        delta=_money("delta", event.delta),
    )
