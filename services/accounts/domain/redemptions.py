"""Redemptions at providers (docs/benefits.md): what a device's signed request must hold,
which of the card's entitlements pays, and the scheme's limits, checked in the order the
contract gives (device, fields, the provider's categories, the entitlement, the scheme's
rules, the idempotency key).

Pure rules; the device's signature is verified with clearway.device_keys.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from clearway.card_tokens import card_token_form
from clearway.device_keys import DeviceAuthError, DeviceRevokedError, verify_signature
from clearway.errors import ClearwayError, ErrorKind
from clearway.money import Money
from clearway.scheme.model import EntitlementScheme, Party
from services.accounts.domain.balance import check_idempotency_key
from services.accounts.domain.entitlements import Entitlement, EntitlementStatus

# What a device signs: this context, then the serialized Redemption, exactly as sent.
REDEMPTION_CONTEXT = b"clearway.benefits.v1.Redemption\x00"
MAX_REDEMPTION_MINOR = 1_000_000_000  # far above any visit; keeps sums inside bigint
_CATEGORY = re.compile(r"[a-z0-9][a-z0-9_]{0,63}")
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class RedemptionInputError(ClearwayError):
    """A redemption field that can never be right; `code` says which."""

    kind = ErrorKind.INVALID_ARGUMENT


MAX_REQUEST_AGE = timedelta(hours=72)  # a till that lost its link sends what it queued
MAX_REQUEST_AHEAD = timedelta(minutes=5)  # a till's clock may run a little fast


def presented_at(requested_at: datetime | None, now: datetime) -> datetime:
    """When the card was presented: the device's `requested_at` (None: `now`), at most
    `MAX_REQUEST_AGE` old and `MAX_REQUEST_AHEAD` ahead; BAD_REQUESTED_AT otherwise."""
    if requested_at is None:
        return now
    if not now - MAX_REQUEST_AGE <= requested_at <= now + MAX_REQUEST_AHEAD:
        raise RedemptionInputError(
            "requested_at must be at most 72 hours old and 5 minutes ahead of the server",
            code="BAD_REQUESTED_AT",
        )
    return requested_at


class RedemptionRefusedError(ClearwayError):
    """A well-formed redemption the rules refuse; `code` says which rule."""

    kind = ErrorKind.FAILED_PRECONDITION


def is_device_id(value: str) -> bool:
    """True when `value` can name a provider device: 1-128 of [A-Za-z0-9._:-]."""
    return _DEVICE_ID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class RedemptionRequest:
    """A redemption's fields, checked."""

    card_token: str
    category: str
    amount: Money
    idempotency_key: str
    entitlement_id: str = ""


def check_redemption(
    card_token: str,
    category: str,
    *,
    amount_minor: int,
    currency: str,
    idempotency_key: str,
    entitlement_id: str,
    scheme_currency: str,
) -> RedemptionRequest:
    """The request when every field can be used; INVALID_ARGUMENT with BAD_CARD_TOKEN,
    BAD_CATEGORY, BAD_AMOUNT, CURRENCY_MISMATCH or BAD_IDEMPOTENCY_KEY otherwise (the card
    token is never echoed)."""
    if card_token_form(card_token) is None:
        raise RedemptionInputError("card_token is not a card token", code="BAD_CARD_TOKEN")
    if not _CATEGORY.fullmatch(category):
        raise RedemptionInputError(
            "category is 1-64 of [a-z0-9_], e.g. swimming", code="BAD_CATEGORY"
        )
    if not currency or amount_minor <= 0 or amount_minor > MAX_REDEMPTION_MINOR:
        raise RedemptionInputError("amount must be positive, with its currency", code="BAD_AMOUNT")
    if currency != scheme_currency:
        raise RedemptionInputError(
            f"redemptions are in {scheme_currency}, got {currency[:8]!r}",
            code="CURRENCY_MISMATCH",
        )
    key = check_idempotency_key(idempotency_key)
    return RedemptionRequest(
        card_token, category, Money(amount_minor, currency), key, entitlement_id[:128]
    )


def check_offered(provider: Party, category: str) -> None:
    """Nothing when the provider sells `category`; CATEGORY_NOT_OFFERED otherwise."""
    if category not in provider.categories:
        raise RedemptionRefusedError(
            f"{provider.party_id} does not offer {category}", code="CATEGORY_NOT_OFFERED"
        )


@dataclass(frozen=True, slots=True)
class Held:
    """One of the card's account's entitlements with its scheme (None when the scheme is
    no longer in force)."""

    entitlement: Entitlement
    scheme: EntitlementScheme | None

    def allows(self, category: str) -> bool:
        """Whether its scheme may buy `category`."""
        return self.scheme is not None and category in self.scheme.categories


_REFUSALS = {
    EntitlementStatus.EXPIRED: ("ENTITLEMENT_EXPIRED", "the entitlement has expired"),
    EntitlementStatus.REVOKED: ("ENTITLEMENT_REVOKED", "the entitlement was revoked"),
}


def _refuse_inactive(held: Held, day: date) -> RedemptionRefusedError:
    code, message = _REFUSALS[held.entitlement.status_on(day)]
    return RedemptionRefusedError(message, code=code)


def choose_entitlement(
    held: Sequence[Held], category: str, day: date, entitlement_id: str = ""
) -> Held:
    """Which entitlement pays for `category` on `day`: the one named, else the one (the
    first to end) that is active and allows it. Refused, most telling reason first:
    NO_ENTITLEMENT (none; or the named one is not the card's), then for an entitlement
    allowing the category that is no longer active ENTITLEMENT_EXPIRED / _REVOKED, then
    CATEGORY_NOT_ALLOWED when active ones do not allow it."""
    candidates = [h for h in held if h.scheme is not None]
    if entitlement_id:
        candidates = [h for h in candidates if h.entitlement.entitlement_id == entitlement_id]
    if not candidates:
        raise RedemptionRefusedError(
            "the card's account holds no entitlement for this", code="NO_ENTITLEMENT"
        )
    current = [h for h in candidates if h.entitlement.covers(day)]
    spendable = [h for h in current if h.allows(category)]
    if spendable:
        return min(spendable, key=lambda h: (h.entitlement.valid_to, h.entitlement.entitlement_id))
    ended = [h for h in candidates if h.entitlement.status_on(day) is not EntitlementStatus.ACTIVE]
    latest_first = sorted(ended, key=lambda h: h.entitlement.valid_to, reverse=True)
    allowing = [h for h in latest_first if h.allows(category)]
    if allowing:
        raise _refuse_inactive(allowing[0], day)
    if current:
        raise RedemptionRefusedError(
            f"the entitlement does not pay for {category}", code="CATEGORY_NOT_ALLOWED"
        )
    if latest_first:
        raise _refuse_inactive(latest_first[0], day)
    # Only grants that start later (a renewal after a revoked grant).
    raise RedemptionRefusedError("no entitlement is valid today", code="NO_ENTITLEMENT")


def check_spend(
    scheme: EntitlementScheme, amount_minor: int, balance_minor: int, budget_used_minor: int
) -> None:
    """Nothing when the scheme's rules let `amount_minor` be spent; OVER_VISIT_LIMIT,
    INSUFFICIENT_ENTITLEMENT (the month's balance) or BUDGET_EXHAUSTED (the council's
    monthly budget of the scheme) otherwise, in that order."""
    limit = scheme.per_visit_limit_minor
    if limit and amount_minor > limit:
        raise RedemptionRefusedError(
            f"one visit may spend at most {limit} minor units", code="OVER_VISIT_LIMIT"
        )
    if amount_minor > balance_minor:
        raise RedemptionRefusedError(
            f"{max(balance_minor, 0)} minor units are left this month",
            code="INSUFFICIENT_ENTITLEMENT",
        )
    if budget_used_minor + amount_minor > scheme.monthly_budget_minor:
        raise RedemptionRefusedError(
            f"the council's budget of {scheme.scheme_id} for this month is spent",
            code="BUDGET_EXHAUSTED",
        )


@dataclass(frozen=True, slots=True)
class StoredRedemption:
    """An authorised redemption as recorded."""

    redemption_id: str
    provider_id: str
    card_token: str
    category: str
    amount: Money
    entitlement_id: str
    scheme_id: str
    funder_id: str
    service_day: date
    balance_after_minor: int


def same_redemption(stored: StoredRedemption, request: RedemptionRequest) -> bool:
    """Whether a request repeats a recorded redemption (card, category, amount and the
    entitlement asked for, when it named one)."""
    return (
        stored.card_token == request.card_token
        and stored.category == request.category
        and stored.amount == request.amount
        and request.entitlement_id in ("", stored.entitlement_id)
    )


def key_reused() -> RedemptionRefusedError:
    """The refusal of a key used before for another redemption."""
    return RedemptionRefusedError(
        "this idempotency_key was used for another redemption; use a new key",
        code="IDEMPOTENCY_KEY_REUSED",
    )


@dataclass(frozen=True, slots=True)
class ProviderDevice:
    """A provider's point-of-service device as registered: one Ed25519 key."""

    device_id: str
    provider_id: str
    key_id: str
    public_key: bytes
    revoked: bool
    registered_at: datetime


def authenticate_device(
    device: ProviderDevice | None, key_id: str, payload: bytes, signature: bytes
) -> ProviderDevice:
    """The device, when `signature` is its key's signature of a redemption `payload`;
    UNKNOWN_DEVICE, DEVICE_REVOKED, UNKNOWN_KEY or BAD_SIGNATURE otherwise."""
    if device is None:
        raise DeviceAuthError("the device is not registered", code="UNKNOWN_DEVICE")
    if device.revoked:
        raise DeviceRevokedError("the device is revoked")
    if key_id != device.key_id:
        raise DeviceAuthError("the device has no key with this key_id", code="UNKNOWN_KEY")
    verify_signature(device.public_key, REDEMPTION_CONTEXT, payload, signature)
    return device
