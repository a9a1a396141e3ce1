"""The portal in headless Chromium (Debian's package, driven by Playwright), against a real
accounts service (real Kafka, PostgreSQL and Redis) started in-process: sign-up, sign-in,
cards, journey history, the CSV, sign-out, password reset, no cross-account access, CSRF,
security headers, keyboard use and labels."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from aiokafka import AIOKafkaProducer
from playwright.async_api import Browser, BrowserContext, Page

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.common.v1.money_pb2 import Money
from clearway.events.v1.events_pb2 import CapApplied, PricedJourney
from clearway.infra.endpoints import Endpoints
from clearway.kafka import Topics, delete_topics_with_prefix, idempotent_producer
from clearway.runtime import RunningService
from clearway.settings import ServiceSettings
from services.accounts.adapters.traveller_repository import TravellerRepository
from services.accounts.app import AccountsApp, build
from services.portal.app import PortalApp, PortalSettings

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
T0 = datetime(2026, 11, 20, 7, 30, tzinfo=UTC)


def money(amount: int) -> Money:
    return Money(amount_minor=amount, currency="GBP")


def journey(
    card: str,
    journey_id: str,
    start: datetime,
    stops: list[tuple[str, str]],
    *,
    charge: int,
    revision: int = 1,
    delta: int | None = None,
    saved: int = 0,
    incomplete: bool = False,
) -> PricedJourney:
    j = PricedJourney(
        journey_id=journey_id,
        card_token=card,
        revision=revision,
        service_day=start.date().isoformat(),
        charge=money(charge),
        amount_before_caps=money(charge + saved),
        delta=money(charge if delta is None else delta),
        incomplete=incomplete,
        fare_version="v1",
    )
    if saved:
        j.caps.append(CapApplied(cap_id="daily", saved=money(saved)))
    for n, (origin, destination) in enumerate(stops):
        leg = j.legs.add(
            leg_id=f"{journey_id}:{n}",
            operator_id="LUL",
            from_stop_id=origin,
            to_stop_id=destination,
            incomplete=not destination,
            fare_product_id="PAYG_Z1",
            transfer_rule_id="ONE_FARE" if n else "",
        )
        leg.entry_at.FromDatetime(start + timedelta(minutes=20 * n))
        if destination:
            leg.exit_at.FromDatetime(start + timedelta(minutes=20 * n + 15))
    return j


@dataclasses.dataclass
class Stack:
    accounts: AccountsApp
    travellers: accounts_pb2_grpc.TravellerServiceAsyncStub
    url: str
    card: str  # three journeys, free for a test to add
    carols_card: str  # one journey, owned by Carol from the start
    carols_session: str = ""

    async def sign_up(self, sign_in: bool = False) -> tuple[str, str]:
        """A new traveller's email (and session token when signed in)."""
        email = f"t{uuid.uuid4().hex[:10]}@example.org"
        await self.travellers.SignUp(accounts_pb2.SignUpRequest(email=email, password=PASSWORD))
        if not sign_in:
            return email, ""
        reply = await self.travellers.SignIn(
            accounts_pb2.SignInRequest(email=email, password=PASSWORD)
        )
        return email, reply.session_token

    async def signed_in_context(self, browser: Browser) -> tuple[BrowserContext, str]:
        """A browser context holding a fresh traveller's session cookie."""
        _, session = await self.sign_up(sign_in=True)
        context = await browser.new_context(base_url=self.url)
        await context.add_cookies([{"name": "clearway_session", "value": session, "url": self.url}])
        return context, session


async def publish(producer: AIOKafkaProducer, topic: str, *journeys: PricedJourney) -> None:
    for j in journeys:
        await producer.send_and_wait(topic, j.SerializeToString(), key=j.card_token.encode())


@pytest.fixture(scope="module")
async def stack(endpoints: Endpoints) -> AsyncIterator[Stack]:
    name = f"t{uuid.uuid4().hex[:10]}"
    settings = dataclasses.replace(
        ServiceSettings.from_env("accounts"),
        grpc_host="127.0.0.1",
        grpc_port=0,
        endpoints=endpoints,
        topics=Topics(f"{name}."),
        db_schema=name,
        consumer_group=f"{name}-accounts",
        grace_seconds=2.0,
    )
    accounts = build(settings)
    running = RunningService(accounts)
    port = await running.start()
    portal = PortalApp(
        PortalSettings(accounts_target=f"127.0.0.1:{port}", port=0, grace_seconds=1.0)
    )
    portal_port = await portal.start()
    producer = idempotent_producer(endpoints.kafka_bootstrap)
    await producer.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        card, carols = f"tok_a{uuid.uuid4().hex[:15]}", f"tok_c{uuid.uuid4().hex[:15]}"
        topic = settings.topics.journeys
        await publish(
            producer,
            topic,
            journey(card, "j-adjusted", T0, [("940GZZLUWLO", "940GZZLUBNK")], charge=250),
            journey(
                card,
                "j-adjusted",
                T0,
                [("940GZZLUWLO", "940GZZLUBNK")],
                charge=300,
                revision=2,
                delta=50,
            ),
            journey(
                card,
                "j-incomplete",
                T0 + timedelta(days=1),
                [("490000001", "")],
                charge=560,
                incomplete=True,
            ),
            journey(
                card,
                "j-capped",
                T0 + timedelta(days=2),
                [("940GZZLUKSX", "940GZZLUOXC"), ("940GZZLUOXC", "940GZZLUBST")],
                charge=280,
                saved=120,
            ),
            journey(carols, "j-carol", T0, [("940GZZLUSecret", "940GZZLUHidden")], charge=999),
        )
        deadline = time.monotonic() + 30
        while accounts.recorder is None or accounts.recorder.stats.stored < 5:
            assert time.monotonic() < deadline, "accounts did not store the journeys"
            await asyncio.sleep(0.1)
        made = Stack(
            accounts,
            accounts_pb2_grpc.TravellerServiceStub(channel),
            f"http://127.0.0.1:{portal_port}",
            card,
            carols,
        )
        _, carol = await made.sign_up(sign_in=True)
        made.carols_session = carol
        await made.travellers.AddCard(
            accounts_pb2.AddCardRequest(card_token=carols, label="Carol's"),
            metadata=(("authorization", f"Bearer {carol}"),),
        )
        yield made
    finally:
        await channel.close()
        await producer.stop()
        await portal.stop()
        await running.stop()
        await delete_topics_with_prefix(endpoints.kafka_bootstrap, name)


async def sign_in_with_form(page: Page, email: str, password: str = PASSWORD) -> None:
    await page.goto("/sign-in")
    await page.get_by_label("Email address").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def test_traveller_signs_up_adds_a_card_reads_journeys_downloads_csv_and_signs_out(
    stack: Stack, browser: Browser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    context = await browser.new_context(base_url=stack.url)
    page = await context.new_page()
    email = f"t{uuid.uuid4().hex[:10]}@example.org"

    await page.goto("/sign-up")
    await page.get_by_label("Email address").fill(email)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_label("Password again").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    assert page.url.endswith("/sign-in?notice=signed-up")
    assert "Your account is ready" in await page.locator("[role=status]").inner_text()

    await sign_in_with_form(page, email)
    assert page.url.endswith("/cards")
    assert await page.get_by_role("heading", level=1).inner_text() == "My cards"
    cookie = next(c for c in await context.cookies() if c["name"] == "clearway_session")
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["secure"]) == (True, "Lax", False)

    await page.get_by_label("Card token").fill(stack.card)
    await page.get_by_label("Name (optional)").fill("Commute")
    await page.get_by_role("button", name="Add card").click()
    assert "Card added." in await page.locator("[role=status]").inner_text()
    row = await page.locator("table.cards tbody tr").first.inner_text()
    # Its three journeys debited the balance (3.00 + 5.60 + 2.80): below zero, so blocked.
    assert "-£11.40" in row and "Blocked" in row
    await page.get_by_role("link", name="Journeys of Commute").click()

    assert "Commute" in await page.get_by_role("heading", level=1).inner_text()
    rows = page.locator("table.journeys tbody tr")
    assert await rows.count() == 3
    newest, incomplete, adjusted = [await rows.nth(i).inner_text() for i in range(3)]
    assert "940GZZLUKSX → 940GZZLUOXC" in newest and "940GZZLUOXC → 940GZZLUBST" in newest
    assert "£2.80" in newest and "£1.20" in newest  # charge, and what the cap saved
    # Each leg's fare product, the transferred leg, and the cap that applied.
    assert "(PAYG_Z1)" in newest and "(PAYG_Z1, transfer)" in newest and "daily" in newest
    assert "490000001 → (no exit)" in incomplete and "Incomplete" in incomplete
    assert "£5.60" in incomplete
    assert "£3.00" in adjusted and "Adjusted +£0.50 (revision 2)" in adjusted

    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download all journeys (CSV)").click()
    download = await download_info.value
    assert download.suggested_filename == "clearway-journeys.csv"
    text = await asyncio.to_thread(Path(await download.path()).read_text, encoding="utf-8")
    table = list(csv.DictReader(io.StringIO(text)))
    assert [r["journey_id"] for r in table] == ["j-capped", "j-incomplete", "j-adjusted"]
    assert [r["charge"] for r in table] == ["2.80", "5.60", "3.00"]
    assert [r["caps_saved"] for r in table] == ["1.20", "0.00", "0.00"]
    assert [r["incomplete"] for r in table] == ["no", "yes", "no"]
    assert [(r["revision"], r["adjustment"]) for r in table][2] == ("2", "0.50")
    assert table[0]["legs"] == "940GZZLUKSX → 940GZZLUOXC; 940GZZLUOXC → 940GZZLUBST"

    await page.get_by_role("button", name="Sign out").click()
    assert "You have signed out." in await page.locator("[role=status]").inner_text()
    assert not [c for c in await context.cookies() if c["name"] == "clearway_session"]
    await page.goto(f"/cards/{stack.card}/journeys")
    assert page.url.endswith("/sign-in")  # no session: no history
    with pytest.raises(grpc.aio.AioRpcError) as ended:  # and the session is over in accounts
        await stack.travellers.ListCards(
            accounts_pb2.ListCardsRequest(),
            metadata=(("authorization", f"Bearer {cookie['value']}"),),
        )
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await context.close()

    logged = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert stack.card not in logged and cookie["value"] not in logged and PASSWORD not in logged


async def test_another_traveller_cannot_reach_carols_card_by_url_or_form(
    stack: Stack, browser: Browser
) -> None:
    context, _ = await stack.signed_in_context(browser)
    page = await context.new_page()
    await page.goto("/cards")
    assert "no cards on your account" in await page.locator("main").inner_text()
    assert stack.carols_card not in await page.content()

    for url in (
        f"/cards/{stack.carols_card}/journeys",
        f"/cards/{stack.carols_card}/journeys?page=x",
    ):
        response = await page.goto(url)
        assert response is not None and response.status == 404
        body = await page.content()
        assert "could not find that card" in body
        assert "940GZZLUSecret" not in body and "9.99" not in body

    csv_answer = await context.request.get(f"/cards/{stack.carols_card}/journeys.csv")
    assert csv_answer.status == 404
    assert "j-carol" not in await csv_answer.text()

    # A form edited to name Carol's card: removing it is refused, adding it is refused.
    await page.goto("/cards")
    token = await page.locator("input[name=csrf_token]").first.get_attribute("value")
    removed = await context.request.post(
        "/cards/remove", form={"csrf_token": token or "", "card_token": stack.carols_card}
    )
    assert removed.status == 404
    await page.get_by_label("Card token").fill(stack.carols_card)
    await page.get_by_role("button", name="Add card").click()
    assert "belongs to another account" in await page.locator("[role=alert]").inner_text()
    assert await page.locator("table.cards").count() == 0
    await context.close()

    cards = await stack.accounts.travellers.repository.pool.fetchval(  # type: ignore[union-attr]
        "SELECT count(*) FROM traveller_cards WHERE card_token = $1", stack.carols_card
    )
    assert cards == 1  # still Carol's


async def test_a_post_without_the_csrf_token_is_refused_and_headers_protect_every_page(
    stack: Stack, browser: Browser
) -> None:
    context, session = await stack.signed_in_context(browser)
    page = await context.new_page()
    response = await page.goto("/cards")
    assert response is not None
    headers = response.headers
    csp = headers["content-security-policy"]
    assert "script-src" not in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer" and headers["cache-control"] == "no-store"
    assert await page.locator("script").count() == 0

    for form in (
        {"card_token": stack.card, "label": "stolen"},
        {"card_token": stack.card, "csrf_token": "forged"},
    ):
        refused = await context.request.post("/cards", form=form, max_redirects=0)
        assert refused.status == 403
        assert "did not come from this site" in await refused.text()
    signed_out = await context.request.post("/sign-out", form={}, max_redirects=0)
    assert signed_out.status == 403
    cards = await stack.travellers.ListCards(
        accounts_pb2.ListCardsRequest(), metadata=(("authorization", f"Bearer {session}"),)
    )
    assert list(cards.cards) == []  # nothing was added, and the session still works
    await context.close()


async def test_sign_in_by_keyboard_alone_and_every_input_has_a_label(
    stack: Stack, browser: Browser
) -> None:
    email, _ = await stack.sign_up()
    context = await browser.new_context(base_url=stack.url)
    page = await context.new_page()
    await page.goto("/sign-in")
    for _ in range(10):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "email":
            break
    else:
        pytest.fail("Tab never reached the email field")
    await page.keyboard.type(email)
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "password"
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/cards")
    assert await page.get_by_role("heading", level=1).inner_text() == "My cards"

    unlabelled = """() => [...document.querySelectorAll('input, select, textarea')]
        .filter(e => e.type !== 'hidden' && (!e.labels || e.labels.length === 0))
        .map(e => e.name)"""
    card = f"tok_k{uuid.uuid4().hex[:15]}"
    await page.get_by_label("Card token").fill(card)
    await page.get_by_role("button", name="Add card").click()
    for path in (
        "/sign-in",
        "/sign-up",
        "/password/forgot",
        "/password/reset",
        "/cards",
        f"/cards/{card}",
    ):
        await page.goto(path)
        assert await page.evaluate(unlabelled) == [], path
        assert await page.get_by_role("heading", level=1).count() == 1, path
        assert await page.locator("html").get_attribute("lang") == "en-GB"
    await context.close()


async def test_password_reset_with_the_mailed_code(stack: Stack, browser: Browser) -> None:
    email, _ = await stack.sign_up()
    context = await browser.new_context(base_url=stack.url)
    page = await context.new_page()
    await page.goto("/sign-in")
    await page.get_by_role("link", name="Forgotten your password?").click()
    await page.get_by_label("Email address").fill(email)
    await page.get_by_role("button", name="Send reset code").click()
    assert "we have sent it a reset code" in await page.locator("[role=status]").inner_text()

    assert stack.accounts.pool is not None
    mails = await TravellerRepository(stack.accounts.pool).outbox(email.lower())
    match = re.search(r"minutes\): (\S+)", mails[-1])
    assert match is not None
    new_password = "a different long passphrase"
    await page.get_by_label("Reset code").fill(match.group(1))
    await page.get_by_label("New password", exact=True).fill(new_password)
    await page.get_by_label("New password again").fill(new_password)
    await page.get_by_role("button", name="Change password").click()
    assert "Your password has been changed" in await page.locator("[role=status]").inner_text()

    await sign_in_with_form(page, email, PASSWORD)
    assert "do not match" in await page.locator("[role=alert]").inner_text()
    await sign_in_with_form(page, email, new_password)
    assert page.url.endswith("/cards")
    await context.close()


def bearer(session: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {session}"),)


async def form_fields(page: Page, form: str) -> dict[str, str]:
    """The named fields of the page's `form` (a CSS selector), as a browser would send them."""
    fields = page.locator(f"{form} input[name]")
    values: dict[str, str] = {}
    for n in range(await fields.count()):
        field = fields.nth(n)
        values[await field.get_attribute("name") or ""] = await field.input_value()
    return values


async def test_traveller_tops_up_a_card_once_per_form_and_sees_balance_and_movements(
    stack: Stack, browser: Browser
) -> None:
    context, session = await stack.signed_in_context(browser)
    card = f"tok_b{uuid.uuid4().hex[:15]}"
    await stack.travellers.AddCard(
        accounts_pb2.AddCardRequest(card_token=card, label="Top-ups"), metadata=bearer(session)
    )
    page = await context.new_page()
    await page.goto("/cards")
    assert "£0.00" in await page.locator("table.cards tbody tr").first.inner_text()
    await page.get_by_role("link", name="Balance and top-up of Top-ups").click()
    assert page.url.endswith(f"/cards/{card}")
    assert "Top-ups" in await page.get_by_role("heading", level=1).inner_text()
    assert "Nothing has changed this card's balance yet" in await page.locator("main").inner_text()

    await page.get_by_label("Amount in pounds").fill("10.00")
    await page.get_by_role("button", name="Top up").click()
    assert "Top-up done" in await page.locator("[role=status]").inner_text()
    assert await page.locator(".balance-now").inner_text() == "£10.00"
    rows = page.locator("table.movements tbody tr")
    assert await rows.count() == 1
    movement = await rows.first.inner_text()
    assert "Top-up" in movement and "+£10.00" in movement

    # The same form sent twice (a double click, a refreshed POST): credited once.
    await page.get_by_label("Amount in pounds").fill("5")
    sent = await form_fields(page, "form[action='/cards/top-up']")
    assert sent["amount"] == "5" and sent["card_token"] == card and sent["idempotency_key"]
    await page.get_by_role("button", name="Top up").click()
    assert await page.locator(".balance-now").inner_text() == "£15.00"
    again = await context.request.post("/cards/top-up", form=sent, max_redirects=0)
    assert again.status == 303
    assert again.headers["location"].endswith("notice=top-up-replayed")
    await page.goto(again.headers["location"])
    assert "nothing more was added" in await page.locator("[role=status]").inner_text()
    assert await page.locator(".balance-now").inner_text() == "£15.00"
    assert await rows.count() == 2
    # The same key for another amount is refused, and credits nothing.
    reused = await context.request.post("/cards/top-up", form={**sent, "amount": "7.00"})
    assert reused.status == 400
    assert "already used for another top-up" in await reused.text()
    balance = await stack.travellers.GetBalance(
        accounts_pb2.GetBalanceRequest(card_token=card), metadata=bearer(session)
    )
    assert balance.balance.amount_minor == 1500

    # Amounts the form refuses, with the traveller's input kept and the error announced.
    for typed, says in (
        ("0", "from £0.01 up to £500.00"),
        ("-5", "from £0.01 up to £500.00"),
        ("500.01", "from £0.01 up to £500.00"),
        ("ten pounds", "pounds and pence"),
        ("10.001", "pounds and pence"),
    ):
        await page.get_by_label("Amount in pounds").fill(typed)
        await page.get_by_role("button", name="Top up").click()
        assert says in await page.locator("[role=alert]").inner_text(), typed
        assert await page.get_by_label("Amount in pounds").input_value() == typed
        assert await page.locator("form.form").get_attribute("aria-describedby") == "form-error"
    assert await page.locator(".balance-now").inner_text() == "£15.00"
    # An empty amount never leaves the browser (required), and the keyboard reaches the form.
    await page.get_by_label("Amount in pounds").fill("")
    await page.get_by_label("Amount in pounds").focus()
    await page.keyboard.type("2.50")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**notice=topped-up")
    assert await page.locator(".balance-now").inner_text() == "£17.50"
    await context.close()


async def test_another_traveller_cannot_read_or_top_up_carols_card(
    stack: Stack, browser: Browser
) -> None:
    carol = bearer(stack.carols_session)
    request = accounts_pb2.GetBalanceRequest(card_token=stack.carols_card)
    before = (await stack.travellers.GetBalance(request, metadata=carol)).balance.amount_minor
    context, session = await stack.signed_in_context(browser)
    own = f"tok_o{uuid.uuid4().hex[:15]}"
    await stack.travellers.AddCard(
        accounts_pb2.AddCardRequest(card_token=own), metadata=bearer(session)
    )
    page = await context.new_page()
    for url in (f"/cards/{stack.carols_card}", f"/cards/{stack.carols_card}?movements=x"):
        response = await page.goto(url)
        assert response is not None and response.status == 404
        body = await page.content()
        assert "could not find that card" in body
        assert "9.99" not in body and "j-carol" not in body and "top-up" not in body.lower()

    # Their own card's form, edited to name Carol's card (and a valid form otherwise).
    await page.goto(f"/cards/{own}")
    sent = await form_fields(page, "form[action='/cards/top-up']")
    for card in (stack.carols_card, stack.carols_card.upper(), "", "4111111111111111"):
        answer = await context.request.post(
            "/cards/top-up", form={**sent, "card_token": card, "amount": "10.00"}
        )
        assert answer.status == 404, card
        assert "9.99" not in await answer.text()
    # With a bad amount too: still 404 (the card is checked before anything is shown).
    answer = await context.request.post(
        "/cards/top-up", form={**sent, "card_token": stack.carols_card, "amount": "0"}
    )
    assert answer.status == 404
    # Without the CSRF token nothing is tried at all.
    forged = {**sent, "csrf_token": "forged", "card_token": own, "amount": "10.00"}
    refused = await context.request.post("/cards/top-up", form=forged)
    assert refused.status == 403
    await context.close()

    after = await stack.travellers.GetBalance(request, metadata=carol)
    assert after.balance.amount_minor == before  # Carol's balance never moved
    own_balance = await stack.travellers.GetBalance(
        accounts_pb2.GetBalanceRequest(card_token=own), metadata=bearer(session)
    )
    assert own_balance.balance.amount_minor == 0
