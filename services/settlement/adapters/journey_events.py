"""Decode the events settlement consumes: priced journeys, top-ups and benefit postings."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from google.protobuf.message import DecodeError

from clearway.common.v1 import money_pb2
from clearway.events.v1 import events_pb2
from clearway.money import Money
from services.settlement.domain.benefits import BenefitKind, BenefitPosting
from services.settlement.domain.errors import InvalidBenefitPostingError, InvalidJourneyError
from services.settlement.domain.periods import parse_period_id
from services.settlement.domain.settle import InvalidTopUpError, JourneyBasis, Leg
from services.settlement.domain.top_ups import TopUpSale

# Operator ids become file names and CSV fields: keep them plain.
_OPERATOR_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_BENEFIT_KINDS = {
    events_pb2.BenefitPosting.KIND_REDEMPTION: BenefitKind.REDEMPTION,
    events_pb2.BenefitPosting.KIND_REWARD: BenefitKind.REWARD,
}


def _money(field: str, value: money_pb2.Money) -> Money:
    if not value.currency:
        raise InvalidJourneyError("MISSING_CURRENCY", f"{field} has no currency")
    try:
        return Money(value.amount_minor, value.currency)
    except ValueError as exc:
        raise InvalidJourneyError("INVALID_MONEY", f"{field}: {exc}") from None


def _leg_fares(leg: events_pb2.PricedLeg) -> tuple[Money | None, Money | None]:
    standalone = (
        _money("standalone_fare", leg.standalone_fare) if leg.HasField("standalone_fare") else None
    )
    reference = (
        _money("reference_fare", leg.reference_fare) if leg.HasField("reference_fare") else None
    )
    return standalone, reference


def _day(text: str) -> date:
    try:
        return parse_period_id(text)
    except ValueError as exc:
        raise InvalidJourneyError("INVALID_SERVICE_DAY", str(exc)) from None


def _started_at(event: events_pb2.PricedJourney) -> datetime | None:
    for leg in event.legs:
        for name in ("entry_at", "exit_at"):
            if leg.HasField(name):
                return getattr(leg, name).ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]
    return None


def decode_journey(value: bytes | None) -> JourneyBasis:
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
    charge, delta = _money("charge", event.charge), _money("delta", event.delta)
    if charge.currency != delta.currency:
        raise InvalidJourneyError(
            "CURRENCY_MISMATCH", f"charge {charge.currency} vs delta {delta.currency}"
        )
    if event.revision == 1 and delta != charge:
        raise InvalidJourneyError("INVALID_DELTA", "revision 1 must have delta == charge")
    legs = []
    for i, leg in enumerate(event.legs):
        if not _OPERATOR_ID.match(leg.operator_id):
            raise InvalidJourneyError(
                "INVALID_OPERATOR_ID", f"leg {leg.leg_id!r} has operator {leg.operator_id!r}"
            )
        standalone, reference = _leg_fares(leg)
        legs.append(
            Leg(
                leg.leg_id or str(i + 1),
                leg.operator_id,
                leg.network_id,
                max(int(leg.distance_m), 0),
                standalone,
                reference,
            )
        )
    return JourneyBasis(
        journey_id=event.journey_id,
        revision=event.revision,
        service_day=_day(event.service_day),
        started_at=_started_at(event),
        rider_category_id=event.rider_category_id,
        charge=charge,
        legs=tuple(legs),
    )


def decode_top_up(value: bytes | None) -> TopUpSale:
    """The top-up in a Kafka record value; InvalidTopUpError with a code if not."""
    if not value:
        raise InvalidTopUpError("EMPTY_MESSAGE", "record has no value")
    event = events_pb2.TopUp()
    try:
        event.ParseFromString(value)
    except DecodeError as exc:
        raise InvalidTopUpError("UNDECODABLE", f"not a TopUp: {exc}") from None
    if not event.HasField("amount") or not event.amount.currency:
        raise InvalidTopUpError("MISSING_AMOUNT", "amount (with its currency) is missing")
    try:
        amount = Money(event.amount.amount_minor, event.amount.currency)
        day = parse_period_id(event.service_day)
    except ValueError as exc:
        raise InvalidTopUpError("INVALID_TOP_UP", str(exc)) from None
    return TopUpSale(event.top_up_id, event.retailer_id, amount, day)


def decode_benefit(value: bytes | None) -> BenefitPosting:
    """The benefit posting in a Kafka record value; InvalidBenefitPostingError with a code
    if not."""
    if not value:
        raise InvalidBenefitPostingError("EMPTY_MESSAGE", "record has no value")
    event = events_pb2.BenefitPosting()
    try:
        event.ParseFromString(value)
    except DecodeError as exc:
        raise InvalidBenefitPostingError("UNDECODABLE", f"not a BenefitPosting: {exc}") from None
    kind = _BENEFIT_KINDS.get(event.kind)
    if kind is None:
        raise InvalidBenefitPostingError("UNKNOWN_KIND", f"kind {event.kind}")
    if not event.HasField("amount") or not event.amount.currency:
        raise InvalidBenefitPostingError("MISSING_AMOUNT", "amount (with its currency) is missing")
    try:
        amount = Money(event.amount.amount_minor, event.amount.currency)
    except ValueError as exc:
        raise InvalidBenefitPostingError("INVALID_AMOUNT", str(exc)) from None
    try:
        day = parse_period_id(event.service_day)
    except ValueError as exc:
        raise InvalidBenefitPostingError("INVALID_SERVICE_DAY", str(exc)) from None
    return BenefitPosting(
        posting_id=event.posting_id,
        kind=kind,
        funder_id=event.funder_id,
        amount=amount,
        service_day=day,
        provider_id=event.provider_id,
        entitlement_scheme_id=event.entitlement_scheme_id,
        category=event.category,
        reward_rule_id=event.reward_rule_id,
    )
