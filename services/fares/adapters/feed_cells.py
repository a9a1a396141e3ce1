"""Cell parsing of feed files: times, dates, integers, decimals, money and enumerations.

Pure: a FeedRow holds one record's values; each reader returns the typed value, or None
after reporting a Problem (file, line, field, message) for a missing or malformed cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from services.fares.domain.errors import Problem
from services.fares.domain.fare_rules import CapPeriod, ExitWithoutEntry, Rounding, TimeframeDate

E = TypeVar("E", CapPeriod, Rounding, ExitWithoutEntry, TimeframeDate)

MINOR_DIGITS = {"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0, "BHD": 3, "KWD": 3, "TND": 3}
"""ISO 4217 currencies whose minor unit is not 1/100 (every other one has 2 digits)."""


def parse_gtfs_time(text: str) -> int:
    """`H:MM:SS` or `HH:MM:SS` (hours may exceed 24) to seconds; ValueError if malformed."""
    parts = text.strip().split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a GTFS time (H:MM:SS): {text!r}")
    h, m, s = (int(p) for p in parts)
    if m > 59 or s > 59 or len(parts[1]) != 2 or len(parts[2]) != 2:
        raise ValueError(f"not a GTFS time (H:MM:SS): {text!r}")
    return h * 3600 + m * 60 + s


@dataclass
class FeedRow:
    """One record of a feed file: its values by column, and where to report a bad cell.

    Each reader returns None for a missing or bad cell, having reported the bad one.
    """

    file: str
    line: int
    values: dict[str, str]
    problems: list[Problem]

    def get(self, name: str) -> str | None:
        """The stripped value, None when the column is absent or the cell empty."""
        value = self.values.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def require(self, name: str) -> str:
        """The value; reports a missing one (and returns "")."""
        value = self.get(name)
        if value is None:
            self.problem(name, "required value is missing")
            return ""
        return value

    def problem(self, name: str, message: str) -> None:
        """Report a defect of cell `name` of this record."""
        self.problems.append(Problem(self.file, self.line, name, message))

    def integer(
        self, name: str, *, allowed: set[int] | None = None, minimum: int | None = None
    ) -> int | None:
        """An integer, optionally one of `allowed` or at least `minimum`."""
        value = self.get(name)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            self.problem(name, f"not an integer: {value!r}")
            return None
        if (allowed is not None and number not in allowed) or (
            minimum is not None and number < minimum
        ):
            self.problem(name, f"value {number} is not allowed")
            return None
        return number

    def decimal(self, name: str) -> Decimal | None:
        """A finite decimal number."""
        value = self.get(name)
        if value is None:
            return None
        try:
            number = Decimal(value)
        except InvalidOperation:
            self.problem(name, f"not a decimal number: {value!r}")
            return None
        if not number.is_finite():
            self.problem(name, f"not a finite number: {value!r}")
            return None
        return number

    def money(self, name: str, currency: str, *, required: bool = True) -> int | None:
        """A decimal amount in major units, converted exactly to minor units."""
        if self.get(name) is None:
            if required:
                self.problem(name, "required value is missing")
            return None
        number = self.decimal(name)
        if number is None:
            return None
        scaled = number.scaleb(MINOR_DIGITS.get(currency, 2))
        if scaled != scaled.to_integral_value():
            self.problem(name, f"{number} has more decimals than {currency} allows")
            return None
        return int(scaled)

    def gtfs_date(self, name: str) -> date | None:
        """A date written YYYYMMDD."""
        value = self.get(name)
        if value is None:
            return None
        try:
            if len(value) != 8 or not value.isdigit():
                raise ValueError(value)
            return date(int(value[:4]), int(value[4:6]), int(value[6:]))
        except ValueError:
            self.problem(name, f"not a date YYYYMMDD: {value!r}")
            return None

    def seconds(self, name: str, *, maximum: int | None = None) -> int | None:
        """A GTFS time (H:MM:SS, hours may exceed 24) in seconds, at most `maximum`."""
        value = self.get(name)
        if value is None:
            return None
        try:
            seconds = parse_gtfs_time(value)
        except ValueError as exc:
            self.problem(name, str(exc))
            return None
        if maximum is not None and seconds > maximum:
            self.problem(name, f"{value} is later than allowed")
            return None
        return seconds


def enum_cell(row: FeedRow, name: str, kind: type[E]) -> E | None:
    """A required value of the enumeration `kind`."""
    value = row.get(name)
    if value is None:
        row.problem(name, "required value is missing")
        return None
    try:
        return kind(value)
    except ValueError:
        row.problem(name, f"{value!r} is not one of {', '.join(k.value for k in kind)}")
        return None
