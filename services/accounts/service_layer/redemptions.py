"""Redemptions at providers (docs/benefits.md): a provider's device signs a Redemption, and
the answer is immediate. Checked in the contract's order: the device and its signature,
the fields, the provider's categories, the card's entitlement, the scheme's limits, then
the idempotency key.

An authorised redemption is one PostgreSQL transaction: the entitlement's allowance for
the month (credited once, when first needed), the redemption, its ledger movement, the
scheme's budget use (its month row locked FOR UPDATE, so the council's budget is never
overspent) and a `BenefitPosting` in the outbox for settlement. Card tokens are never
logged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from clearway.benefits.v1 import benefits_pb2
from clearway.common.v1 import money_pb2
from clearway.events.v1 import events_pb2
from clearway.money import Money
from clearway.scheme.model import Party, PartyKind
from services.accounts.adapters import benefits_repository as repo
from services.accounts.adapters.benefits_repository import NewMovement, NewRedemption
from services.accounts.adapters.outbox import OutboxMessage, enqueue
from services.accounts.domain.entitlements import (
    EntitlementMovementKind,
    allowance_due,
    month_of,
)
from services.accounts.domain.redemptions import (
    Held,
    RedemptionInputError,
    RedemptionRefusedError,
    RedemptionRequest,
    StoredRedemption,
    authenticate_device,
    check_offered,
    check_redemption,
    check_spend,
    choose_entitlement,
    is_device_id,
    key_reused,
    presented_at,
    same_redemption,
)
from services.accounts.service_layer.benefits import BenefitsContext


@dataclass(frozen=True, slots=True)
class RedeemResult:
    """What Redeem answers (the first time, and on every retry with its key)."""

    redemption: StoredRedemption
    replayed: bool


def _requested_at(message: benefits_pb2.Redemption) -> datetime | None:
    """The till's `requested_at` (None when unset); BAD_REQUESTED_AT when the Timestamp is
    not a valid instant (out of its range)."""
    if not message.HasField("requested_at"):
        return None
    try:
        return message.requested_at.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise RedemptionInputError(
            "requested_at is not a valid instant", code="BAD_REQUESTED_AT"
        ) from None


class _KeyTakenMeanwhileError(Exception):
    """A concurrent call with the same key committed first: answer as its retry."""


def redemption_id_of(provider_id: str, idempotency_key: str) -> str:
    """A redemption's id, named by what makes it unique (the provider and the till's key):
    the same request always names the same redemption, so the posting settlement files
    line by line (`redemption:<id>`) is the same whenever and however often it is made."""
    digest = hashlib.sha256(f"{provider_id}\x00{idempotency_key}".encode()).hexdigest()
    return f"rdm_{digest[:32]}"


def redemption_posting(redemption: StoredRedemption, at: datetime, topic: str) -> OutboxMessage:
    """The `BenefitPosting` settlement posts once: the council owes the provider."""
    posting_id = f"redemption:{redemption.redemption_id}"
    posting = events_pb2.BenefitPosting(
        posting_id=posting_id,
        kind=events_pb2.BenefitPosting.KIND_REDEMPTION,
        funder_id=redemption.funder_id,
        provider_id=redemption.provider_id,
        amount=money_pb2.Money(
            amount_minor=redemption.amount.amount_minor, currency=redemption.amount.currency
        ),
        service_day=redemption.service_day.isoformat(),
        entitlement_scheme_id=redemption.scheme_id,
        category=redemption.category,
    )
    posting.at.FromDatetime(at)
    return OutboxMessage(topic, posting_id.encode(), posting.SerializeToString(deterministic=True))


@dataclass
class Redemptions:
    """The Redeem use case."""

    context: BenefitsContext

    async def redeem(
        self, device_id: str, key_id: str, payload: bytes, signature: bytes
    ) -> RedeemResult:
        """Authorise (or refuse) a device's signed redemption, once per provider and key."""
        context = self.context
        device = None
        if is_device_id(device_id):
            async with context.pool.acquire() as conn:
                device = await repo.device(conn, device_id)
        device = authenticate_device(device, key_id, payload, signature)
        try:
            message = benefits_pb2.Redemption.FromString(payload)
        except DecodeError:
            raise RedemptionInputError(
                "redemption is not a serialized Redemption", code="UNDECODABLE_REQUEST"
            ) from None
        request = check_redemption(
            message.card_token,
            message.category,
            amount_minor=message.amount.amount_minor,
            currency=message.amount.currency,
            idempotency_key=message.idempotency_key,
            entitlement_id=message.entitlement_id,
            scheme_currency=context.currency,
        )
        # The card was presented at the till's time: its service day is the redemption's.
        at = presented_at(_requested_at(message), context.now())
        day = context.service_day(at)
        provider = context.scheme.party(device.provider_id, day)
        if provider is None or provider.kind is not PartyKind.PROVIDER:
            raise RedemptionRefusedError(
                "the device's provider is not a provider of the scheme today",
                code="UNKNOWN_PROVIDER",
            )
        async with context.pool.acquire() as conn:
            earlier = await repo.redemption_by_key(conn, provider.party_id, request.idempotency_key)
        if earlier is not None and same_redemption(earlier, request):
            return RedeemResult(earlier, replayed=True)
        check_offered(provider, request.category)
        try:
            stored = await self._authorise(
                provider, device.device_id, request, at, reused=earlier is not None
            )
        except _KeyTakenMeanwhileError:
            async with context.pool.acquire() as conn:
                earlier = await repo.redemption_by_key(
                    conn, provider.party_id, request.idempotency_key
                )
            if earlier is None or not same_redemption(earlier, request):
                raise key_reused() from None
            return RedeemResult(earlier, replayed=True)
        context.relay_soon()
        return RedeemResult(stored, replayed=False)

    async def _authorise(
        self,
        provider: Party,
        device_id: str,
        request: RedemptionRequest,
        at: datetime,
        *,
        reused: bool,
    ) -> StoredRedemption:
        context = self.context
        day = context.service_day(at)
        month = month_of(day)
        async with context.pool.acquire() as conn, conn.transaction():
            traveller_id = await repo.card_owner(conn, request.card_token)
            if traveller_id is None:
                raise RedemptionRefusedError(
                    "the card's account holds no entitlement for this", code="NO_ENTITLEMENT"
                )
            await repo.expire_due(conn, day, at, traveller_id=traveller_id)
            held = [
                Held(e, context.scheme.entitlement_scheme(e.scheme_id, day))
                for e in await repo.entitlements_of(conn, traveller_id, lock=True)
            ]
            chosen = choose_entitlement(held, request.category, day, request.entitlement_id)
            entitlement, scheme = chosen.entitlement, chosen.scheme
            assert scheme is not None  # choose_entitlement picks one with its scheme
            due = allowance_due(scheme, entitlement, day)
            if due:
                await repo.add_movement(
                    conn,
                    NewMovement(
                        entitlement.entitlement_id,
                        EntitlementMovementKind.ALLOWANCE,
                        month,
                        month,
                        Money(due, context.currency),
                        at,
                    ),
                )
            balances = await repo.month_balances(conn, [entitlement.entitlement_id], month)
            balance = balances.get(entitlement.entitlement_id, (0, False))[0]
            used = await repo.lock_budget(conn, scheme.scheme_id, month)
            amount = request.amount.amount_minor
            check_spend(scheme, amount, balance, used)
            if reused:
                raise key_reused()
            stored = StoredRedemption(
                redemption_id_of(provider.party_id, request.idempotency_key),
                provider.party_id,
                request.card_token,
                request.category,
                request.amount,
                entitlement.entitlement_id,
                scheme.scheme_id,
                scheme.funder_id,
                day,
                balance - amount,
            )
            new = NewRedemption(stored, request.idempotency_key, device_id, traveller_id, month, at)
            if not await repo.insert_redemption(conn, new):
                raise _KeyTakenMeanwhileError
            await repo.add_movement(
                conn,
                NewMovement(
                    entitlement.entitlement_id,
                    EntitlementMovementKind.REDEMPTION,
                    stored.redemption_id,
                    month,
                    -request.amount,
                    at,
                    provider_id=provider.party_id,
                    category=request.category,
                ),
            )
            await repo.use_budget(conn, scheme.scheme_id, month, amount)
            await enqueue(conn, [redemption_posting(stored, at, context.benefits_topic)])
        return stored
