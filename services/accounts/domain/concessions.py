"""Travel passes reaching the taps (docs/benefits.md#travel-passes): which concession an
account's travel passes give its cards, and which `concessions` records that takes. Pure.

Every card of an account carries one concession at most: a rider category and the service
days [valid_from, valid_to) it applies. It comes from the account's travel passes that
were not revoked: passes of one rider category and council whose validities touch or
overlap make one run (a renewal starts on the day the current grant ends, so a renewed
pass is one run whose end moves out), and the card carries the earliest run that has not
ended. Expired grants still count in their run, so a run's first day does not move when
its first grant expires; once the whole run has ended, the card carries nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True, slots=True)
class TravelPass:
    """A travel-pass grant that was not revoked, with the rider category its scheme gives."""

    entitlement_id: str
    scheme_id: str
    funder_id: str
    rider_category_id: str
    valid_from: date
    valid_to: date


@dataclass(frozen=True, slots=True)
class Concession:
    """What a card carries on the `concessions` topic: the rider category for service days
    [valid_from, valid_to), and the grant whose validity ends the run (with its scheme and
    council)."""

    rider_category_id: str
    valid_from: date
    valid_to: date
    entitlement_id: str
    scheme_id: str
    funder_id: str


def _runs(passes: list[TravelPass]) -> list[Concession]:
    """The runs of passes of one category and council (sorted by start) that touch or
    overlap, each named after its member ending last."""
    runs: list[Concession] = []
    members: list[TravelPass] = []
    end = date.min
    for item in sorted(passes, key=lambda p: (p.valid_from, p.valid_to, p.entitlement_id)):
        if members and item.valid_from > end:
            runs.append(_run_of(members))
            members = []
        members.append(item)
        end = max(end, item.valid_to) if len(members) > 1 else item.valid_to
    if members:
        runs.append(_run_of(members))
    return runs


def _run_of(members: list[TravelPass]) -> Concession:
    last = max(members, key=lambda p: (p.valid_to, p.valid_from, p.entitlement_id))
    return Concession(
        last.rider_category_id,
        min(m.valid_from for m in members),
        last.valid_to,
        last.entitlement_id,
        last.scheme_id,
        last.funder_id,
    )


def concession_of(passes: Iterable[TravelPass], today: date) -> Concession | None:
    """The concession an account's travel passes (none revoked) give its cards on service
    day `today`: the earliest run that has not ended by `today` (in force today, or the next
    to start); None when every run has ended."""
    groups: dict[tuple[str, str], list[TravelPass]] = {}
    for item in passes:
        groups.setdefault((item.rider_category_id, item.funder_id), []).append(item)
    live = [run for members in groups.values() for run in _runs(members) if run.valid_to > today]
    if not live:
        return None
    return min(live, key=lambda r: (r.valid_from, r.rider_category_id, r.funder_id))


def concession_changes(
    cards: Iterable[str], published: Mapping[str, Concession], wanted: Concession | None
) -> list[tuple[str, Concession | None]]:
    """The records that bring the topic to `wanted` for the account's `cards`, given what
    each card carries now (`published`), in card order: `wanted` for a card not carrying it
    yet, an end (None) for a card carrying one it should not (none is wanted, or the card
    left the account); nothing for a card already as it should be."""
    held = set(cards)
    changes: dict[str, Concession | None] = {}
    for card in held:
        if wanted is not None and published.get(card) != wanted:
            changes[card] = wanted
        elif wanted is None and card in published:
            changes[card] = None
    for card in published:
        if card not in held:
            changes[card] = None
    return sorted(changes.items())
