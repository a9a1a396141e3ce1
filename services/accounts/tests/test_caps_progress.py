"""Caps progress for a signed-in traveller: accounts asks fares (both running in-process on
real Kafka, PostgreSQL and Redis) about the caller's own card, and says each cap's use in
a sentence; nobody else's card, and UNAVAILABLE when fares does not answer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.rpc import reason_of
from clearway.runtime import RunningService
from services.accounts.app import build as build_accounts
from services.fares.app import build as build_fares
from services.fares.domain import Tap, TapKind
from services.fares.service_layer.closing import wait_caught_up
from services.fares.tests.kafka_taps import publish_taps

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def signed_in(travellers: accounts_pb2_grpc.TravellerServiceAsyncStub) -> str:
    email = f"t{uuid.uuid4().hex[:10]}@example.org"
    await travellers.SignUp(accounts_pb2.SignUpRequest(email=email, password=PASSWORD))
    reply = await travellers.SignIn(accounts_pb2.SignInRequest(email=email, password=PASSWORD))
    return reply.session_token


async def test_a_traveller_reads_their_cards_caps_progress_and_nobody_elses(settings_for):
    fares_settings = settings_for("fares")
    fares_app = build_fares(fares_settings)
    fares = RunningService(fares_app)
    fares_port = await fares.start()
    accounts_app = build_accounts(settings_for("accounts"))
    accounts_app.fares_target = f"127.0.0.1:{fares_port}"
    accounts = RunningService(accounts_app)
    port = await accounts.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        travellers = accounts_pb2_grpc.TravellerServiceStub(channel)
        alice, bob = await signed_in(travellers), await signed_in(travellers)
        card = f"tok_{uuid.uuid4().hex[:16]}"
        await travellers.AddCard(
            accounts_pb2.AddCardRequest(card_token=card), metadata=bearer(alice)
        )
        # An adult's bus a second ago: 1.75 towards all four of London's caps.
        boarded = datetime.now(UTC) - timedelta(seconds=1)
        bus = Tap("bus-1", card, boarded, "BUS_A1", TapKind.BOARD, route_id="BUS_73")
        await publish_taps(fares_settings, [bus])
        assert await wait_caught_up(fares_app.ports.get(), 30.0)

        request = accounts_pb2.GetCapsProgressRequest(card_token=card)
        reply = await travellers.GetCapsProgress(request, metadata=bearer(alice))
        day, week = accounts_pb2.CapProgress.PERIOD_DAY, accounts_pb2.CapProgress.PERIOD_WEEK
        assert [
            (
                c.cap_id,
                c.period,
                c.amount.amount_minor,
                c.spent.amount_minor,
                c.remaining.amount_minor,
            )
            for c in reply.caps
        ] == [
            ("DAILY_Z12", day, 890, 175, 715),
            ("DAILY_BUS", day, 525, 175, 350),
            ("WEEKLY_Z12", week, 4470, 175, 4295),
            ("WEEKLY_BUS", week, 2470, 175, 2295),
        ]
        assert [c.summary for c in reply.caps] == [
            "£1.75 of today's £8.90 cap",
            "£1.75 of today's £5.25 cap",
            "£1.75 of this week's £44.70 cap",
            "£1.75 of this week's £24.70 cap",
        ]
        assert reply.caps[0].period_start == reply.service_day
        assert reply.caps[2].period_start == reply.week_start

        refusals = [
            (bearer(bob), (grpc.StatusCode.PERMISSION_DENIED, "NOT_YOUR_CARD")),
            ((), (grpc.StatusCode.UNAUTHENTICATED, "NOT_SIGNED_IN")),
        ]
        for metadata, expected in refusals:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await travellers.GetCapsProgress(request, metadata=metadata)
            assert (err.value.code(), reason_of(err.value.trailing_metadata())) == expected
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await travellers.GetCapsProgress(
                accounts_pb2.GetCapsProgressRequest(card_token="tok_\x00bad"),
                metadata=bearer(alice),
            )
        assert reason_of(err.value.trailing_metadata()) == "BAD_CARD_TOKEN"

        await fares.stop()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await travellers.GetCapsProgress(request, metadata=bearer(alice))
        assert (err.value.code(), reason_of(err.value.trailing_metadata())) == (
            grpc.StatusCode.UNAVAILABLE,
            "FARES_UNAVAILABLE",
        )
    finally:
        await channel.close()
        await accounts.stop()
        await fares.stop()
