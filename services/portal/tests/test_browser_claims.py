"""Caps progress and a missing-exit claim in the portal, end to end in headless Chromium:
fares (the London example feed) and accounts in-process on real Kafka, PostgreSQL and
Redis, taps published to fares' taps topic as ingest would, the portal between the
browser and accounts. A traveller sees how much of today's caps is used, claims the exit
of an incomplete journey by choosing the stop, and sees the refund in the claim, the
journey (an adjustment) and the balance; another traveller cannot claim on their card."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from playwright.async_api import Browser

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.events.v1 import events_pb2
from clearway.infra.endpoints import Endpoints
from clearway.kafka import Topics, delete_topics_with_prefix, idempotent_producer
from clearway.runtime import RunningService
from clearway.settings import ServiceSettings
from services.accounts.app import AccountsApp
from services.accounts.app import build as build_accounts
from services.fares.app import build as build_fares
from services.portal.app import DEFAULT_FEED, PortalApp, PortalSettings
from services.portal.domain.claims import load_stops
from services.portal.tests.test_browser import PASSWORD

pytestmark = pytest.mark.integration


@dataclasses.dataclass
class ClaimStack:
    accounts: AccountsApp
    travellers: accounts_pb2_grpc.TravellerServiceAsyncStub
    url: str
    card: str  # an incomplete journey (KGX, no exit) then VIC → OXC, both within the hour


@contextmanager
def env(**values: str) -> Iterator[None]:
    """Environment variables set for the duration (read by the services' builders)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def tap_message(card: str, seq: int, stop: str, kind: int, at: datetime) -> events_pb2.Tap:
    message = events_pb2.Tap(
        device_id="gate-portal-test",
        sequence_number=seq,
        tap_id=f"portal-{card}-{seq}",
        card_token=card,
        stop_id=stop,
        kind=kind,
    )
    message.tapped_at.FromDatetime(at.astimezone(UTC))
    return message


@pytest.fixture(scope="module")
async def claim_stack(endpoints: Endpoints) -> AsyncIterator[ClaimStack]:
    name = f"t{uuid.uuid4().hex[:10]}"
    topics = Topics(f"{name}.")

    def settings(service: str) -> ServiceSettings:
        return dataclasses.replace(
            ServiceSettings.from_env(service),
            grpc_host="127.0.0.1",
            grpc_port=0,
            endpoints=endpoints,
            topics=topics,
            db_schema=f"{name}_{service}",
            consumer_group=f"{name}-{service}",
            grace_seconds=2.0,
        )

    fares = RunningService(build_fares(settings("fares"), [DEFAULT_FEED]))
    fares_port = await fares.start()
    with env(CLEARWAY_FARES_TARGET=f"127.0.0.1:{fares_port}"):
        accounts = build_accounts(settings("accounts"))
    running = RunningService(accounts)
    port = await running.start()
    portal = PortalApp(
        PortalSettings(
            accounts_target=f"127.0.0.1:{port}",
            port=0,
            grace_seconds=1.0,
            stops=load_stops(DEFAULT_FEED),
        )
    )
    portal_port = await portal.start()
    producer = idempotent_producer(endpoints.kafka_bootstrap)
    await producer.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        card = f"tok_m{uuid.uuid4().hex[:15]}"
        now = datetime.now(UTC).replace(microsecond=0)
        taps = [
            ("KGX", events_pb2.TAP_KIND_ENTRY, now - timedelta(minutes=90)),  # no exit
            ("VIC", events_pb2.TAP_KIND_ENTRY, now - timedelta(minutes=60)),
            ("OXC", events_pb2.TAP_KIND_EXIT, now - timedelta(minutes=40)),
        ]
        for seq, (stop, kind, at) in enumerate(taps, 1):
            message = tap_message(card, seq, stop, kind, at)
            await producer.send_and_wait(
                topics.taps, message.SerializeToString(), key=card.encode()
            )
        deadline = time.monotonic() + 60
        while accounts.recorder is None or accounts.recorder.stats.stored < 2:
            assert time.monotonic() < deadline, "accounts did not store the priced journeys"
            await asyncio.sleep(0.2)
        yield ClaimStack(
            accounts,
            accounts_pb2_grpc.TravellerServiceStub(channel),
            f"http://127.0.0.1:{portal_port}",
            card,
        )
    finally:
        await channel.close()
        await producer.stop()
        await portal.stop()
        await running.stop()
        await fares.stop()
        await delete_topics_with_prefix(endpoints.kafka_bootstrap, name)


async def test_traveller_sees_caps_progress_claims_a_missing_exit_and_sees_the_refund(
    claim_stack: ClaimStack, browser: Browser
) -> None:
    stack = claim_stack
    email = f"t{uuid.uuid4().hex[:10]}@example.org"
    await stack.travellers.SignUp(accounts_pb2.SignUpRequest(email=email, password=PASSWORD))
    context = await browser.new_context(base_url=stack.url)
    page = await context.new_page()
    await page.goto("/sign-in")
    await page.get_by_label("Email address").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_label("Card token").fill(stack.card)
    await page.get_by_label("Name (optional)").fill("Daily")
    await page.get_by_role("button", name="Add card").click()

    # Caps progress: what today's journeys used of each cap that counts the card.
    await page.get_by_role("link", name="Balance and top-up of Daily").click()
    panel = await page.locator("ul.caps").inner_text()
    assert "cap" in panel and "of today's" in panel, panel
    assert await page.locator("ul.caps progress").count() >= 1
    balance_before = await page.locator(".balance-now").inner_text()

    # The incomplete journey (maximum fare) has a claim form: choose where you left.
    await page.get_by_role("link", name="Journeys on this card").click()
    incomplete = page.locator("table.journeys tbody tr", has_text="Incomplete")
    assert await incomplete.count() == 1
    charged = await incomplete.locator("td.num").first.inner_text()
    unlabelled = """() => [...document.querySelectorAll('input, select, textarea')]
        .filter(e => e.type !== 'hidden' && (!e.labels || e.labels.length === 0))
        .map(e => e.name)"""
    assert await page.evaluate(unlabelled) == []
    assert await page.get_by_role("heading", level=1).count() == 1
    await incomplete.get_by_label("Where did you leave?").select_option(label="Oxford Circus")
    await incomplete.get_by_role("button", name="Claim missing exit").click()
    assert "Claim received" in await page.locator("[role=status]").inner_text()
    claims = page.locator("table.claims tbody tr")
    assert await claims.count() == 1
    assert "Oxford Circus" in await claims.first.inner_text()

    # fares re-prices the journey with the claimed exit; the refund shows everywhere.
    deadline = time.monotonic() + 60
    while "Refunded" not in await claims.first.inner_text():
        assert time.monotonic() < deadline, await claims.first.inner_text()
        await asyncio.sleep(0.5)
        await page.reload()
    claim_row = await claims.first.inner_text()
    row = page.locator("table.journeys tbody tr", has_text="Exit claimed")
    journey_text = await row.inner_text()
    assert "Adjusted -£" in journey_text and "(revision 2)" in journey_text, journey_text
    assert "Refunded" in journey_text
    refund = claim_row.rsplit("£", 1)[1].strip()
    assert f"-£{refund}" in journey_text
    assert charged not in await row.locator("td.num").first.inner_text()  # charged less now
    # No second claim on the same journey: its form is gone.
    assert await page.get_by_role("button", name="Claim missing exit").count() == 0

    await page.goto(f"/cards/{stack.card}")
    assert await page.locator(".balance-now").inner_text() != balance_before
    refunds = page.locator("table.movements tbody tr", has_text="Journey refund")
    assert await refunds.count() == 1
    assert f"+£{refund}" in await refunds.first.inner_text()
    await context.close()


async def test_another_traveller_cannot_claim_on_anothers_card(
    claim_stack: ClaimStack, browser: Browser
) -> None:
    stack = claim_stack
    email = f"t{uuid.uuid4().hex[:10]}@example.org"
    await stack.travellers.SignUp(accounts_pb2.SignUpRequest(email=email, password=PASSWORD))
    reply = await stack.travellers.SignIn(
        accounts_pb2.SignInRequest(email=email, password=PASSWORD)
    )
    own = f"tok_p{uuid.uuid4().hex[:15]}"
    await stack.travellers.AddCard(
        accounts_pb2.AddCardRequest(card_token=own),
        metadata=(("authorization", f"Bearer {reply.session_token}"),),
    )
    context = await browser.new_context(base_url=stack.url)
    await context.add_cookies(
        [{"name": "clearway_session", "value": reply.session_token, "url": stack.url}]
    )
    page = await context.new_page()
    await page.goto(f"/cards/{own}/journeys")
    token = await page.locator("input[name=csrf_token]").first.get_attribute("value")
    answer = await context.request.post(
        "/cards/claim",
        form={
            "csrf_token": token or "",
            "card_token": stack.card,
            "journey_id": "anything",
            "exit_stop_id": "OXC",
        },
    )
    assert answer.status == 404
    assert "could not find that card" in await answer.text()
    response = await page.goto(f"/cards/{stack.card}")
    assert response is not None and response.status == 404
    await context.close()
