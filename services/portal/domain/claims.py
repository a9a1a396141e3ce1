"""Caps progress and missing-exit claims as a traveller sees them, and the stops a claim
may name (from the GTFS feed's stops.txt: the portal holds no other fare data)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from clearway.money import Money


@dataclass(frozen=True, slots=True)
class CapView:
    """One cap that counts the card, and how much of it is used."""

    cap_id: str
    name: str
    period: str  # "day" or "week"
    amount: Money
    spent: Money
    remaining: Money
    summary: str  # "£6.40 of today's £8.90 cap", written by fares

    @property
    def reached(self) -> bool:
        """True once the cap is used up (further travel in its period is free)."""
        return self.amount.amount_minor > 0 and self.remaining.amount_minor <= 0


@dataclass(frozen=True, slots=True)
class CapsView:
    """Today's and this week's caps of a card."""

    service_day: str
    week_start: str
    caps: tuple[CapView, ...]


class ClaimState(StrEnum):
    """Where a claim stands."""

    PENDING = "pending"
    REFUNDED = "refunded"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class ClaimView:
    """A missing-exit claim and its outcome."""

    claim_id: str
    journey_id: str
    entry_stop: str
    entry_at: datetime | None
    exit_stop: str
    exited_at: datetime | None
    exited_at_estimated: bool
    state: ClaimState
    reason: str
    claimed_charge: Money
    refund: Money
    created_at: datetime | None

    @property
    def outcome(self) -> str:
        """'Refunded', 'Not refunded', 'Being checked'."""
        return {
            ClaimState.PENDING: "Being checked",
            ClaimState.REFUNDED: "Refunded",
            ClaimState.REJECTED: "Not refunded",
        }[self.state]


@dataclass(frozen=True, slots=True)
class Stop:
    """A stop a traveller may name as where they left."""

    stop_id: str
    name: str


def load_stops_of(feed_dirs: list[Path]) -> tuple[Stop, ...]:
    """The stops of every feed version named (a stop in several once, by name)."""
    stops = {stop.stop_id: stop for feed in feed_dirs for stop in load_stops(feed)}
    return tuple(sorted(stops.values(), key=lambda s: (s.name.casefold(), s.stop_id)))


def load_stops(feed_dir: Path) -> tuple[Stop, ...]:
    """The stops of a GTFS feed (its stops.txt), by name; none when there is no file.

    Stops and stations only (location_type empty, 0 or 1): entrances, nodes and boarding
    areas are left out, and so are rows without a name.
    """
    path = feed_dir / "stops.txt"
    if not path.is_file():
        return ()
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    stops = {
        row["stop_id"].strip(): Stop(row["stop_id"].strip(), (row.get("stop_name") or "").strip())
        for row in rows
        if (row.get("stop_id") or "").strip()
        and (row.get("stop_name") or "").strip()
        and (row.get("location_type") or "0").strip() in {"", "0", "1"}
    }
    return tuple(sorted(stops.values(), key=lambda s: (s.name.casefold(), s.stop_id)))
