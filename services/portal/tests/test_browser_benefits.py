"""Council entitlements in the portal, end to end in headless Chromium (issue 11): the real
accounts service in-process (real Kafka, PostgreSQL and Redis) with the example scheme file,
the portal between the browser and accounts, an officer of funder:camden and a device of
provider:camden-leisure provisioned as the scheme's engineers would.

A young person signs up and adds a scheme card; an officer signs in and grants the youth
leisure allowance; the young person sees £20.00 this month; the provider's device redeems
£7.50 of swimming; the young person sees £12.50 and the redemption; the officer's report
shows the chart, and the one person's cells suppressed, with no card or email in it. The
officer opens the council's evidence pack (written by the reports code beforehand, as the
nightly job would): every chart loads as an image under the portal's CSP, and no card
token of the pack's day is in the page or its CSV."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.async_api import Browser, Page

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.device_keys import raw_public_key
from clearway.infra.endpoints import Endpoints
from clearway.kafka import Topics, delete_topics_with_prefix
from clearway.money import Money
from clearway.runtime import RunningService
from clearway.scheme.file import load_scheme
from clearway.settings import REPO_ROOT, ServiceSettings
from services.accounts.app import AccountsApp, build
from services.accounts.redemption_device import RedemptionDevice
from services.accounts.service_layer.benefits_admin import add_officer, register_device
from services.portal.app import PortalApp, PortalSettings
from services.portal.tests.evidence_packs import PERIOD, TABLES, day_identifiers, write_day_pack
from services.portal.tests.test_browser import PASSWORD
from services.portal.tests.test_browser_claims import env

pytestmark = pytest.mark.integration

SCHEME_FILE = REPO_ROOT / "examples" / "schemes" / "london.toml"
COUNCIL = "funder:camden"
PROVIDER = "provider:camden-leisure"
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
    .filter(e => e.type !== 'hidden' && (!e.labels || e.labels.length === 0))
    .map(e => e.name)"""


@dataclasses.dataclass
class BenefitsStack:
    accounts: AccountsApp
    travellers: accounts_pb2_grpc.TravellerServiceAsyncStub
    channel: grpc.aio.Channel  # to accounts, as a provider's device would reach it
    url: str


@pytest.fixture(scope="module")
async def benefits_stack(
    endpoints: Endpoints, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BenefitsStack]:
    name = f"t{uuid.uuid4().hex[:10]}"
    # The evidence pack the nightly reports job would have written for funder:camden.
    reports_dir = tmp_path_factory.mktemp("reports")
    write_day_pack(reports_dir)
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
    with env(CLEARWAY_SCHEME_FILE=str(SCHEME_FILE)):
        accounts = build(settings)
        running = RunningService(accounts)
        port = await running.start()
    portal = PortalApp(
        PortalSettings(
            accounts_target=f"127.0.0.1:{port}",
            port=0,
            reports_dir=reports_dir,
            grace_seconds=1.0,
        )
    )
    portal_port = await portal.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield BenefitsStack(
            accounts,
            accounts_pb2_grpc.TravellerServiceStub(channel),
            channel,
            f"http://127.0.0.1:{portal_port}",
        )
    finally:
        await channel.close()
        await portal.stop()
        await running.stop()
        await delete_topics_with_prefix(endpoints.kafka_bootstrap, name)


def service_day_now() -> date:
    """Today's service day as accounts' default clock counts it (Europe/London, 04:30)."""
    return (datetime.now(ZoneInfo("Europe/London")) - timedelta(hours=4, minutes=30)).date()


def born_years_ago(years: int, today: date) -> str:
    """A date of birth that makes someone exactly `years` old on `today`."""
    return date(today.year - years, today.month, min(today.day, 28)).isoformat()


async def sign_in(page: Page, email: str) -> None:
    await page.goto("/sign-in")
    await page.get_by_label("Email address").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()


async def assert_accessible(page: Page, path: str) -> None:
    """Every input labelled, one <h1>."""
    assert await page.evaluate(UNLABELLED) == [], path
    assert await page.get_by_role("heading", level=1).count() == 1, path


async def test_officer_grants_the_youth_allowance_and_a_provider_redemption_shows_everywhere(
    benefits_stack: BenefitsStack, browser: Browser
) -> None:
    stack = benefits_stack
    young_email = f"young{uuid.uuid4().hex[:8]}@example.org"
    officer_email = f"officer{uuid.uuid4().hex[:8]}@camden.example"
    card = f"sc_{uuid.uuid4().hex[:14]}"
    today = service_day_now()

    # The young person signs up and adds their scheme card, in the browser.
    young = await browser.new_context(base_url=stack.url)
    page = await young.new_page()
    await page.goto("/sign-up")
    await page.get_by_label("Email address").fill(young_email)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_label("Password again").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await sign_in(page, young_email)
    assert page.url.endswith("/cards")  # a traveller, not an officer
    await page.get_by_label("Card token").fill(card)
    await page.get_by_label("Name (optional)").fill("My card")
    await page.get_by_role("button", name="Add card").click()
    assert "Card added." in await page.locator("[role=status]").inner_text()
    await page.get_by_role("link", name="My entitlements").click()
    assert "You have no entitlements" in await page.locator("main").inner_text()
    await assert_accessible(page, "/entitlements")
    # A traveller never sees the officer pages, nor a link to them.
    assert await page.get_by_role("link", name="Council").count() == 0
    for path in ("/officer", "/officer/grant", "/officer/report", f"/officer/evidence/{PERIOD}"):
        refused = await page.goto(path)
        assert refused is not None and refused.status == 403, path
        assert "for council officers only" in await page.locator("main").inner_text()

    # The scheme's engineers make the officer (an account first, then the role).
    await stack.travellers.SignUp(
        accounts_pb2.SignUpRequest(email=officer_email, password=PASSWORD)
    )
    assert stack.accounts.pool is not None
    await add_officer(stack.accounts.pool, officer_email, COUNCIL)

    # The officer signs in, checks the evidence and grants the youth allowance.
    officer = await browser.new_context(base_url=stack.url)
    desk = await officer.new_page()
    await sign_in(desk, officer_email)
    assert desk.url.endswith("/officer")
    schemes = await desk.locator("table.schemes").inner_text()
    assert "camden-youth-leisure" in schemes and "used this month" in schemes
    await assert_accessible(desk, "/officer")
    await desk.get_by_role("link", name="Grant an entitlement").first.click()
    await assert_accessible(desk, "/officer/grant")
    key = await desk.locator("input[name=idempotency_key]").input_value()
    assert len(key) >= 24
    await desk.get_by_label("Traveller's email address").fill(young_email)
    await desk.get_by_label("Scheme").select_option(value="camden-youth-leisure")
    await desk.get_by_label("Date of birth").fill(born_years_ago(25, today))
    await desk.get_by_label("Residence area").fill("camden")
    await desk.get_by_label("Evidence seen").fill("Passport checked at the desk")
    await desk.get_by_role("button", name="Grant entitlement").click()
    # Too old: refused in words, the form kept, a fresh key for the next try.
    alert = await desk.locator("[role=alert]").inner_text()
    assert "Not eligible: age outside 11\u201318 on the day of the grant" in alert
    assert await desk.get_by_label("Traveller's email address").input_value() == young_email
    assert await desk.locator("input[name=idempotency_key]").input_value() != key
    await desk.get_by_label("Date of birth").fill(born_years_ago(15, today))
    await desk.get_by_role("button", name="Grant entitlement").click()
    assert "Entitlement granted" in await desk.locator("[role=status]").inner_text()
    grant = desk.locator("table.grants tbody tr", has_text=young_email)
    assert await grant.count() == 1
    assert "£20.00 of £20.00 this month" in await grant.inner_text()
    assert await grant.get_by_role("button", name="Revoke").count() == 1
    await assert_accessible(desk, "/officer/grants")
    await desk.get_by_role("link", name="Audit trail").click()
    assert "Granted" in await desk.locator("table.audit").inner_text()
    await assert_accessible(desk, "/officer/audit")

    # The young person sees the allowance.
    await page.goto("/entitlements")
    entitlement = page.locator("section.entitlement")
    assert await entitlement.count() == 1
    text = await entitlement.inner_text()
    assert "£20.00 of £20.00 this month" in text, text
    assert "swimming" in text and "up to £10.00 a visit" in text

    # The leisure centre's device, registered by the scheme's engineers, redeems £7.50.
    key_pair = Ed25519PrivateKey.generate()
    device_id = f"pos-{uuid.uuid4().hex[:8]}"
    scheme = load_scheme(SCHEME_FILE)
    await register_device(
        stack.accounts.pool, device_id, PROVIDER, raw_public_key(key_pair), scheme
    )
    device = RedemptionDevice(device_id, key_pair)
    await device.redeem(stack.channel, card, "swimming", Money(750, "GBP"), "visit-1")

    # The young person reloads: £12.50 left, and the swim.
    await page.reload()
    text = await entitlement.inner_text()
    assert "£12.50 of £20.00 this month" in text, text
    swim = entitlement.locator("table.entitlement-movements tbody tr", has_text="Swimming at")
    assert await swim.count() == 1
    assert "-£7.50" in await swim.inner_text()

    # The officer's report: the chart and the tables, the one person's cells suppressed.
    month = today.strftime("%Y-%m")
    response = await desk.goto(f"/officer/report?month={month}")
    assert response is not None and response.status == 200
    await assert_accessible(desk, "/officer/report")
    chart = desk.locator("svg#chart-spend")
    assert await chart.count() == 1
    assert await chart.get_attribute("role") == "img"
    assert "Spend by service category" in (await chart.locator("title").first.text_content() or "")
    assert await desk.locator("svg.chart").count() == 2
    assert await desk.locator("table.report tbody tr").count() >= 1
    report = await desk.locator("main").inner_text()
    assert "fewer than 10" in report
    html = await desk.content()
    assert card not in html and young_email not in html
    async with desk.expect_download() as download_info:
        await desk.get_by_role("link", name="Download spend by service category (CSV)").click()
    download = await download_info.value
    assert download.suggested_filename == f"clearway-report-{month}-spend_by_category.csv"
    saved = Path(await download.path())
    csv_text = await asyncio.to_thread(saved.read_text, encoding="utf-8")
    assert card not in csv_text and young_email not in csv_text
    await young.close()
    await officer.close()


async def test_officer_grants_a_reward_once_a_month_and_revokes_a_grant(
    benefits_stack: BenefitsStack, browser: Browser
) -> None:
    stack = benefits_stack
    young_email = f"young{uuid.uuid4().hex[:8]}@example.org"
    officer_email = f"officer{uuid.uuid4().hex[:8]}@camden.example"
    for email in (young_email, officer_email):
        await stack.travellers.SignUp(accounts_pb2.SignUpRequest(email=email, password=PASSWORD))
    assert stack.accounts.pool is not None
    await add_officer(stack.accounts.pool, officer_email, COUNCIL)
    signed_in = await stack.travellers.SignIn(
        accounts_pb2.SignInRequest(email=young_email, password=PASSWORD)
    )
    young = await browser.new_context(base_url=stack.url)
    await young.add_cookies(
        [{"name": "clearway_session", "value": signed_in.session_token, "url": stack.url}]
    )
    page = await young.new_page()

    officer = await browser.new_context(base_url=stack.url)
    desk = await officer.new_page()
    await sign_in(desk, officer_email)
    await desk.goto("/officer/grant")
    await desk.get_by_label("Traveller's email address").fill(young_email)
    await desk.get_by_label("Scheme").select_option(value="camden-youth-leisure")
    await desk.get_by_label("Date of birth").fill(born_years_ago(12, service_day_now()))
    await desk.get_by_label("Residence area").fill("camden")
    await desk.get_by_label("Evidence seen").fill("School letter seen")
    await desk.get_by_role("button", name="Grant entitlement").click()
    assert "Entitlement granted" in await desk.locator("[role=status]").inner_text()

    # A reward of an officer_grant rule, once a month: the second is refused in words.
    await desk.get_by_role("link", name="Rewards").click()
    await assert_accessible(desk, "/officer/rewards")
    for attempt in range(2):
        await desk.get_by_label("Traveller's email address").fill(young_email)
        await desk.get_by_label("Reward", exact=True).select_option(value="camden-youth-bonus")
        await desk.get_by_label("Reason").fill("Volunteered at the lido")
        await desk.get_by_role("button", name="Grant reward").click()
        if attempt == 0:
            assert "Reward credited" in await desk.locator("[role=status]").inner_text()
    assert "already had that reward" in await desk.locator("[role=alert]").inner_text()

    await page.goto("/entitlements")
    entitlement = page.locator("section.entitlement")
    text = await entitlement.inner_text()
    assert "£25.00 of £20.00 this month" in text, text  # the allowance and the bonus
    reward = entitlement.locator("table.entitlement-movements tbody tr", has_text="Reward")
    assert "+£5.00" in await reward.inner_text()

    # Revoked at once, with the officer's reason: the grant and the traveller say so.
    await desk.goto("/officer/grants")
    row = desk.locator("table.grants tbody tr", has_text=young_email)
    await row.get_by_label("Reason").fill("Moved out of Camden")
    await row.get_by_role("button", name="Revoke").click()
    assert "Entitlement revoked" in await desk.locator("[role=status]").inner_text()
    assert "Revoked" in await row.inner_text()
    assert await row.get_by_role("button", name="Revoke").count() == 0
    await desk.goto("/officer/audit")
    audit = await desk.locator("table.audit").inner_text()
    assert "Revoked" in audit and "Reward credited" in audit
    await page.reload()
    assert "Revoked" in await entitlement.inner_text()
    await young.close()
    await officer.close()


async def test_officer_opens_the_councils_evidence_pack_and_its_charts_load(
    benefits_stack: BenefitsStack, browser: Browser
) -> None:
    stack = benefits_stack
    officer_email = f"officer{uuid.uuid4().hex[:8]}@camden.example"
    await stack.travellers.SignUp(
        accounts_pb2.SignUpRequest(email=officer_email, password=PASSWORD)
    )
    assert stack.accounts.pool is not None
    await add_officer(stack.accounts.pool, officer_email, COUNCIL)

    # Signed out: the evidence pages ask for sign-in, as every officer page does.
    visitor = await browser.new_context(base_url=stack.url)
    door = await visitor.new_page()
    await door.goto(f"/officer/evidence/{PERIOD}")
    assert door.url.endswith("/sign-in")
    await visitor.close()

    officer = await browser.new_context(base_url=stack.url)
    desk = await officer.new_page()
    refused: list[str] = []  # the CSP's refusals, as Chromium reports them
    desk.on(
        "console",
        lambda message: (
            refused.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    await sign_in(desk, officer_email)
    assert desk.url.endswith("/officer")
    await desk.get_by_role("link", name="Evidence packs").first.click()
    assert desk.url.endswith("/officer/evidence")
    await assert_accessible(desk, "/officer/evidence")
    await desk.get_by_role("link", name="15 June 2026").click()
    assert desk.url.endswith(f"/officer/evidence/{PERIOD}")
    await desk.wait_for_load_state("load")  # every <img> loaded or failed
    await assert_accessible(desk, "/officer/evidence/{period}")

    ridership = desk.get_by_role("img", name=re.compile(r"^Chart: Boardings by boarding area"))
    assert await ridership.count() == 1
    assert await ridership.get_attribute("src") == f"/officer/evidence/{PERIOD}/ridership.svg"
    assert await ridership.evaluate("img => img.complete && img.naturalWidth") > 0
    widths = await desk.locator("main img").evaluate_all(
        "imgs => imgs.map(i => [i.getAttribute('src'), i.complete ? i.naturalWidth : 0])"
    )
    assert len(widths) == len(TABLES)
    assert all(width > 0 for _, width in widths), widths
    summary = await desk.locator("pre.evidence-summary").inner_text()
    assert summary.startswith("# Usage evidence: London Borough of Camden (funder:camden)")
    html = await desk.content()
    for ident in day_identifiers():
        assert ident not in html, ident
    async with desk.expect_download() as download_info:
        await desk.get_by_role(
            "link", name="Download boardings by boarding area, hour and operator (CSV)"
        ).click()
    download = await download_info.value
    assert download.suggested_filename == (
        f"clearway-evidence-funder_camden-{PERIOD}-ridership.csv"
    )
    saved = Path(await download.path())
    csv_text = await asyncio.to_thread(saved.read_text, encoding="utf-8")
    assert csv_text.startswith("boarding_area,hour,operator_id,boardings,cards")
    for ident in day_identifiers():
        assert ident not in csv_text, ident
    assert refused == []
    await officer.close()
