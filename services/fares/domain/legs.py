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

    def __init__(  # noqa: PLR0917 - one per leg: a class called with keywords packs them first
        self,
        kind: LegKind,
        first_tap: Tap,
        last_tap: Tap | None,
        data: FareData,
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
    # The open entry: its tap, fare data, network, operator and how long it waits. Its Leg
    # is made only if it turns out incomplete (usually its exit comes, and makes a trip).
    entry: Tap | None = None
    entry_data: FareData | None = None
    entry_network: str | None = None
    entry_operator = ""
    entry_waits = timedelta(0)
    single = len(versions.versions) == 1 and bool(taps)
    if single:
        versions.version_at(taps[0].tapped_at)  # raises when before the only version
    for tap in taps:
        data = versions.versions[0] if single else versions.version_at(tap.tapped_at)
        kind = tap.kind
        if entry is not None and entry_data is not None:
            if kind is _EXIT and tap.tapped_at - entry.tapped_at <= entry_waits:
                legs.append(_trip(entry, tap, entry_data, entry_operator))
                entry = None
                continue
            # An entry followed by anything but its exit: incomplete.
            legs.append(_leg(ENTRY_ONLY, entry, entry_data, entry_network, entry_operator))
            entry = None
        network_id, operator_id = _network_and_operator(tap, data)
        if kind is _ENTRY:
            entry, entry_data, entry_network, entry_operator = tap, data, network_id, operator_id
            entry_waits = data.index.incomplete_after_entry(network_id, tap.stop_id, tap.tapped_at)
        else:
            legs.append(
                _leg(EXIT_ONLY if kind is _EXIT else BOARD, tap, data, network_id, operator_id)
            )
    last_is_over = entry is not None and (as_of is None or as_of >= entry.tapped_at + entry_waits)
    if entry is not None and entry_data is not None and last_is_over:
        legs.append(_leg(ENTRY_ONLY, entry, entry_data, entry_network, entry_operator))
    return legs


def _network_and_operator(tap: Tap, data: FareData) -> tuple[str | None, str]:
    """The network and operator of a tap: its route's (the tap's operator first), else the
    stop's (tap operator, else the stop's, else the first agency)."""
    route = data.routes.get(tap.route_id) if tap.route_id is not None else None
    if route is not None:
        return route.network_id, tap.operator_id or route.agency_id
    network_id, operator_id = data.index.network_and_operator_at_stop(tap.stop_id)
    return network_id, tap.operator_id or operator_id


def _leg(kind: LegKind, tap: Tap, data: FareData, network_id: str | None, operator_id: str) -> Leg:
    """A one-tap leg (board, or an incomplete entry or exit)."""
    return Leg(kind, tap, None, data, network_id, operator_id, tap.route_id)


def _trip(entry: Tap, exit_tap: Tap, data: FareData, operator_id: str) -> Leg:
    return Leg(
        TRIP, entry, exit_tap, data, _network(data, entry, exit_tap), operator_id, entry.route_id
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
