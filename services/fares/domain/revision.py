"""Turn a re-pricing into Adjustments: only what changed since the last publication."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from clearway.money import Money

from .priced import JourneyRevision, PricedJourney

WITHDRAWN = ""  # the fingerprint of a journey published as vanished


def fingerprint(journey: PricedJourney) -> str:
    """A digest of everything a revision publishes about `journey` (not its wording).

    Two pricings with the same charge but other legs, operators or caps differ here, so
    settlement re-splits and travellers see the new legs.
    """
    content = (
        journey.legs,
        journey.amount_before_caps,
        journey.caps,
        journey.charge,
        journey.incomplete,
        journey.fare_version,
        journey.rider_category_id,
        journey.fare_media_id,
        journey.no_fare_reason,
    )
    return hashlib.sha256(repr(content).encode()).hexdigest()


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
