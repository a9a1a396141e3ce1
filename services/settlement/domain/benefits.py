"""A benefit posting as settlement sees it: a provider's redemption of an entitlement, or
a reward credited to a card's stored value (docs/benefits.md). Accounts authorises it;
settlement posts it once (by `posting_id`) under the scheme's parties of its service day
(`settle.benefit_position`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from clearway.money import Money

from .errors import InvalidBenefitPostingError

# A posting id is a line's source id and a key in the ledger: keep it plain (accounts
# writes "redemption:rdm_<hex>", "reward:rwd_<hex>").
_POSTING_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class BenefitKind(StrEnum):
    """What a benefit posting settles (also the `source` of its lines)."""

    REDEMPTION = "redemption"  # the funder owes the provider
    REWARD = "reward"  # the funder owes the scheme's traveller float


@dataclass(frozen=True, slots=True)
class BenefitPosting:
    """`funder_id` owes `amount` for a redemption at `provider_id`, or for a reward paid
    into stored value (idempotent by `posting_id`). The entitlement scheme, category and
    reward rule are carried for reconciliation; they do not change who owes what."""

    posting_id: str
    kind: BenefitKind
    funder_id: str
    amount: Money
    service_day: date
    provider_id: str = ""  # REDEMPTION only
    entitlement_scheme_id: str = ""  # REDEMPTION
    category: str = ""  # REDEMPTION: the service category bought
    reward_rule_id: str = ""  # REWARD

    def __post_init__(self) -> None:
        if not _POSTING_ID.match(self.posting_id):
            raise InvalidBenefitPostingError(
                "INVALID_POSTING_ID", f"posting_id {self.posting_id!r}"
            )
        if not isinstance(self.kind, BenefitKind):
            raise InvalidBenefitPostingError("UNKNOWN_KIND", f"kind {self.kind!r}")
        if not self.funder_id:
            raise InvalidBenefitPostingError("MISSING_FUNDER", "funder_id is empty")
        if self.kind is BenefitKind.REDEMPTION and not self.provider_id:
            raise InvalidBenefitPostingError("MISSING_PROVIDER", "a redemption needs a provider")
        if self.kind is BenefitKind.REWARD and self.provider_id:
            raise InvalidBenefitPostingError(
                "UNEXPECTED_PROVIDER", f"a reward is paid to no provider ({self.provider_id})"
            )
        if self.amount.amount_minor <= 0:
            raise InvalidBenefitPostingError(
                "INVALID_AMOUNT", f"amount {self.amount.amount_minor} must be positive"
            )
