"""Pairing: a card's taps, in time order, become legs.

An entry and its exit within the incomplete-after limit are one leg (a trip); a board tap
is a leg on its own; an entry with anything else after it, or nothing within the limit,
is an incomplete leg, and so is an exit with no entry (docs/fare-data.md, section 2).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from .model import FareData, FareVersions
from .taps import Tap, TapKind


class LegKind(StrEnum):
    """How a leg was tapped."""

    TRIP = "trip"  # entry + exit
    BOARD = "board"  # a single on-board tap
    ENTRY_ONLY = "entry_only"  # an entry with no exit: incomplete
    EXIT_ONLY = "exit_only"  # an exit with no entry: incomplete


# The members under module names: CPython 3.11 reads a module global several times faster
# than an Enum class attribute, and these are read for every leg.
TRIP, BOARD, ENTRY_ONLY, EXIT_ONLY = (
    LegKind.TRIP,
    LegKind.BOARD,
    LegKind.ENTRY_ONLY,
    LegKind.EXIT_ONLY,
)
_ENTRY, _EXIT = TapKind.ENTRY, TapKind.EXIT


class Leg:
    """One physical leg of a card, before pricing: its taps (`first_tap`, and `last_tap`
    for a trip), where and when it ran, its network and operator, and the fare data version
    in force at its first tap. Built once per leg and read often: attributes are computed
    up front, and never change."""

    __slots__ = (
        "arrival",
        "data",
        "departure",
        "first_tap",
        "from_stop",
        "incomplete",
        "kind",
        "last_tap",
        "network_id",
        "operator_id",
        "route_id",
        "tap_ids",
        "to_stop",
    )

    def __init__(
        self,
        kind: LegKind,
        first_tap: Tap,
        last_tap: Tap | None,
        data: FareData,
        *,
        network_id: str | None,
        operator_id: str,
        route_id: str | None,
    ) -> None:
        self.kind = kind
        self.first_tap = first_tap
        self.last_tap = last_tap
        self.data = data
        self.network_id = network_id
        self.operator_id = operator_id
        self.route_id = route_id
        self.departure: datetime = first_tap.tapped_at
        self.arrival: datetime = last_tap.tapped_at if last_tap is not None else first_tap.tapped_at
        self.incomplete = kind is ENTRY_ONLY or kind is EXIT_ONLY
        self.from_stop = first_tap.stop_id
        self.to_stop: str | None = (
            last_tap.stop_id
            if kind is TRIP and last_tap is not None
            else (first_tap.stop_id if kind is EXIT_ONLY else None)
        )
        self.tap_ids: tuple[str, ...] = (
            (first_tap.tap_id,) if last_tap is None else (first_tap.tap_id, last_tap.tap_id)
        )


def pair_taps(versions: FareVersions, taps: list[Tap], as_of: datetime | None) -> list[Leg]:
    """The legs of one card's taps (sorted by time and tap id). With `as_of`, a last entry
    whose exit may still come (`as_of` before its limit) is left out: pending."""
    legs: list[Leg] = []
    open_entry: Leg | None = None
    single = len(versions.versions) == 1 and bool(taps)
    if single:
        versions.version_at(taps[0].tapped_at)  # raises when before the only version
    for tap in taps:
        data = versions.versions[0] if single else versions.version_at(tap.tapped_at)
        if (
            tap.kind is _EXIT
            and open_entry is not None
            and tap.tapped_at - open_entry.departure <= incomplete_after(open_entry)
        ):
            legs.append(_trip(open_entry, tap))
            open_entry = None
            continue
        if open_entry is not None:
            legs.append(open_entry)  # an entry followed by anything but its exit: incomplete
            open_entry = None
        if tap.kind is _ENTRY:
            open_entry = _one_tap_leg(ENTRY_ONLY, tap, data)
        elif tap.kind is _EXIT:
            legs.append(_one_tap_leg(EXIT_ONLY, tap, data))
        else:
            legs.append(_one_tap_leg(BOARD, tap, data))
    if open_entry is not None:
        limit = open_entry.departure + incomplete_after(open_entry)
        if as_of is None or as_of >= limit:
            legs.append(open_entry)
    return legs


def incomplete_after(entry: Leg) -> timedelta:
    """How long an entry waits for its exit (its maximum fare row's limit, else the feed's)."""
    return entry.data.index.incomplete_after_entry(entry.network_id, entry.from_stop)


def _one_tap_leg(kind: LegKind, tap: Tap, data: FareData) -> Leg:
    route = data.routes.get(tap.route_id) if tap.route_id is not None else None
    if route is not None:  # the route says both
        network_id, operator_id = route.network_id, tap.operator_id or route.agency_id
    else:  # the stop says both (tap operator, else the stop's, else the first agency)
        network_id = data.index.network_at_stop(tap.stop_id)
        operator_id = tap.operator_id or data.index.operator_at_stop(tap.stop_id)
    return Leg(
        kind, tap, None, data, network_id=network_id, operator_id=operator_id, route_id=tap.route_id
    )


def _trip(entry: Leg, exit_tap: Tap) -> Leg:
    return Leg(
        TRIP,
        entry.first_tap,
        exit_tap,
        entry.data,
        network_id=_network(entry.data, entry.first_tap, exit_tap),
        operator_id=entry.operator_id,
        route_id=entry.route_id,
    )


def _network(data: FareData, tap: Tap, exit_tap: Tap | None) -> str | None:
    """The leg's fare network: its route's, else the network serving both ends, else the
    feed's only network."""
    route_id = tap.route_id or (exit_tap.route_id if exit_tap else None)
    if route_id is not None:
        route = data.routes.get(route_id)
        if route is not None:
            return route.network_id
    index = data.index
    candidates = index.networks_for_stop(tap.stop_id)
    if exit_tap is not None and len(candidates) > 1:
        at_exit = index.networks_for_stop(exit_tap.stop_id)
        candidates = tuple(n for n in candidates if n in at_exit) or candidates
    if candidates:
        return candidates[0]
    return index.only_network_id
