"""gRPC servicers of accounts: AccountsService (journey history) and TravellerService
(accounts, sessions, cards). Parse, call the use case, reply.

The traveller is whoever the session token in `authorization: Bearer <token>` belongs to,
never a request field. Trace context, the server span, readiness and the mapping of domain
errors to a status and `reason-code` trailer are the shared interceptor's (clearway.rpc).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.common.v1.money_pb2 import Money
from clearway.errors import NotReadyError
from clearway.money import Money as MoneyValue
from clearway.rpc import Slot
from services.accounts.adapters.balance_book import MovementRow
from services.accounts.adapters.bank_charge_store import StoredBankCharge
from services.accounts.adapters.claim_repository import StoredClaim
from services.accounts.adapters.fares_caps import FaresCaps
from services.accounts.adapters.metrics import timed_history
from services.accounts.domain.balance import MovementKind
from services.accounts.domain.bank_charges import (
    BankChargeKind,
    BankChargeStatus,
    NoStoredValueError,
    is_bank_card,
    outstanding_minor,
)
from services.accounts.domain.caps import CapPeriod, CapsProgressUnavailableError
from services.accounts.domain.claims import BadExitTimeError, ClaimStatus
from services.accounts.domain.travellers import Card
from services.accounts.service_layer.bank_charging import BankCharging
from services.accounts.service_layer.claims import Claims
from services.accounts.service_layer.journey_history import JourneyHistory
from services.accounts.service_layer.stored_value import StoredValue
from services.accounts.service_layer.travellers import Travellers

_SERVICES = accounts_pb2.DESCRIPTOR.services_by_name
SERVICE_NAME = _SERVICES["AccountsService"].full_name
TRAVELLER_SERVICE_NAME = _SERVICES["TravellerService"].full_name
Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True, slots=True)
class AccountsPorts:
    """What the servicers talk to; exists once the service has started."""

    history: JourneyHistory
    travellers: Travellers
    stored_value: StoredValue
    # Disputes (missing-exit claims); None in tests that do not wire them.
    claims: Claims | None = None
    # Caps progress, asked of fares; None in tests that do not wire it.
    caps: FaresCaps | None = None
    # Bank-card mode (day charges, debt recovery); None in tests that do not wire it.
    bank: BankCharging | None = None


def bearer_token(context: Context) -> str | None:
    """The session token of `authorization: Bearer <token>`, if the call has one."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ").strip()
    return None


def _timestamp(at: Any) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def card_message(card: Card) -> accounts_pb2.Card:
    """A card as the API shows it."""
    return accounts_pb2.Card(
        card_token=card.card_token,
        form=card.form,
        label=card.label,
        added_at=_timestamp(card.added_at),
    )


_KINDS = {
    MovementKind.TOP_UP: accounts_pb2.BalanceMovement.KIND_TOP_UP,
    MovementKind.JOURNEY: accounts_pb2.BalanceMovement.KIND_JOURNEY,
    MovementKind.REWARD: accounts_pb2.BalanceMovement.KIND_REWARD,
}


def movement_message(row: MovementRow) -> accounts_pb2.BalanceMovement:
    """A balance movement as the API shows it."""
    return accounts_pb2.BalanceMovement(
        kind=_KINDS[row.kind],
        source_id=row.source_id,
        revision=row.revision,
        amount=Money(amount_minor=row.amount_minor, currency=row.currency),
        balance_after=Money(amount_minor=row.balance_after_minor, currency=row.currency),
        at=_timestamp(row.at),
    )


_CLAIM_STATUSES = {
    ClaimStatus.PENDING: accounts_pb2.Claim.STATUS_PENDING,
    ClaimStatus.REFUNDED: accounts_pb2.Claim.STATUS_REFUNDED,
    ClaimStatus.REJECTED: accounts_pb2.Claim.STATUS_REJECTED,
}


def claim_message(claim: StoredClaim) -> accounts_pb2.Claim:
    """A missing-exit claim as the API shows it."""
    message = accounts_pb2.Claim(
        claim_id=claim.claim_id,
        card_token=claim.card_token,
        journey_id=claim.journey_id,
        claimed_revision=claim.claimed_revision,
        claimed_charge=Money(amount_minor=claim.claimed_charge_minor, currency=claim.currency),
        entry_stop_id=claim.entry_stop_id,
        entry_at=_timestamp(claim.entry_at),
        exit_stop_id=claim.exit_stop_id,
        exited_at=_timestamp(claim.exited_at),
        exited_at_estimated=claim.exited_at_estimated,
        tap_id=claim.tap_id,
        status=_CLAIM_STATUSES[claim.status],
        reason=claim.reason,
        resulting_revision=claim.resulting_revision or 0,
        refund=Money(amount_minor=claim.refund_minor or 0, currency=claim.currency),
        created_at=_timestamp(claim.created_at),
    )
    if claim.resolved_at is not None:
        message.resolved_at.CopyFrom(_timestamp(claim.resolved_at))
    return message


_BANK_KINDS = {
    BankChargeKind.CHARGE: accounts_pb2.BankCharge.KIND_CHARGE,
    BankChargeKind.ADJUSTMENT: accounts_pb2.BankCharge.KIND_ADJUSTMENT,
    BankChargeKind.REFUND: accounts_pb2.BankCharge.KIND_REFUND,
}
_BANK_STATUSES = {
    BankChargeStatus.PENDING: accounts_pb2.BankCharge.STATUS_PENDING,
    BankChargeStatus.CHARGED: accounts_pb2.BankCharge.STATUS_CHARGED,
    BankChargeStatus.DECLINED: accounts_pb2.BankCharge.STATUS_DECLINED,
    BankChargeStatus.RECOVERING: accounts_pb2.BankCharge.STATUS_RECOVERING,
    BankChargeStatus.RECOVERED: accounts_pb2.BankCharge.STATUS_RECOVERED,
    BankChargeStatus.UNRECOVERED: accounts_pb2.BankCharge.STATUS_UNRECOVERED,
}


def bank_charge_message(charge: StoredBankCharge) -> accounts_pb2.BankCharge:
    """A bank charge as the API shows it (the next retry only while one is scheduled)."""
    message = accounts_pb2.BankCharge(
        charge_id=charge.charge_id,
        service_day=charge.service_day.isoformat(),
        kind=_BANK_KINDS[charge.kind],
        amount=Money(amount_minor=charge.amount_minor, currency=charge.currency),
        status=_BANK_STATUSES[charge.status],
        attempts=charge.attempts,
        retries=charge.retries,
        last_reason=charge.last_reason,
        created_at=_timestamp(charge.created_at),
        updated_at=_timestamp(charge.updated_at),
    )
    if charge.next_attempt_at is not None and charge.status in (
        BankChargeStatus.DECLINED,
        BankChargeStatus.RECOVERING,
    ):
        message.next_retry_at.CopyFrom(_timestamp(charge.next_attempt_at))
    return message


class AccountsServicer(accounts_pb2_grpc.AccountsServiceServicer):
    """Travellers' view of their own cards' journeys."""

    def __init__(self, ports: Slot[AccountsPorts]) -> None:
        self._ports = ports

    async def ListJourneys(  # noqa: N802 - the generated base class names it
        self, request: accounts_pb2.ListJourneysRequest, context: Context
    ) -> accounts_pb2.ListJourneysResponse:
        """One of the caller's cards' journeys, latest revision of each, newest first."""
        ports = self._ports.get()
        with timed_history():
            await ports.travellers.authenticate_owner(bearer_token(context), request.card_token)
            return await ports.history.list_journeys(
                request.card_token, request.page_size, request.page_token
            )


class TravellerServicer(accounts_pb2_grpc.TravellerServiceServicer):
    """Sign-up, sign-in, password reset and the caller's cards."""

    def __init__(self, ports: Slot[AccountsPorts]) -> None:
        self._ports = ports

    def _travellers(self) -> Travellers:
        return self._ports.get().travellers

    async def SignUp(  # noqa: N802
        self, request: accounts_pb2.SignUpRequest, context: Context
    ) -> accounts_pb2.SignUpResponse:
        """A new account."""
        traveller_id = await self._travellers().sign_up(request.email, request.password)
        return accounts_pb2.SignUpResponse(traveller_id=traveller_id)

    async def SignIn(  # noqa: N802
        self, request: accounts_pb2.SignInRequest, context: Context
    ) -> accounts_pb2.SignInResponse:
        """A session."""
        session = await self._travellers().sign_in(request.email, request.password)
        return accounts_pb2.SignInResponse(
            session_token=session.token,
            expires_at=_timestamp(session.expires_at),
            traveller_id=session.traveller_id,
        )

    async def SignOut(  # noqa: N802
        self, request: accounts_pb2.SignOutRequest, context: Context
    ) -> accounts_pb2.SignOutResponse:
        """End the caller's session."""
        await self._travellers().sign_out(bearer_token(context))
        return accounts_pb2.SignOutResponse()

    async def RequestPasswordReset(  # noqa: N802
        self, request: accounts_pb2.RequestPasswordResetRequest, context: Context
    ) -> accounts_pb2.RequestPasswordResetResponse:
        """Mail a reset token if the account exists."""
        await self._travellers().request_reset(request.email)
        return accounts_pb2.RequestPasswordResetResponse()

    async def ResetPassword(  # noqa: N802
        self, request: accounts_pb2.ResetPasswordRequest, context: Context
    ) -> accounts_pb2.ResetPasswordResponse:
        """A new password with a reset token."""
        await self._travellers().reset_password(request.reset_token, request.new_password)
        return accounts_pb2.ResetPasswordResponse()

    async def AddCard(  # noqa: N802
        self, request: accounts_pb2.AddCardRequest, context: Context
    ) -> accounts_pb2.AddCardResponse:
        """Attach a card to the caller's account."""
        travellers = self._travellers()
        traveller_id = await travellers.authenticate(bearer_token(context))
        card, added = await travellers.add_card(traveller_id, request.card_token, request.label)
        return accounts_pb2.AddCardResponse(card=card_message(card), added=added)

    async def ListCards(  # noqa: N802
        self, request: accounts_pb2.ListCardsRequest, context: Context
    ) -> accounts_pb2.ListCardsResponse:
        """The caller's cards."""
        travellers = self._travellers()
        traveller_id = await travellers.authenticate(bearer_token(context))
        cards = await travellers.cards(traveller_id)
        return accounts_pb2.ListCardsResponse(cards=[card_message(c) for c in cards])

    async def RemoveCard(  # noqa: N802
        self, request: accounts_pb2.RemoveCardRequest, context: Context
    ) -> accounts_pb2.RemoveCardResponse:
        """Detach one of the caller's cards."""
        travellers = self._travellers()
        traveller_id = await travellers.authenticate(bearer_token(context))
        await travellers.remove_card(traveller_id, request.card_token)
        return accounts_pb2.RemoveCardResponse()

    async def TopUp(  # noqa: N802
        self, request: accounts_pb2.TopUpRequest, context: Context
    ) -> accounts_pb2.TopUpResponse:
        """Top up one of the caller's cards online, once per idempotency key."""
        ports = self._ports.get()
        traveller_id = await ports.travellers.authenticate_owner(
            bearer_token(context), request.card_token
        )
        if is_bank_card(request.card_token):
            raise NoStoredValueError("a bank card pays for its journeys by day; no top-ups")
        result = await ports.stored_value.top_up(
            traveller_id,
            request.card_token,
            request.amount.amount_minor,
            request.amount.currency,
            request.idempotency_key,
        )
        top_up = result.top_up
        return accounts_pb2.TopUpResponse(
            top_up_id=top_up.top_up_id,
            balance_after=Money(amount_minor=top_up.balance_after_minor, currency=top_up.currency),
            replayed=result.replayed,
            sold_at=_timestamp(top_up.sold_at),
            retailer_id=top_up.retailer_id,
        )

    async def GetBalance(  # noqa: N802
        self, request: accounts_pb2.GetBalanceRequest, context: Context
    ) -> accounts_pb2.GetBalanceResponse:
        """One of the caller's cards' balance."""
        ports = self._ports.get()
        await ports.travellers.authenticate_owner(bearer_token(context), request.card_token)
        card = await ports.stored_value.balance(request.card_token)
        currency = ports.stored_value.rules.currency
        return accounts_pb2.GetBalanceResponse(
            balance=Money(amount_minor=card.balance_minor, currency=currency),
            deny_listed=card.deny_listed,
        )

    async def ListBalanceMovements(  # noqa: N802
        self, request: accounts_pb2.ListBalanceMovementsRequest, context: Context
    ) -> accounts_pb2.ListBalanceMovementsResponse:
        """One of the caller's cards' balance movements, newest first."""
        ports = self._ports.get()
        await ports.travellers.authenticate_owner(bearer_token(context), request.card_token)
        page = await ports.stored_value.movements(
            request.card_token, request.page_size, request.page_token
        )
        return accounts_pb2.ListBalanceMovementsResponse(
            movements=[movement_message(m) for m in page.movements],
            next_page_token=page.next_page_token,
        )

    def _claims(self) -> Claims:
        claims = self._ports.get().claims
        if claims is None:  # pragma: no cover - the app always wires them
            raise NotReadyError("disputes are not wired in this process")
        return claims

    async def ClaimMissingExit(  # noqa: N802
        self, request: accounts_pb2.ClaimMissingExitRequest, context: Context
    ) -> accounts_pb2.ClaimMissingExitResponse:
        """Claim the missing exit of an incomplete journey of one of the caller's cards."""
        ports = self._ports.get()
        traveller_id = await ports.travellers.authenticate_owner(
            bearer_token(context), request.card_token
        )
        exited_at = None
        if request.HasField("exited_at"):
            try:
                exited_at = request.exited_at.ToDatetime(tzinfo=UTC)
            except (ValueError, OverflowError):
                raise BadExitTimeError("exited_at is not a valid instant") from None
        claim = await self._claims().claim_missing_exit(
            traveller_id,
            request.card_token,
            request.journey_id,
            request.exit_stop_id,
            exited_at,
        )
        return accounts_pb2.ClaimMissingExitResponse(claim=claim_message(claim))

    async def ListClaims(  # noqa: N802
        self, request: accounts_pb2.ListClaimsRequest, context: Context
    ) -> accounts_pb2.ListClaimsResponse:
        """One of the caller's cards' claims, newest first."""
        ports = self._ports.get()
        await ports.travellers.authenticate_owner(bearer_token(context), request.card_token)
        claims = await self._claims().list_claims(request.card_token)
        return accounts_pb2.ListClaimsResponse(claims=[claim_message(c) for c in claims])

    async def GetCapsProgress(  # noqa: N802
        self, request: accounts_pb2.GetCapsProgressRequest, context: Context
    ) -> accounts_pb2.GetCapsProgressResponse:
        """How much of each cap that counts one of the caller's cards it has used today
        and this week, from fares, each with its sentence."""
        ports = self._ports.get()
        await ports.travellers.authenticate_owner(bearer_token(context), request.card_token)
        if ports.caps is None:
            raise CapsProgressUnavailableError("caps progress is not wired to fares")
        card = await ports.caps.caps_progress(request.card_token)
        return accounts_pb2.GetCapsProgressResponse(
            service_day=card.service_day.isoformat(),
            week_start=card.week_start.isoformat(),
            caps=[
                accounts_pb2.CapProgress(
                    cap_id=cap.cap_id,
                    name=cap.name,
                    period=_CAP_PERIODS[cap.period],
                    period_start=cap.period_start.isoformat(),
                    amount=_money(cap.amount),
                    spent=_money(cap.spent),
                    remaining=_money(cap.remaining),
                    summary=cap.summary,
                )
                for cap in card.caps
            ],
        )

    def _bank(self) -> BankCharging:
        bank = self._ports.get().bank
        if bank is None:  # pragma: no cover - the app always wires it
            raise NotReadyError("bank-card mode is not wired in this process")
        return bank

    async def ListBankCharges(  # noqa: N802
        self, request: accounts_pb2.ListBankChargesRequest, context: Context
    ) -> accounts_pb2.ListBankChargesResponse:
        """One of the caller's bank cards' charges, newest service day first."""
        ports = self._ports.get()
        await ports.travellers.authenticate_owner(bearer_token(context), request.card_token)
        bank = self._bank()
        charges = await bank.list_charges(request.card_token)
        owed = outstanding_minor({c.charge_id: (c.status, c.amount_minor) for c in charges})
        return accounts_pb2.ListBankChargesResponse(
            charges=[bank_charge_message(c) for c in charges],
            outstanding=Money(amount_minor=owed, currency=ports.stored_value.rules.currency),
            deny_listed=await bank.charges.deny_listed(request.card_token),
        )

    async def RetryBankCharge(  # noqa: N802
        self, request: accounts_pb2.RetryBankChargeRequest, context: Context
    ) -> accounts_pb2.RetryBankChargeResponse:
        """Pay one of the caller's bank card's charges in debt now."""
        ports = self._ports.get()
        await ports.travellers.authenticate_owner(bearer_token(context), request.card_token)
        charge = await self._bank().pay_now(request.card_token, request.charge_id)
        return accounts_pb2.RetryBankChargeResponse(charge=bank_charge_message(charge))


_CAP_PERIODS = {
    CapPeriod.DAY: accounts_pb2.CapProgress.PERIOD_DAY,
    CapPeriod.WEEK: accounts_pb2.CapProgress.PERIOD_WEEK,
}


def _money(amount: MoneyValue) -> Money:
    return Money(amount_minor=amount.amount_minor, currency=amount.currency)
