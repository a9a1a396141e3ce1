"""A realistic synthetic day of taps for a network described by a GTFS feed. Pure."""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from clearway.events.v1 import events_pb2
from services.fares.domain.model import FareData

KINDS = {
    "entry": events_pb2.TAP_KIND_ENTRY,
    "exit": events_pb2.TAP_KIND_EXIT,
    "board": events_pb2.TAP_KIND_BOARD,
}


@dataclass(frozen=True, slots=True)
class Line:
    """A route a traveller can ride: gated (entry/exit at stations) or a bus (one board tap)."""

    route_id: str
    operator_id: str
    stop_ids: tuple[str, ...]
    gated: bool


@dataclass(frozen=True, slots=True)
class Mix:
    """How often the day goes wrong on purpose, and which shares of cards are concession
    cards (every tap of a senior or youth card carries its rider category)."""

    missing_exit: float = 0.05
    malformed: float = 0.03
    resend: float = 0.02
    journeys_per_card: tuple[int, int] = (1, 4)
    senior: float = 0.06
    youth: float = 0.04


@dataclass(slots=True)
class SimulatedDay:
    """The taps of the day, per validator device, in device order (sequence numbers)."""

    service_day: date
    by_device: dict[str, list[events_pb2.Tap]] = field(default_factory=dict)
    malformed: int = 0
    resent: int = 0
    missing_exits: int = 0

    def total(self) -> int:
        """How many taps will be sent (resends included)."""
        return sum(len(taps) for taps in self.by_device.values())

    def devices(self) -> list[SimulatedDevice]:
        """The validators that tapped this day, as the registry must know them to take their
        taps: each with its operator and the stops and routes it tapped at."""
        found = []
        for device_id, taps in sorted(self.by_device.items()):
            operators = {t.operator_id for t in taps if t.operator_id}
            found.append(
                SimulatedDevice(
                    device_id,
                    min(operators, default=""),
                    tuple(sorted({t.stop_id for t in taps if t.stop_id})),
                    tuple(sorted({t.route_id for t in taps if t.route_id})),
                )
            )
        return found


def lines_of(feed: FareData) -> list[Line]:
    """Every route with at least two stops; routes whose stops carry no fare area are buses."""
    stops_of: dict[str, list[str]] = defaultdict(list)
    for stop_id, route_ids in sorted(feed.stop_routes.items()):
        for route_id in route_ids:
            stops_of[route_id].append(stop_id)
    result = []
    for route_id, stop_ids in sorted(stops_of.items()):
        route = feed.routes.get(route_id)
        if route is None or len(stop_ids) < 2:
            continue
        gated = all(feed.stops[s].area_ids for s in stop_ids)
        result.append(Line(route_id, route.agency_id, tuple(stop_ids), gated))
    return result


def card_token(seed: int, index: int) -> str:
    """A stable, token-shaped card id (never a card number)."""
    digest = hashlib.sha256(f"clearway-sim:{seed}:{index}".encode()).hexdigest()[:20]
    return f"tok_{digest}"


def _tap(
    card: str, at: datetime, stop_id: str, kind: str, line: Line, *, category: str
) -> events_pb2.Tap:
    tap = events_pb2.Tap(
        device_id=_device(line, stop_id),
        card_token=card,
        stop_id=stop_id,
        kind=KINDS[kind],
        route_id="" if line.gated else line.route_id,
        operator_id=line.operator_id,
        utc_offset_minutes=int((at.utcoffset() or timedelta()).total_seconds() // 60),
        rider_category_id=category,
    )
    tap.tapped_at.FromDatetime(at)
    return tap


def _rider_category(rng: random.Random, mix: Mix, feed: FareData) -> str:
    """SENIOR, YOUTH or "" (the feed's default category) for the next card, by `mix`; ""
    when the feed does not declare the category drawn."""
    draw = rng.random()  # one draw per card, whatever the shares: later cards keep theirs
    if draw < mix.senior:
        category = "SENIOR"
    elif draw < mix.senior + mix.youth:
        category = "YOUTH"
    else:
        return ""
    return category if category in feed.rider_categories else ""


def _device(line: Line, stop_id: str) -> str:
    return f"gate-{line.operator_id}-{stop_id}" if line.gated else f"bus-{line.route_id}"


@dataclass(frozen=True, slots=True)
class SimulatedDevice:
    """A validator of the simulated network, as the device registry is to know it."""

    device_id: str
    operator_id: str
    stop_ids: tuple[str, ...]
    route_ids: tuple[str, ...]


def devices_of(feed: FareData) -> list[SimulatedDevice]:
    """Every validator the simulator may use: a gate per operator and station, a reader per
    bus route (riding the route, it taps at any of its stops)."""
    stops: dict[tuple[str, str], set[str]] = defaultdict(set)
    routes: dict[tuple[str, str], set[str]] = defaultdict(set)
    for line in lines_of(feed):
        for stop_id in line.stop_ids:
            device = (_device(line, stop_id), line.operator_id)
            stops[device].add(stop_id)
            if not line.gated:
                routes[device].add(line.route_id)
    return [
        SimulatedDevice(device_id, operator, tuple(sorted(stops[key])), tuple(sorted(routes[key])))
        for key in sorted(stops)
        for device_id, operator in [key]
    ]


def simulate_day(
    feed: FareData, service_day: date, cards: int, seed: int = 7, mix: Mix | None = None
) -> SimulatedDay:
    """Journeys for `cards` cards on `service_day`, with deliberate faults and concession
    cards (rider categories SENIOR and YOUTH, when the feed declares them) per `mix`."""
    mix = mix or Mix()
    rng = random.Random(seed)
    # Rider categories come from their own sequence, so the rest of the day is the same
    # taps for the same seed whatever the concession shares.
    categories = random.Random(seed + 1)
    lines = lines_of(feed)
    if not lines:
        raise ValueError("the feed has no route with two or more stops to simulate")
    day = SimulatedDay(service_day)
    raw: list[events_pb2.Tap] = []
    start_of_day = datetime.combine(service_day, time(6, 0), feed.timezone)
    for index in range(cards):
        card = card_token(seed, index)
        category = _rider_category(categories, mix, feed)
        at = start_of_day + timedelta(minutes=rng.randrange(0, 12 * 60))
        for _ in range(rng.randint(*mix.journeys_per_card)):
            line = rng.choice(lines)
            origin, destination = rng.sample(line.stop_ids, 2)
            if line.gated:
                raw.append(_tap(card, at, origin, "entry", line, category=category))
                at += timedelta(minutes=rng.randint(8, 40))
                if rng.random() < mix.missing_exit:
                    day.missing_exits += 1
                else:
                    raw.append(_tap(card, at, destination, "exit", line, category=category))
            else:
                raw.append(_tap(card, at, origin, "board", line, category=category))
                at += timedelta(minutes=rng.randint(5, 25))
            at += timedelta(minutes=rng.randint(20, 180))
            if at.time() > time(23, 30):
                break
    for tap in raw:
        if rng.random() < mix.malformed:
            _break(tap, rng)
            day.malformed += 1
    raw.sort(key=lambda t: (t.device_id, t.tapped_at.ToNanoseconds(), t.card_token))
    sequence: dict[str, int] = defaultdict(int)
    for tap in raw:
        sequence[tap.device_id] += 1
        tap.sequence_number = sequence[tap.device_id]
        day.by_device.setdefault(tap.device_id, []).append(tap)
        if rng.random() < mix.resend:
            resend = events_pb2.Tap()
            resend.CopyFrom(tap)
            day.by_device[tap.device_id].append(resend)
            day.resent += 1
    return day


def _break(tap: events_pb2.Tap, rng: random.Random) -> None:
    """Make `tap` malformed the way real validators do."""
    fault = rng.choice(["no_card", "raw_pan", "no_kind", "no_stop"])
    if fault == "no_card":
        tap.card_token = ""
    elif fault == "raw_pan":
        tap.card_token = "4111111111111111"
    elif fault == "no_kind":
        tap.kind = events_pb2.TAP_KIND_UNSPECIFIED
    else:
        tap.stop_id = ""
