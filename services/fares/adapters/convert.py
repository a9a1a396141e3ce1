"""Protobuf <-> fare-engine domain values."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from clearway.common.v1 import money_pb2
from clearway.errors import ClearwayError
from clearway.events.v1 import events_pb2
from clearway.money import Money
from services.fares.domain import PricedJourney, PricedLeg, Tap, TapKind

_KINDS = {
    events_pb2.TAP_KIND_ENTRY: TapKind.ENTRY,
    events_pb2.TAP_KIND_EXIT: TapKind.EXIT,
    events_pb2.TAP_KIND_BOARD: TapKind.BOARD,
}


class BadTapError(ClearwayError, ValueError):
    """A tap the fare engine cannot read."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


def tap_from_proto(tap: events_pb2.Tap) -> Tap:
    """The engine's view of a tap from the `taps` topic."""
    if tap.kind not in _KINDS:
        raise BadTapError("UNKNOWN_TAP_KIND", "tap kind must be ENTRY, EXIT or BOARD")
    if not tap.HasField("tapped_at"):
        raise BadTapError("MISSING_TAPPED_AT", "tapped_at is missing")
    try:
        tapped_at = tap.tapped_at.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise BadTapError("BAD_TAPPED_AT", "tapped_at is not a valid instant") from None
    return Tap(
        tap_id=tap.tap_id or f"{tap.device_id}:{tap.sequence_number}",
        card_token=tap.card_token,
        tapped_at=tapped_at,
        stop_id=tap.stop_id,
        kind=_KINDS[tap.kind],
        route_id=tap.route_id or None,
        operator_id=tap.operator_id or None,
        rider_category_id=tap.rider_category_id or None,
        fare_media_id=tap.fare_media_id or None,
    )


def money_pb(amount: Money) -> money_pb2.Money:
    """Money as its protobuf message."""
    return money_pb2.Money(amount_minor=amount.amount_minor, currency=amount.currency)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ts(at: datetime | None) -> Timestamp | None:
    """A timezone-aware instant as a Timestamp (what FromDatetime gives, built directly)."""
    if at is None:
        return None
    delta = at - _EPOCH
    return Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000)


def leg_pb(leg: PricedLeg) -> events_pb2.PricedLeg:
    """A priced leg as its protobuf message (standalone and reference fares unset when the
    leg has none, i.e. was built by hand)."""
    return events_pb2.PricedLeg(
        leg_id=leg.leg_id,
        operator_id=leg.operator_id,
        network_id=leg.network_id or "",
        route_id=leg.route_id or "",
        from_stop_id=leg.from_stop_id or "",
        to_stop_id=leg.to_stop_id or "",
        entry_at=_ts(leg.entry_at),
        exit_at=_ts(leg.exit_at),
        fare=money_pb(leg.fare),
        fare_product_id=leg.fare_product_id or "",
        incomplete=leg.incomplete,
        tap_ids=list(leg.tap_ids),
        transfer_rule_id=leg.transfer_rule_id or "",
        distance_m=leg.distance_m or 0,
        charge=money_pb(leg.charge if leg.charge is not None else leg.fare),
        maximum_fare=leg.maximum_fare,
        standalone_fare=None if leg.standalone_fare is None else money_pb(leg.standalone_fare),
        reference_fare=None if leg.reference_fare is None else money_pb(leg.reference_fare),
    )


def journey_pb(
    journey: PricedJourney | None,
    *,
    journey_id: str,
    card_token: str,
    service_day: str,
    revision: int,
    charge: Money,
    delta: Money,
) -> events_pb2.PricedJourney:
    """A journey revision as it goes on the `journeys` topic (a vanished journey has no legs)."""
    message = events_pb2.PricedJourney(
        journey_id=journey_id,
        card_token=card_token,
        revision=revision,
        service_day=service_day,
        charge=money_pb(charge),
        delta=money_pb(delta),
    )
    if journey is not None:
        message.legs.extend(leg_pb(leg) for leg in journey.legs)
        message.amount_before_caps.CopyFrom(money_pb(journey.amount_before_caps))
        message.caps.extend(
            events_pb2.CapApplied(cap_id=c.cap_id, saved=money_pb(c.saved)) for c in journey.caps
        )
        message.incomplete = journey.incomplete
        message.fare_version = journey.fare_version
        message.rider_category_id = journey.rider_category_id or ""
        message.fare_media_id = journey.fare_media_id or ""
    else:
        message.amount_before_caps.CopyFrom(money_pb(Money.zero(charge.currency)))
    return message
