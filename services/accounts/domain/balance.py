"""Stored value: what a top-up may be, how journey revisions move a card's balance, and
when a card goes on (and comes off) the deny list.

Pure rules. A journey revision debits the difference between its charge and what the
journey already stood at; a balance may go negative (a journey is never refused at the
gate for lack of funds), and the card is deny-listed on the way below zero and taken off
on the way back to zero or above, only on those transitions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from clearway.errors import ClearwayError, ErrorKind
from clearway.money import Money

DEFAULT_MAX_TOP_UP_MINOR = 50_000  # 500.00 in the scheme's currency
MAX_IDEMPOTENCY_KEY_CHARS = 128
# The shape settlement accepts as a top_up_id, so an id made from it always settles.
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TOP_UP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class StoredValueError(ClearwayError):
    """A top-up or balance request that can never succeed; `code` says why."""

    kind = ErrorKind.INVALID_ARGUMENT


class BadAmountError(StoredValueError):
    """An amount that is not positive, or above the maximum top-up."""

    code = "BAD_AMOUNT"


class CurrencyMismatchError(StoredValueError):
    """An amount in another currency than the scheme's."""

    code = "CURRENCY_MISMATCH"


class IdempotencyKeyReusedError(StoredValueError):
    """The traveller's idempotency key was used for another card or amount."""

    code = "IDEMPOTENCY_KEY_REUSED"


class BadIdempotencyKeyError(StoredValueError):
    """A missing or malformed idempotency key."""

    code = "BAD_IDEMPOTENCY_KEY"


class MovementKind(StrEnum):
    """What moved a balance."""

    TOP_UP = "top_up"
    JOURNEY = "journey"
    REWARD = "reward"  # a reward credited to stored value (docs/benefits.md)


@dataclass(frozen=True, slots=True)
class StoredValueRules:
    """The scheme's stored-value settings."""

    currency: str = "GBP"
    max_top_up_minor: int = DEFAULT_MAX_TOP_UP_MINOR
    online_retailer_id: str = "retailer:cornershop"


def check_top_up_amount(amount_minor: int, currency: str, rules: StoredValueRules) -> Money:
    """A top-up amount a traveller may buy; BAD_AMOUNT or CURRENCY_MISMATCH otherwise."""
    if not currency:
        raise BadAmountError("amount (with its currency) is required")
    if currency != rules.currency:
        raise CurrencyMismatchError(f"top-ups are in {rules.currency}, got {currency[:8]!r}")
    if amount_minor <= 0:
        raise BadAmountError(f"a top-up must be positive, got {amount_minor}")
    if amount_minor > rules.max_top_up_minor:
        limit = Money(rules.max_top_up_minor, rules.currency)
        raise BadAmountError(f"a top-up is at most {limit}")
    return Money(amount_minor, currency)


def check_sold_amount(amount_minor: int, currency: str, rules: StoredValueRules) -> Money:
    """A top-up a retailer sold (the `topups` topic): positive, in the scheme's currency.
    No maximum: settlement posts whatever a retailer sold, and the balance must match."""
    if currency != rules.currency:
        raise CurrencyMismatchError(f"top-ups are in {rules.currency}, got {currency[:8]!r}")
    if amount_minor <= 0:
        raise BadAmountError(f"a top-up must be positive, got {amount_minor}")
    return Money(amount_minor, currency)


def check_idempotency_key(key: str) -> str:
    """`key` when it can key a top-up: 1-128 characters of [A-Za-z0-9._:-]."""
    if not key:
        raise BadIdempotencyKeyError("idempotency_key is required")
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise BadIdempotencyKeyError(
            f"idempotency_key is 1-{MAX_IDEMPOTENCY_KEY_CHARS} characters of [A-Za-z0-9._:-]"
        )
    return key


def is_top_up_id(value: str) -> bool:
    """True when `value` has the shape of a top-up id settlement accepts."""
    return _TOP_UP_ID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class JourneyStanding:
    """What a journey stands at in the balance: its latest applied revision and the
    charge that revision debited in total."""

    revision: int
    charged_minor: int


@dataclass(frozen=True, slots=True)
class ChargedRevision:
    """A revision as the balance sees it."""

    card_token: str
    journey_id: str
    revision: int
    charge_minor: int


@dataclass(frozen=True, slots=True)
class Movement:
    """A change of one card's balance, before it is posted (no balance yet)."""

    card_token: str
    kind: MovementKind
    source_id: str
    revision: int
    amount_minor: int


def journey_movements(
    standing: dict[str, JourneyStanding], revisions: Iterable[ChargedRevision]
) -> list[Movement]:
    """The balance movements of revisions applied in order to `standing` (updated in
    place): each revision newer than where its journey stands debits its charge minus the
    journey's charge so far (a lower charge refunds, a withdrawn journey refunds it all);
    an older or repeated revision moves nothing. A zero difference moves nothing either."""
    moves: list[Movement] = []
    for rev in revisions:
        now = standing.get(rev.journey_id)
        if now is not None and rev.revision <= now.revision:
            continue
        before = now.charged_minor if now is not None else 0
        standing[rev.journey_id] = JourneyStanding(rev.revision, rev.charge_minor)
        if rev.charge_minor != before:
            moves.append(
                Movement(
                    rev.card_token,
                    MovementKind.JOURNEY,
                    rev.journey_id,
                    rev.revision,
                    before - rev.charge_minor,
                )
            )
    return moves


@dataclass(frozen=True, slots=True)
class CardBalance:
    """A card's balance and whether it is on the deny list for unpaid debt."""

    balance_minor: int = 0
    deny_listed: bool = False


@dataclass(frozen=True, slots=True)
class PostedMovement:
    """A movement with the balance it left."""

    movement: Movement
    balance_after_minor: int


@dataclass(frozen=True, slots=True)
class DenyListTransition:
    """The card goes on (add) or comes off the deny list."""

    card_token: str
    add: bool


@dataclass(frozen=True, slots=True)
class Posting:
    """What posting movements did: each movement's balance, each card's new balance, and
    the deny-list transitions in order."""

    posted: tuple[PostedMovement, ...]
    balances: Mapping[str, CardBalance]
    transitions: tuple[DenyListTransition, ...]


def deny_list_transition(card_token: str, card: CardBalance) -> DenyListTransition | None:
    """The transition a balance calls for: on below zero, off at zero or above."""
    if card.balance_minor < 0 and not card.deny_listed:
        return DenyListTransition(card_token, add=True)
    if card.balance_minor >= 0 and card.deny_listed:
        return DenyListTransition(card_token, add=False)
    return None


def post_movements(balances: Mapping[str, CardBalance], moves: Sequence[Movement]) -> Posting:
    """Apply `moves` in order to the cards' balances (a card absent from `balances` starts
    at zero, not listed); a card's deny-list state changes only on a transition."""
    after = dict(balances)
    posted: list[PostedMovement] = []
    transitions: list[DenyListTransition] = []
    for move in moves:
        card = after.get(move.card_token, CardBalance())
        card = replace(card, balance_minor=card.balance_minor + move.amount_minor)
        change = deny_list_transition(move.card_token, card)
        if change is not None:
            transitions.append(change)
            card = replace(card, deny_listed=change.add)
        after[move.card_token] = card
        posted.append(PostedMovement(move, card.balance_minor))
    return Posting(tuple(posted), after, tuple(transitions))
