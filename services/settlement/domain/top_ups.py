"""A top-up of stored value sold by a retailer, as settlement sees it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from clearway.money import Money

from .settle import InvalidTopUpError

_TOP_UP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass(frozen=True, slots=True)
class TopUpSale:
    """A retailer sold `amount` of stored value (idempotent by `top_up_id`)."""

    top_up_id: str
    retailer_id: str
    amount: Money
    service_day: date

    def __post_init__(self) -> None:
        if not _TOP_UP_ID.match(self.top_up_id):
            raise InvalidTopUpError("INVALID_TOP_UP_ID", f"top_up_id {self.top_up_id!r}")
        if not self.retailer_id:
            raise InvalidTopUpError("MISSING_RETAILER", "retailer_id is empty")
        if self.amount.amount_minor <= 0:
            raise InvalidTopUpError("INVALID_AMOUNT", "a top-up amount must be positive")
