"""Travellers' use cases: sign-up, sign-in, sessions, password reset, cards.

A session token is the traveller's credential on every later call; `authenticate` turns
it into the traveller id (never a request field). Passwords are hashed with Argon2id
(argon2-cffi, in a worker thread: a hash takes tens of milliseconds by design).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from services.accounts.adapters.traveller_repository import SignInLimiter, TravellerRepository
from services.accounts.domain.travellers import (
    RESET_TTL,
    SESSION_TTL,
    BadCredentialsError,
    BadResetTokenError,
    Card,
    CardTakenError,
    EmailTakenError,
    NotSignedInError,
    NotYourCardError,
    Session,
    SignInRateLimitedError,
    TravellerInputError,
    check_card_token,
    check_label,
    check_password,
    new_token,
    normal_email,
    token_digest,
)

# Verified against when the email has no account, so an unknown email takes as long as a
# wrong password (no timing oracle for which emails have accounts).
_DUMMY_PASSWORD = "clearway-no-such-account"


class CardsChanged(Protocol):
    """What changes with an account's cards in the same transaction (the travel-pass
    concessions their taps carry: service_layer.concessions.ConcessionsOfCards)."""

    async def in_transaction(self, conn: asyncpg.Connection, traveller_id: str) -> None:
        """In the transaction that added or removed one of the account's cards."""
        ...

    def committed(self) -> None:
        """After that transaction committed."""
        ...


@dataclass
class Travellers:
    """The use cases, over the repository, the sign-in limiter and a clock."""

    repository: TravellerRepository
    limiter: SignInLimiter
    hasher: PasswordHasher = field(default_factory=PasswordHasher)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    cards_changed: CardsChanged | None = None
    _dummy_hash: str = ""

    async def _hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return await asyncio.to_thread(self.hasher.verify, password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def sign_up(self, email: str, password: str) -> str:
        """A new account's id."""
        email = normal_email(email)
        traveller_id = await self.repository.create(
            email, await self._hash(check_password(password))
        )
        if traveller_id is None:
            raise EmailTakenError("an account with this email exists; sign in or reset")
        return traveller_id

    async def sign_in(self, email: str, password: str) -> Session:
        """A new session; BAD_CREDENTIALS for any mismatch, rate-limited per email."""
        email = normal_email(email)
        if await self.limiter.blocked(email):
            raise SignInRateLimitedError(
                "too many failed sign-ins for this email; wait 15 minutes or reset the password"
            )
        found = await self.repository.by_email(email)
        if found is None:
            if not self._dummy_hash:
                self._dummy_hash = await self._hash(_DUMMY_PASSWORD)
            await self._verify(self._dummy_hash, password)
            await self.limiter.failed(email)
            raise BadCredentialsError("the email or the password is wrong")
        traveller_id, password_hash = found
        if not await self._verify(password_hash, password):
            await self.limiter.failed(email)
            raise BadCredentialsError("the email or the password is wrong")
        await self.limiter.succeeded(email)
        if self.hasher.check_needs_rehash(password_hash):
            await self.repository.set_password_hash(traveller_id, await self._hash(password))
        token = new_token()
        expires_at = self.clock() + SESSION_TTL
        await self.repository.add_session(token_digest(token), traveller_id, expires_at)
        return Session(token, traveller_id, expires_at)

    async def authenticate(self, token: str | None) -> str:
        """The traveller whose live session `token` is; NOT_SIGNED_IN otherwise."""
        if not token or len(token) > 256:
            raise NotSignedInError("sign in and send `authorization: Bearer <session token>`")
        traveller_id = await self.repository.session(token_digest(token), self.clock())
        if traveller_id is None:
            raise NotSignedInError("the session is unknown or expired; sign in again")
        return traveller_id

    async def authenticate_owner(self, token: str | None, card_token: str) -> str:
        """The traveller whose live session `token` is, when `card_token` is one of their
        cards, in one database round trip; otherwise NOT_SIGNED_IN, then a card-token
        error, then NOT_YOUR_CARD (whether the card exists is not said)."""
        try:
            check_card_token(card_token)
        except TravellerInputError:
            await self.authenticate(token)  # no session is said first, as `authenticate` does
            raise
        if not token or len(token) > 256:
            raise NotSignedInError("sign in and send `authorization: Bearer <session token>`")
        traveller_id, owns = await self.repository.session_and_card(
            token_digest(token), card_token, self.clock()
        )
        if traveller_id is None:
            raise NotSignedInError("the session is unknown or expired; sign in again")
        if not owns:
            raise NotYourCardError("this card is not one of yours")
        return traveller_id

    async def sign_out(self, token: str | None) -> None:
        """End the session (after checking it is one)."""
        await self.authenticate(token)
        assert token is not None
        await self.repository.end_session(token_digest(token))

    async def request_reset(self, email: str) -> None:
        """Queue a reset mail when the account exists; the same answer either way."""
        email = normal_email(email)
        found = await self.repository.by_email(email)
        if found is None:
            return
        token = new_token()
        body = (
            "Someone asked to reset the password of your Clearway account.\n"
            f"Your one-time reset token (valid for {int(RESET_TTL.total_seconds() // 60)} "
            f"minutes): {token}\n"
            "If it was not you, ignore this mail.\n"
        )
        await self.repository.add_reset(
            token_digest(token), found[0], self.clock() + RESET_TTL, email, body
        )

    async def reset_password(self, reset_token: str, new_password: str) -> None:
        """Spend the token: the new password, every session ended.

        The password is hashed (Argon2, the costly part) only for a token that is live when
        asked, so a caller without a token cannot make the door hash at will; spending it
        checks again, in the transaction that sets the password."""
        new_password = check_password(new_password)
        if not reset_token or len(reset_token) > 256:
            raise BadResetTokenError("the reset token is unknown, used or expired")
        digest = token_digest(reset_token)
        if not await self.repository.reset_is_live(digest, self.clock()):
            raise BadResetTokenError("the reset token is unknown, used or expired")
        password_hash = await self._hash(new_password)
        used = await self.repository.use_reset(digest, self.clock(), password_hash)
        if used is None:
            raise BadResetTokenError("the reset token is unknown, used or expired")

    async def add_card(self, traveller_id: str, card_token: str, label: str) -> tuple[Card, bool]:
        """Attach the card (again: unchanged); CARD_TAKEN when another account has it."""
        form = check_card_token(card_token)
        hook = self.cards_changed
        result = await self.repository.add_card(
            traveller_id,
            card_token,
            form.value,
            check_label(label),
            then=None if hook is None else hook.in_transaction,
        )
        if result is None:
            raise CardTakenError("this card belongs to another account")
        if hook is not None and result[1]:
            hook.committed()
        return result

    async def cards(self, traveller_id: str) -> list[Card]:
        """The traveller's cards."""
        return await self.repository.cards(traveller_id)

    async def remove_card(self, traveller_id: str, card_token: str) -> None:
        """Detach one of the traveller's cards."""
        check_card_token(card_token)
        hook = self.cards_changed
        removed = await self.repository.remove_card(
            traveller_id, card_token, then=None if hook is None else hook.in_transaction
        )
        if not removed:
            raise NotYourCardError("this card is not one of yours")
        if hook is not None:
            hook.committed()
