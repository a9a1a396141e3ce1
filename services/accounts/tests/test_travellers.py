"""Travellers' accounts over accounts' real gRPC server (real PostgreSQL, Redis, Kafka):
sign-up, sign-in, sessions, password reset, cards, and nobody reading another's history."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from argon2 import PasswordHasher

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.rpc import reason_of
from clearway.runtime import RunningService
from services.accounts.app import AccountsApp, build

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"


@dataclass
class Door:
    app: AccountsApp
    travellers: accounts_pb2_grpc.TravellerServiceAsyncStub
    journeys: accounts_pb2_grpc.AccountsServiceAsyncStub

    async def sign_up_and_in(self, password: str = PASSWORD) -> tuple[str, str]:
        email = f"t{uuid.uuid4().hex[:10]}@Example.org"
        await self.travellers.SignUp(accounts_pb2.SignUpRequest(email=email, password=password))
        reply = await self.travellers.SignIn(
            accounts_pb2.SignInRequest(email=email, password=password)
        )
        return email, reply.session_token


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def status(exc: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str | None]:
    return exc.code(), reason_of(exc.trailing_metadata())


def card() -> str:
    return f"tok_{uuid.uuid4().hex[:16]}"


@pytest.fixture
async def door(settings_for) -> AsyncIterator[Door]:
    app = build(settings_for("accounts"))
    running = RunningService(app)
    port = await running.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Door(
            app,
            accounts_pb2_grpc.TravellerServiceStub(channel),
            accounts_pb2_grpc.AccountsServiceStub(channel),
        )
    finally:
        await channel.close()
        await running.stop()


async def test_sign_up_sign_in_cards_and_sign_out(door: Door, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    email, session = await door.sign_up_and_in()
    mine = card()
    added = await door.travellers.AddCard(
        accounts_pb2.AddCardRequest(card_token=mine, label="Oyster"), metadata=bearer(session)
    )
    assert (added.added, added.card.form, added.card.label) == (True, "tok_", "Oyster")
    again = await door.travellers.AddCard(
        accounts_pb2.AddCardRequest(card_token=mine), metadata=bearer(session)
    )
    assert again.added is False
    cards = await door.travellers.ListCards(
        accounts_pb2.ListCardsRequest(), metadata=bearer(session)
    )
    assert [c.card_token for c in cards.cards] == [mine]
    history = await door.journeys.ListJourneys(
        accounts_pb2.ListJourneysRequest(card_token=mine), metadata=bearer(session)
    )
    assert list(history.journeys) == []

    await door.travellers.SignOut(accounts_pb2.SignOutRequest(), metadata=bearer(session))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await door.travellers.ListCards(accounts_pb2.ListCardsRequest(), metadata=bearer(session))
    assert status(caught.value) == (grpc.StatusCode.UNAUTHENTICATED, "NOT_SIGNED_IN")

    # The password is stored as an Argon2id hash, and neither it nor the session token
    # nor the card token appears in any log line.
    stored = await door.app.pool.fetchval(
        "SELECT password_hash FROM travellers WHERE email = $1", email.lower()
    )
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    logged = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert PASSWORD not in logged and session not in logged and mine not in logged


async def test_no_session_no_history_and_nobody_reads_another_travellers_cards(
    door: Door,
) -> None:
    _, alice = await door.sign_up_and_in()
    _, bob = await door.sign_up_and_in()
    hers = card()
    await door.travellers.AddCard(
        accounts_pb2.AddCardRequest(card_token=hers), metadata=bearer(alice)
    )
    request = accounts_pb2.ListJourneysRequest(card_token=hers)
    for metadata, expected in [
        ((), (grpc.StatusCode.UNAUTHENTICATED, "NOT_SIGNED_IN")),
        (bearer("forged"), (grpc.StatusCode.UNAUTHENTICATED, "NOT_SIGNED_IN")),
        (bearer(bob), (grpc.StatusCode.PERMISSION_DENIED, "NOT_YOUR_CARD")),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await door.journeys.ListJourneys(request, metadata=metadata)
        assert status(caught.value) == expected
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await door.travellers.AddCard(
            accounts_pb2.AddCardRequest(card_token=hers), metadata=bearer(bob)
        )
    assert status(caught.value) == (grpc.StatusCode.ALREADY_EXISTS, "CARD_TAKEN")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await door.travellers.RemoveCard(
            accounts_pb2.RemoveCardRequest(card_token=hers), metadata=bearer(bob)
        )
    assert status(caught.value) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_YOUR_CARD")
    bobs = await door.travellers.ListCards(accounts_pb2.ListCardsRequest(), metadata=bearer(bob))
    assert list(bobs.cards) == []


@pytest.mark.parametrize(
    ("email", "password", "reason"),
    [
        ("", PASSWORD, "MISSING_EMAIL"),
        ("not an email", PASSWORD, "BAD_EMAIL"),
        ("a\x00b@example.org", PASSWORD, "BAD_EMAIL"),
        ("x" * 300 + "@example.org", PASSWORD, "BAD_EMAIL"),
        ("short@example.org", "short", "WEAK_PASSWORD"),
        ("long@example.org", "p" * 1_000_000, "BAD_PASSWORD"),
        ("nul@example.org", "password\x00password", "BAD_PASSWORD"),
    ],
)
async def test_bad_sign_up_input_is_invalid_argument(
    door: Door, email: str, password: str, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await door.travellers.SignUp(accounts_pb2.SignUpRequest(email=email, password=password))
    assert status(caught.value) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert password not in (caught.value.details() or "")


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "MISSING_CARD_TOKEN"),
        ("tok_abc\x00defgh", "BAD_CARD_TOKEN"),
        ("tok_" + "a" * 1_000_000, "BAD_CARD_TOKEN"),
        ("tok_abcdefgh\n", "BAD_CARD_TOKEN"),
        ("4111111111111111", "RAW_CARD_NUMBER"),
    ],
)
async def test_bad_card_tokens_are_invalid_argument(door: Door, token: str, reason: str) -> None:
    _, session = await door.sign_up_and_in()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await door.travellers.AddCard(
            accounts_pb2.AddCardRequest(card_token=token), metadata=bearer(session)
        )
    assert status(caught.value) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert "4111111111111111" not in (caught.value.details() or "")


async def test_the_same_email_twice_and_wrong_passwords_are_refused_then_rate_limited(
    door: Door,
) -> None:
    email, _ = await door.sign_up_and_in()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await door.travellers.SignUp(
            accounts_pb2.SignUpRequest(email=email.upper(), password=PASSWORD)
        )
    assert status(caught.value) == (grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN")
    for _ in range(5):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await door.travellers.SignIn(
                accounts_pb2.SignInRequest(email=email, password="not the password at all")
            )
        assert status(caught.value) == (grpc.StatusCode.UNAUTHENTICATED, "BAD_CREDENTIALS")
    # Even the right password waits now.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await door.travellers.SignIn(accounts_pb2.SignInRequest(email=email, password=PASSWORD))
    assert status(caught.value) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SIGN_IN_RATE_LIMITED")
    # An unknown email answers exactly like a wrong password.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await door.travellers.SignIn(
            accounts_pb2.SignInRequest(email="nobody@example.org", password=PASSWORD)
        )
    assert status(caught.value) == (grpc.StatusCode.UNAUTHENTICATED, "BAD_CREDENTIALS")


async def test_password_reset_by_one_time_token_ends_every_session(door: Door) -> None:
    email, session = await door.sign_up_and_in()
    await door.travellers.RequestPasswordReset(
        accounts_pb2.RequestPasswordResetRequest(email=email)
    )
    # No account, same answer, and no mail.
    await door.travellers.RequestPasswordReset(
        accounts_pb2.RequestPasswordResetRequest(email="nobody@example.org")
    )
    assert door.app.travellers is not None
    outbox = door.app.travellers.repository
    assert await outbox.outbox("nobody@example.org") == []
    (mail,) = await outbox.outbox(email.lower())
    match = re.search(r"token \(valid for 30 minutes\): (\S+)", mail)
    assert match is not None
    reset_token = match.group(1)

    new_password = "an entirely new passphrase"
    await door.travellers.ResetPassword(
        accounts_pb2.ResetPasswordRequest(reset_token=reset_token, new_password=new_password)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # once only
        await door.travellers.ResetPassword(
            accounts_pb2.ResetPasswordRequest(reset_token=reset_token, new_password=new_password)
        )
    assert status(caught.value) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_RESET_TOKEN")
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # the old session is over
        await door.travellers.ListCards(accounts_pb2.ListCardsRequest(), metadata=bearer(session))
    assert status(caught.value) == (grpc.StatusCode.UNAUTHENTICATED, "NOT_SIGNED_IN")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await door.travellers.SignIn(accounts_pb2.SignInRequest(email=email, password=PASSWORD))
    assert status(caught.value) == (grpc.StatusCode.UNAUTHENTICATED, "BAD_CREDENTIALS")
    signed_in = await door.travellers.SignIn(
        accounts_pb2.SignInRequest(email=email, password=new_password)
    )
    assert signed_in.session_token


class CountingHasher(PasswordHasher):
    """The service's Argon2 hasher, counting the hashes it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.hashes = 0

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self.hashes += 1
        return super().hash(password, salt=salt)


async def test_a_reset_without_a_live_token_hashes_nothing(door: Door) -> None:
    # Argon2 is the costly part: a caller without a live token must not make the door hash.
    email, _ = await door.sign_up_and_in()
    assert door.app.travellers is not None
    counting = door.app.travellers.hasher = CountingHasher()
    new_password = "an entirely new passphrase"
    for token in ("not-a-reset-token", "x" * 256, "x" * 257):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await door.travellers.ResetPassword(
                accounts_pb2.ResetPasswordRequest(reset_token=token, new_password=new_password)
            )
        assert status(caught.value) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_RESET_TOKEN")
    assert counting.hashes == 0
    await door.travellers.RequestPasswordReset(
        accounts_pb2.RequestPasswordResetRequest(email=email)
    )
    (mail,) = await door.app.travellers.repository.outbox(email.lower())
    match = re.search(r"token \(valid for 30 minutes\): (\S+)", mail)
    assert match is not None
    await door.travellers.ResetPassword(
        accounts_pb2.ResetPasswordRequest(reset_token=match.group(1), new_password=new_password)
    )
    assert counting.hashes == 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # spent: no second hash
        await door.travellers.ResetPassword(
            accounts_pb2.ResetPasswordRequest(reset_token=match.group(1), new_password=new_password)
        )
    assert status(caught.value) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_RESET_TOKEN")
    assert counting.hashes == 1
