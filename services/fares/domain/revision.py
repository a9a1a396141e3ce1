"""Turn a re-pricing into Adjustments: only what changed since the last publication."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from clearway.money import Money

from .priced import JourneyRevision, PricedJourney


def revise(
    previous: Mapping[str, tuple[int, Money]],
    current: Sequence[PricedJourney],
    *,
    card_token: str | None = None,
) -> list[JourneyRevision]:
    """Revisions to publish, given `previous` (journey_id -> (last revision, last charge)).

    New journeys get revision 1 (delta = charge); changed ones n+1 (delta = new - old);
    vanished ones n+1 with charge 0 and delta = -old (journey None, card_token from the
    argument or the single card in `current`). Unchanged journeys yield nothing. Callers
    should drop vanished ids from `previous` once published.
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
        if old != journey.charge:
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
        number, old = previous[journey_id]
        revisions.append(
            JourneyRevision(None, journey_id, token, number + 1, Money.zero(old.currency), -old)
        )
    return revisions
