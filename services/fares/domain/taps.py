"""Taps: what validators record, the fare engine's input."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class TapKind(StrEnum):
    """What a validator recorded: entering or leaving a paid area, or boarding a vehicle."""

    ENTRY = "entry"
    EXIT = "exit"
    BOARD = "board"


@dataclass(frozen=True, slots=True)
class Tap:
    """One card presented to one validator at one instant (`tapped_at` is timezone-aware)."""

    tap_id: str
    card_token: str
    tapped_at: datetime
    stop_id: str
    kind: TapKind
    route_id: str | None = None
    operator_id: str | None = None
    rider_category_id: str | None = None
    fare_media_id: str | None = None
