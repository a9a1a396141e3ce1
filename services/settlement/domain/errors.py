"""Domain errors of settlement, each with a stable `code` the entrypoints report."""

from __future__ import annotations

from clearway.errors import ClearwayError, ErrorKind


class SettlementError(ClearwayError, ValueError):
    """Base of settlement's domain errors."""

    code = "SETTLEMENT_ERROR"


class InvalidJourneyError(SettlementError):
    """A priced journey revision that cannot be posted; `code` says why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}", code=code)
        self.detail = detail


class InvalidPeriodError(SettlementError):
    """A settlement period id that is not a YYYY-MM-DD service day."""

    code = "INVALID_PERIOD_ID"


class MissingPartyError(SettlementError):
    """A request that names no party."""

    code = "MISSING_PARTY_ID"


class InvalidPartyError(SettlementError):
    """A party id that is not `<kind>:<name>` as the scheme file writes them."""

    code = "INVALID_PARTY_ID"


class MixedCurrencyError(SettlementError):
    """Entries of one statement or period are in more than one currency."""

    code = "MIXED_CURRENCY"
    kind = ErrorKind.FAILED_PRECONDITION


class StatementNotFoundError(SettlementError):
    """No statement for this party in this period (not closed, or no entries)."""

    code = "STATEMENT_NOT_FOUND"
    kind = ErrorKind.NOT_FOUND


class ConsumerLaggingError(SettlementError):
    """The journeys consumer has not caught up; closing now would miss revisions."""

    code = "CONSUMER_LAGGING"
    kind = ErrorKind.UNAVAILABLE


class InvalidBenefitPostingError(SettlementError):
    """A benefit posting (a redemption or a reward) that cannot be settled; `code` says
    why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}", code=code)
        self.detail = detail
