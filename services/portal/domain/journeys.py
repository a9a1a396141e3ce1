"""What a traveller sees of a priced journey, and its CSV form."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from clearway.money import Money

CURRENCY_SYMBOLS = {"GBP": "£", "EUR": "€"}
# A cell starting with one of these is a formula to a spreadsheet (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CSV_HEADER = (
    "service_day",
    "started_at",
    "journey_id",
    "legs",
    "charge",
    "currency",
    "caps_saved",
    "incomplete",
    "revision",
    "adjustment",
)


@dataclass(frozen=True, slots=True)
class LegView:
    """One leg as shown: where from, where to (empty when there was no exit), its times."""

    from_stop: str
    to_stop: str
    entry_at: datetime | None
    exit_at: datetime | None
    incomplete: bool
    fare_product: str = ""  # the GTFS fare product the leg was priced with
    transfer_rule: str = ""  # the transfer rule that discounted it, if any


@dataclass(frozen=True, slots=True)
class JourneyView:
    """The latest revision of one journey as a traveller sees it."""

    journey_id: str
    service_day: str
    legs: tuple[LegView, ...]
    charge: Money
    caps_saved: Money
    incomplete: bool
    revision: int
    delta: Money
    caps_applied: tuple[str, ...] = ()  # ids of the caps that reduced the charge

    @property
    def started_at(self) -> datetime | None:
        """When the first leg began (its exit when it had no entry)."""
        if not self.legs:
            return None
        return self.legs[0].entry_at or self.legs[0].exit_at

    @property
    def adjustment(self) -> Money | None:
        """What the latest revision changed the charge by; None for a first pricing."""
        return self.delta if self.revision > 1 else None

    @property
    def route(self) -> str:
        """The legs as 'from → to', separated by '; '."""
        return "; ".join(leg_text(leg) for leg in self.legs)


def leg_text(leg: LegView) -> str:
    """'A → B', or 'A → (no exit)' for a leg without one."""
    return f"{leg.from_stop} → {leg.to_stop or '(no exit)'}"


def format_money(money: Money) -> str:
    """'£2.50', '-£0.40'; the ISO code after the amount for currencies without a symbol."""
    sign = "-" if money.amount_minor < 0 else ""
    whole, minor = divmod(abs(money.amount_minor), 100)
    symbol = CURRENCY_SYMBOLS.get(money.currency)
    if symbol is None:
        return f"{sign}{whole}.{minor:02d} {money.currency}"
    return f"{sign}{symbol}{whole}.{minor:02d}"


def signed_money(money: Money) -> str:
    """An adjustment with its sign always shown: '+£0.50', '-£1.20'."""
    text = format_money(money)
    return text if money.amount_minor < 0 else "+" + text


def decimal_amount(money: Money) -> str:
    """'2.50', '-0.40': the amount in major units, for machines."""
    sign = "-" if money.amount_minor < 0 else ""
    whole, minor = divmod(abs(money.amount_minor), 100)
    return f"{sign}{whole}.{minor:02d}"


def spreadsheet_safe(text: str) -> str:
    """A text cell a spreadsheet will not run as a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_row(journey: JourneyView) -> tuple[str, ...]:
    """One CSV line of a journey, in CSV_HEADER's order."""
    started = journey.started_at
    adjustment = journey.adjustment
    return (
        spreadsheet_safe(journey.service_day),
        started.isoformat() if started else "",
        spreadsheet_safe(journey.journey_id),
        spreadsheet_safe(journey.route),
        decimal_amount(journey.charge),
        journey.charge.currency,
        decimal_amount(journey.caps_saved),
        "yes" if journey.incomplete else "no",
        str(journey.revision),
        decimal_amount(adjustment) if adjustment is not None else "",
    )


def journeys_csv(journeys: Iterable[JourneyView], *, header: bool = True) -> str:
    """The journeys as CSV text (RFC 4180, CRLF line ends), with the header line first."""
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(CSV_HEADER)
    writer.writerows(csv_row(j) for j in journeys)
    return out.getvalue()
