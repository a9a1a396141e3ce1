"""Tiny builders for taps in tests."""

from __future__ import annotations

from datetime import datetime
from itertools import count
from zoneinfo import ZoneInfo

from services.fares.domain import Tap, TapKind

LONDON = ZoneInfo("Europe/London")
_ids = count(1)


def at(text: str, tz: ZoneInfo = LONDON) -> datetime:
    """'2025-03-03 08:00' in `tz` (London by default)."""
    return datetime.fromisoformat(text).replace(tzinfo=tz)


def tap(
    when: str,
    stop: str,
    kind: str,
    *,
    card: str = "card-1",
    route: str | None = None,
    tap_id: str | None = None,
    tz: ZoneInfo = LONDON,
    category: str | None = None,
    media: str | None = None,
    operator: str | None = None,
) -> Tap:
    """A tap with a fresh, ordered id unless one is given."""
    return Tap(
        tap_id=tap_id or f"t{next(_ids):06d}",
        card_token=card,
        tapped_at=at(when, tz),
        stop_id=stop,
        kind=TapKind(kind),
        route_id=route,
        operator_id=operator,
        rider_category_id=category,
        fare_media_id=media,
    )


def trip(when_in: str, from_stop: str, when_out: str, to_stop: str, **kw: object) -> list[Tap]:
    """An entry and its exit."""
    return [tap(when_in, from_stop, "entry", **kw), tap(when_out, to_stop, "exit", **kw)]  # type: ignore[arg-type]


def bus(when: str, stop: str = "BUS_A1", route: str = "BUS_73", **kw: object) -> Tap:
    """A single on-board tap."""
    return tap(when, stop, "board", route=route, **kw)  # type: ignore[arg-type]
