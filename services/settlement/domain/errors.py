"""Domain errors of settlement, each with a stable `code` the entrypoints report."""

from __future__ import annotations


class SettlementError(ValueError):
    """Base of settlement's domain errors."""

    code = "SETTLEMENT_ERROR"


class InvalidJourneyError(SettlementError):
    """A priced journey revision that cannot be posted; `code` says why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class InvalidPeriodError(SettlementError):
    """A settlement period id that is not a YYYY-MM-DD service day."""

    code = "INVALID_PERIOD_ID"


class MixedCurrencyError(SettlementError):
    """Entries of one statement or period are in more than one currency."""

    code = "MIXED_CURRENCY"
