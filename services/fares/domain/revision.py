"""Turn a re-pricing into Adjustments: only what changed since the last publication."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from clearway.money import Money

from .priced import JourneyRevision, PricedJourney, PricedLeg

WITHDRAWN = ""  # the fingerprint of a journey published as vanished


FINGERPRINT_VERSION = "v2"


def _when(at: datetime | None) -> str:
    return "" if at is None else at.astimezone(UTC).isoformat()


def _money_text(amount: Money | None) -> str:
    return "" if amount is None else f"{amount.amount_minor} {amount.currency}"


def _leg_text(leg: PricedLeg) -> str:
    fields = (
        leg.leg_id,
        leg.operator_id,
        leg.network_id or "",
        leg.route_id or "",
        leg.from_stop_id,
        leg.to_stop_id or "",
        _when(leg.entry_at),
        _when(leg.exit_at),
        _money_text(leg.fare),
        leg.fare_product_id or "",
        "1" if leg.incomplete else "0",
        ",".join(leg.tap_ids),
        leg.transfer_rule_id or "",
        "" if leg.distance_m is None else str(leg.distance_m),
        leg.leg_group_id or "",
        leg.transfer_product_id or "",
        "1" if leg.maximum_fare else "0",
        _money_text(leg.charge),
    )
    return "\x1f".join(fields)


def canonical_content(journey: PricedJourney) -> str:
    """The explicit, canonical text of everything a revision publishes about `journey`
    (not its wording): fields in a fixed order, separated by control characters that no
    identifier contains, instants in UTC. Its digest is the journey's fingerprint."""
    head = (
        _money_text(journey.amount_before_caps),
        ",".join(f"{c.cap_id}={_money_text(c.saved)}" for c in journey.caps),
        _money_text(journey.charge),
        "1" if journey.incomplete else "0",
        journey.fare_version,
        journey.rider_category_id,
        journey.fare_media_id,
        journey.no_fare_reason or "",
    )
    return "\x1e".join(["\x1f".join(head), *(_leg_text(leg) for leg in journey.legs)])


def fingerprint(journey: PricedJourney) -> str:
    """A digest of everything a revision publishes about `journey` (not its wording).

    Two pricings with the same charge but other legs, operators or caps differ here, so
    settlement re-splits and travellers see the new legs. Versioned: a change of the
    encoding changes the prefix (`v2:`), pinned by a test.
    """
    digest = hashlib.sha256(canonical_content(journey).encode()).hexdigest()
    return f"{FINGERPRINT_VERSION}:{digest}"


def revise(
    previous: Mapping[str, tuple[int, Money]],
    current: Sequence[PricedJourney],
    *,
    card_token: str | None = None,
    fingerprints: Mapping[str, str | None] | None = None,
) -> list[JourneyRevision]:
    """Revisions to publish, given `previous` (journey_id -> (last revision, last charge)).

    New journeys get revision 1 (delta = charge); changed ones n+1 (delta = new - old);
    vanished ones n+1 with charge 0 and delta = -old (journey None, card_token from the
    argument or the single card in `current`). Unchanged journeys yield nothing. Callers
    should drop vanished ids from `previous` once published.

    With `fingerprints` (journey_id -> last published `fingerprint`, WITHDRAWN for a
    vanished one, None when unknown) a journey whose content changed at the same charge
    gets a revision too, and a journey already published as vanished yields nothing more.
    """
    revisions: list[JourneyRevision] = []
    seen: set[str] = set()
    for journey in current:
        seen.add(journey.journey_id)
        last = previous.get(journey.journey_id)
        if last is None:
            revisions.append(
                JourneyRevision(
                    journey,
                    journey.journey_id,
                    journey.card_token,
                    1,
                    journey.charge,
                    journey.charge,
                )
            )
            continue
        number, old = last
        changed = fingerprints is not None and fingerprints.get(journey.journey_id) != (
            fingerprint(journey)
        )
        if old != journey.charge or changed:
            revisions.append(
                JourneyRevision(
                    journey,
                    journey.journey_id,
                    journey.card_token,
                    number + 1,
                    journey.charge,
                    journey.charge - old,
                )
            )
    cards = {j.card_token for j in current}
    token = card_token if card_token is not None else (next(iter(cards)) if len(cards) == 1 else "")
    for journey_id in sorted(set(previous) - seen):
        if fingerprints is not None and fingerprints.get(journey_id) == WITHDRAWN:
            continue
        number, old = previous[journey_id]
        revisions.append(
            JourneyRevision(None, journey_id, token, number + 1, Money.zero(old.currency), -old)
        )
    return revisions
