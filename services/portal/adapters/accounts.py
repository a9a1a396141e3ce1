"""The accounts service over gRPC: the portal's only backend.

Every refusal becomes `AccountsRefusalError(code)` with the `reason-code` trailer; an outage
(UNAVAILABLE, a deadline) becomes `AccountsUnavailableError`. Session tokens travel only as
`authorization: Bearer` metadata and are never logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.common.v1 import money_pb2
from clearway.events.v1 import events_pb2
from clearway.money import Money
from clearway.rpc import reason_of
from services.portal.domain.balance import BalanceView, MovementKind, MovementView
from services.portal.domain.claims import CapsView, CapView, ClaimState, ClaimView
from services.portal.domain.journeys import JourneyView, LegView

T = TypeVar("T")
TRAVELLER_SERVICE = "clearway.accounts.v1.TravellerService"
OUTAGES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class AccountsRefusalError(Exception):
    """Accounts refused the call; `code` is its reason code (e.g. NOT_YOUR_CARD)."""

    def __init__(self, code: str, status: str) -> None:
        super().__init__(f"{status}: {code}")
        self.code = code
        self.status = status


class AccountsUnavailableError(Exception):
    """Accounts could not be reached or did not answer in time."""


@dataclass(frozen=True, slots=True)
class CardView:
    """One of the traveller's cards."""

    token: str
    form: str
    label: str
    added_at: datetime | None


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in traveller's accounts session."""

    token: str
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class JourneyPage:
    """One page of a card's history, newest first; `next_page_token` empty on the last."""

    journeys: list[JourneyView]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class MovementPage:
    """One page of a card's balance movements, newest first."""

    movements: list[MovementView]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class TopUpResult:
    """What a top-up did: the balance after it, and whether it had been done already."""

    balance_after: Money
    replayed: bool


MOVEMENT_KINDS = {
    accounts_pb2.BalanceMovement.KIND_TOP_UP: MovementKind.TOP_UP,
    accounts_pb2.BalanceMovement.KIND_JOURNEY: MovementKind.JOURNEY,
}


CLAIM_STATES = {
    accounts_pb2.Claim.STATUS_PENDING: ClaimState.PENDING,
    accounts_pb2.Claim.STATUS_REFUNDED: ClaimState.REFUNDED,
    accounts_pb2.Claim.STATUS_REJECTED: ClaimState.REJECTED,
}
CAP_PERIODS = {
    accounts_pb2.CapProgress.PERIOD_DAY: "day",
    accounts_pb2.CapProgress.PERIOD_WEEK: "week",
}


def claim_view(c: accounts_pb2.Claim) -> ClaimView:
    """The portal's view of a missing-exit claim."""
    currency = c.claimed_charge.currency or c.refund.currency or "GBP"
    return ClaimView(
        claim_id=c.claim_id,
        journey_id=c.journey_id,
        entry_stop=c.entry_stop_id,
        entry_at=time_of(c.entry_at, c.HasField("entry_at")),
        exit_stop=c.exit_stop_id,
        exited_at=time_of(c.exited_at, c.HasField("exited_at")),
        exited_at_estimated=c.exited_at_estimated,
        state=CLAIM_STATES.get(c.status, ClaimState.PENDING),
        reason=c.reason,
        claimed_charge=money_of(c.claimed_charge, currency),
        refund=money_of(c.refund, currency),
        created_at=time_of(c.created_at, c.HasField("created_at")),
    )


def time_of(ts: Timestamp, present: bool) -> datetime | None:
    """A timestamp field as an aware datetime (None when the field is not set)."""
    return ts.ToDatetime(tzinfo=UTC) if present else None


def money_of(m: money_pb2.Money, currency: str) -> Money:
    """A Money field (`currency` when it has none: an unset field)."""
    return Money(m.amount_minor, m.currency or currency)


def journey_view(j: events_pb2.PricedJourney) -> JourneyView:
    """The portal's view of a PricedJourney (the latest revision accounts serves)."""
    currency = j.charge.currency or "GBP"
    legs = tuple(
        LegView(
            from_stop=leg.from_stop_id,
            to_stop=leg.to_stop_id,
            entry_at=time_of(leg.entry_at, leg.HasField("entry_at")),
            exit_at=time_of(leg.exit_at, leg.HasField("exit_at")),
            incomplete=leg.incomplete,
            fare_product=leg.fare_product_id,
            transfer_rule=leg.transfer_rule_id,
        )
        for leg in j.legs
    )
    saved = sum(c.saved.amount_minor for c in j.caps)
    return JourneyView(
        journey_id=j.journey_id,
        service_day=j.service_day,
        legs=legs,
        charge=money_of(j.charge, currency),
        caps_saved=Money(saved, currency),
        incomplete=j.incomplete,
        revision=j.revision,
        delta=money_of(j.delta, currency),
        caps_applied=tuple(c.cap_id for c in j.caps if c.saved.amount_minor),
    )


def bearer(session: str) -> tuple[tuple[str, str], ...]:
    """The gRPC metadata carrying a session token."""
    return (("authorization", f"Bearer {session}"),)


async def call_accounts(call: Callable[[], Awaitable[T]]) -> T:
    """Make one accounts call: a refusal becomes AccountsRefusalError (its reason code, or
    the status name when there is none), an outage AccountsUnavailableError."""
    try:
        return await call()
    except grpc.aio.AioRpcError as exc:
        if exc.code() in OUTAGES:
            raise AccountsUnavailableError(exc.code().name) from None
        code = reason_of(exc.trailing_metadata()) or exc.code().name
        raise AccountsRefusalError(code, exc.code().name) from None


class AccountsClient:
    """TravellerService and AccountsService on one channel, with a deadline per call."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = 5.0) -> None:
        self.travellers = accounts_pb2_grpc.TravellerServiceStub(channel)
        self.history = accounts_pb2_grpc.AccountsServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)
        self.timeout_s = timeout_s

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        return await call_accounts(call)

    async def sign_up(self, email: str, password: str) -> None:
        """A new account."""
        request = accounts_pb2.SignUpRequest(email=email, password=password)
        await self._call(lambda: self.travellers.SignUp(request, timeout=self.timeout_s))

    async def sign_in(self, email: str, password: str) -> Session:
        """A session for the account."""
        request = accounts_pb2.SignInRequest(email=email, password=password)
        reply = await self._call(lambda: self.travellers.SignIn(request, timeout=self.timeout_s))
        return Session(reply.session_token, time_of(reply.expires_at, reply.HasField("expires_at")))

    async def sign_out(self, session: str) -> None:
        """End the session."""
        request = accounts_pb2.SignOutRequest()
        await self._call(
            lambda: self.travellers.SignOut(
                request, metadata=bearer(session), timeout=self.timeout_s
            )
        )

    async def request_reset(self, email: str) -> None:
        """Have a reset code mailed (the same answer whether the account exists or not)."""
        request = accounts_pb2.RequestPasswordResetRequest(email=email)
        await self._call(
            lambda: self.travellers.RequestPasswordReset(request, timeout=self.timeout_s)
        )

    async def reset_password(self, reset_token: str, new_password: str) -> None:
        """Spend a reset code on a new password."""
        request = accounts_pb2.ResetPasswordRequest(
            reset_token=reset_token, new_password=new_password
        )
        await self._call(lambda: self.travellers.ResetPassword(request, timeout=self.timeout_s))

    async def add_card(self, session: str, card_token: str, label: str) -> bool:
        """Attach a card; False when it was already the caller's."""
        request = accounts_pb2.AddCardRequest(card_token=card_token, label=label)
        reply = await self._call(
            lambda: self.travellers.AddCard(
                request, metadata=bearer(session), timeout=self.timeout_s
            )
        )
        return reply.added

    async def list_cards(self, session: str) -> list[CardView]:
        """The caller's cards."""
        request = accounts_pb2.ListCardsRequest()
        reply = await self._call(
            lambda: self.travellers.ListCards(
                request, metadata=bearer(session), timeout=self.timeout_s
            )
        )
        return [
            CardView(c.card_token, c.form, c.label, time_of(c.added_at, c.HasField("added_at")))
            for c in reply.cards
        ]

    async def remove_card(self, session: str, card_token: str) -> None:
        """Detach one of the caller's cards."""
        request = accounts_pb2.RemoveCardRequest(card_token=card_token)
        await self._call(
            lambda: self.travellers.RemoveCard(
                request, metadata=bearer(session), timeout=self.timeout_s
            )
        )

    async def list_journeys(
        self, session: str, card_token: str, page_size: int, page_token: str
    ) -> JourneyPage:
        """One page of the card's history (accounts refuses another's card: NOT_YOUR_CARD)."""
        request = accounts_pb2.ListJourneysRequest(
            card_token=card_token, page_size=page_size, page_token=page_token
        )
        reply = await self._call(
            lambda: self.history.ListJourneys(
                request, metadata=bearer(session), timeout=self.timeout_s
            )
        )
        return JourneyPage([journey_view(j) for j in reply.journeys], reply.next_page_token)

    async def get_balance(self, session: str, card_token: str) -> BalanceView:
        """The balance of one of the caller's cards (NOT_YOUR_CARD for another's)."""
        request = accounts_pb2.GetBalanceRequest(card_token=card_token)
        reply = await self._call(
            lambda: self.travellers.GetBalance(
                request, metadata=bearer(session), timeout=self.timeout_s
            )
        )
        return BalanceView(money_of(reply.balance, "GBP"), reply.deny_listed)

    async def list_movements(
        self, session: str, card_token: str, page_size: int, page_token: str
    ) -> MovementPage:
        """One page of what moved the card's balance, newest first."""
        request = accounts_pb2.ListBalanceMovementsRequest(
            card_token=card_token, page_size=page_size, page_token=page_token
        )
        reply = await self._call(
            lambda: self.travellers.ListBalanceMovements(
                request, metadata=bearer(session), timeout=self.timeout_s
            )
        )
        movements = [
            MovementView(
                kind=MOVEMENT_KINDS.get(m.kind, MovementKind.OTHER),
                source_id=m.source_id,
                revision=m.revision,
                amount=money_of(m.amount, "GBP"),
                balance_after=money_of(m.balance_after, m.amount.currency or "GBP"),
                at=time_of(m.at, m.HasField("at")),
            )
            for m in reply.movements
        ]
        return MovementPage(movements, reply.next_page_token)

    async def top_up(
        self, session: str, card_token: str, amount: Money, idempotency_key: str
    ) -> TopUpResult:
        """Credit one of the caller's cards once per `idempotency_key`."""
        request = accounts_pb2.TopUpRequest(
            card_token=card_token,
            amount=money_pb2.Money(amount_minor=amount.amount_minor, currency=amount.currency),
            idempotency_key=idempotency_key,
        )
        reply = await self._call(
            lambda: self.travellers.TopUp(request, metadata=bearer(session), timeout=self.timeout_s)
        )
        return TopUpResult(money_of(reply.balance_after, amount.currency), reply.replayed)

    async def caps_progress(self, session: str, card_token: str) -> CapsView:
        """How much of today's and this week's caps the card has used."""
        request = accounts_pb2.GetCapsProgressRequest(card_token=card_token)
        reply = await self._call(
            lambda: self.travellers.GetCapsProgress(
                request, metadata=bearer(session), timeout=self.timeout_s
            )
        )
        caps = tuple(
            CapView(
                cap_id=c.cap_id,
                name=c.name,
                period=CAP_PERIODS.get(c.period, ""),
                amount=money_of(c.amount, "GBP"),
                spent=money_of(c.spent, c.amount.currency or "GBP"),
                remaining=money_of(c.remaining, c.amount.currency or "GBP"),
                summary=c.summary,
            )
            for c in reply.caps
        )
        return CapsView(reply.service_day, reply.week_start, caps)

    async def claim_missing_exit(
        self, session: str, card_token: str, journey_id: str, exit_stop_id: str
    ) -> ClaimView:
        """Claim the missing exit of an incomplete journey (the exit time: accounts'
        documented estimate)."""
        request = accounts_pb2.ClaimMissingExitRequest(
            card_token=card_token, journey_id=journey_id, exit_stop_id=exit_stop_id
        )
        reply = await self._call(
            lambda: self.travellers.ClaimMissingExit(
                request, metadata=bearer(session), timeout=self.timeout_s
            )
        )
        return claim_view(reply.claim)

    async def list_claims(self, session: str, card_token: str) -> list[ClaimView]:
        """The card's claims, newest first, with their outcomes."""
        request = accounts_pb2.ListClaimsRequest(card_token=card_token)
        reply = await self._call(
            lambda: self.travellers.ListClaims(
                request, metadata=bearer(session), timeout=self.timeout_s
            )
        )
        return [claim_view(c) for c in reply.claims]

    async def serving(self) -> bool:
        """True when accounts' TravellerService reports SERVING."""
        request = health_pb2.HealthCheckRequest(service=TRAVELLER_SERVICE)
        try:
            reply = await self.health.Check(request, timeout=1.0)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
