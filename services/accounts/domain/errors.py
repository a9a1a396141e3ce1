"""Domain errors of the accounts service, each with a stable `code`."""

from __future__ import annotations

from clearway.errors import ClearwayError


class AccountsError(ClearwayError):
    """Base of every accounts error; `code` is stable and machine-readable."""

    code = "ACCOUNTS_ERROR"


class MissingCardTokenError(AccountsError):
    """A request or an event names no card."""

    code = "MISSING_CARD_TOKEN"


class PageSizeError(AccountsError):
    """A page size that cannot be served (negative)."""

    code = "BAD_PAGE_SIZE"


class PageTokenError(AccountsError):
    """A page token that this service did not issue for this card, or that was altered."""

    code = "BAD_PAGE_TOKEN"


class InvalidJourneyError(AccountsError):
    """A `journeys` event that cannot be stored; `code` says why (it goes to the DLQ)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}", code=code)
        self.detail = detail
