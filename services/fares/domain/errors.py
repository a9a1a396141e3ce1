"""Domain errors of the fare engine, each with a stable `code`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clearway.errors import ClearwayError, ErrorKind


class FaresError(ClearwayError):
    """Base of every fare-engine error; `code` is stable and machine-readable."""

    code = "FARES_ERROR"


class QuoteError(FaresError):
    """A quote or close request that cannot be answered as asked; `code` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


class CatchUpTimeoutError(FaresError):
    """The taps published so far were not all priced in time; nothing was closed."""

    code = "CATCH_UP_TIMEOUT"
    kind = ErrorKind.DEADLINE_EXCEEDED


@dataclass(frozen=True, slots=True)
class Problem:
    """One defect found in a feed: where (file, line, field) and what."""

    file: str
    line: int  # 1-based physical line of the CSV record; 0 when the whole file is at fault
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class FeedError(FaresError):
    """The fare data is broken; the feed is refused as a whole."""

    code = "FEED_INVALID"

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        shown = "; ".join(str(p) for p in self.problems[:10])
        more = f" (+{len(self.problems) - 10} more)" if len(self.problems) > 10 else ""
        super().__init__(f"feed refused, {len(self.problems)} problem(s): {shown}{more}")


class UnknownStopError(FaresError):
    """A tap names a stop the fare data does not know."""

    code = "UNKNOWN_STOP"

    def __init__(self, stop_id: str) -> None:
        self.stop_id = stop_id
        super().__init__(f"unknown stop {stop_id!r}")


class UnknownRouteError(FaresError):
    """A tap names a route the fare data does not know."""

    code = "UNKNOWN_ROUTE"

    def __init__(self, route_id: str) -> None:
        self.route_id = route_id
        super().__init__(f"unknown route {route_id!r}")


class NaiveTimeError(FaresError):
    """A tap time carries no UTC offset; pricing needs timezone-aware times."""

    code = "NAIVE_TIME"

    def __init__(self, tap_id: str) -> None:
        self.tap_id = tap_id
        super().__init__(f"tap {tap_id!r} has a time without a UTC offset")


class NoFareVersionError(FaresError):
    """No fare data version is in force on a tap's service day."""

    code = "NO_FARE_VERSION"
