"""The officer's evidence pages over HTTP, with in-memory fakes of accounts and packs the
real reports code writes into tmp_path: who may see them, the list, a pack's page with its
charts as images and its summary escaped, its files with their content types, and no way
out of the council's own directory."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from services.portal.adapters.evidence import EvidenceShelf
from services.portal.entrypoints.benefits import BenefitsPages, add_benefits_routes
from services.portal.entrypoints.evidence import EvidencePages, add_evidence_routes
from services.portal.entrypoints.web import CSP, Portal, WebConfig, web_app
from services.portal.tests.evidence_packs import (
    MONTH,
    PERIOD,
    TABLES,
    day_identifiers,
    write_day_pack,
)
from services.portal.tests.test_benefits_pages import FakeAccounts, FakeBenefits, Site

PACK = f"/officer/evidence/{PERIOD}"
ISLINGTON_DAY = "2026-06-14"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evidence") / "reports"
    write_day_pack(root)
    write_day_pack(root, MONTH)
    write_day_pack(root, ISLINGTON_DAY, "funder:islington")
    return root


@pytest.fixture
async def site(written: Path) -> AsyncIterator[Site]:
    benefits = FakeBenefits()
    portal = Portal(FakeAccounts(), benefits, WebConfig(secret=b"s" * 32))  # type: ignore[arg-type]
    app = web_app(portal)
    add_benefits_routes(app, BenefitsPages(portal))
    add_evidence_routes(app, EvidencePages(portal, EvidenceShelf(written)))
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Site(client, benefits)
    finally:
        await client.close()


async def raw_get(site: Site, path: str) -> tuple[int, str]:
    """GET `path` exactly as written (no client normalising `..` or decoding), with the
    browser's cookies."""
    url = site.client.make_url("/")
    cookies = site.client.session.cookie_jar.filter_cookies(url)
    cookie = "; ".join(f"{k}={v.value}" for k, v in cookies.items())
    reader, writer = await asyncio.open_connection(url.host, url.port)
    request = f"GET {path} HTTP/1.1\r\nHost: {url.host}\r\nCookie: {cookie}\r\n"
    request += "Connection: close\r\n\r\n"
    writer.write(request.encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode("utf-8", "replace")


async def test_signed_out_the_evidence_pages_ask_for_sign_in(site: Site) -> None:
    for path in ("/officer/evidence", PACK, f"{PACK}/ridership.csv"):
        answer = await site.client.get(path, allow_redirects=False)
        assert answer.status == 303 and answer.headers["Location"] == "/sign-in", path


async def test_a_traveller_gets_403_on_every_evidence_page(site: Site) -> None:
    await site.sign_in("young@example.org")
    calls = site.benefits.council_calls
    for path in ("/officer/evidence", PACK, f"{PACK}/ridership.csv", f"{PACK}/ridership.svg"):
        answer = await site.client.get(path)
        assert answer.status == 403, path
        assert answer.headers["Content-Type"].startswith("text/html")
        assert "for council officers only" in await answer.text()
    assert site.benefits.council_calls == calls  # the remembered answer, not accounts


async def test_the_officer_home_and_report_link_the_evidence_list(site: Site) -> None:
    await site.sign_in("officer@camden.example")
    for path in ("/officer", "/officer/report?month=2026-06"):
        page = await (await site.client.get(path)).text()
        assert 'href="/officer/evidence"' in page, path


async def test_the_list_has_the_councils_own_periods_newest_first(site: Site) -> None:
    await site.sign_in("officer@camden.example")
    # A council named in the query changes nothing: the council is the session's.
    answer = await site.client.get("/officer/evidence?council=funder:islington")
    assert answer.status == 200
    page = await answer.text()
    links = re.findall(r'href="/officer/evidence/([^"/]+)"', page)
    assert links == [MONTH, PERIOD]
    assert "June 2026" in page and "15 June 2026" in page
    assert ISLINGTON_DAY not in page
    assert '<a href="/officer/evidence" aria-current="page">Evidence packs</a>' in page


async def test_a_pack_shows_each_chart_as_an_image_its_csv_and_the_summary(site: Site) -> None:
    await site.sign_in("officer@camden.example")
    answer = await site.client.get(PACK)
    assert answer.status == 200
    assert answer.headers["Content-Security-Policy"] == CSP and "img-src 'self'" in CSP
    page = await answer.text()
    assert page.count("<h1>") == 1 and "Evidence pack: 15 June 2026" in page
    for name in TABLES:
        assert f'<img src="{PACK}/{name}.svg" alt="Chart: ' in page, name
        assert f'href="{PACK}/{name}.csv" download' in page, name
        assert f'href="{PACK}/{name}.png"' in page, name
    assert '<h2 id="table-ridership">Boardings by boarding area, hour and operator</h2>' in page
    assert "<svg" not in page and "<script" not in page  # images, never inline markup
    summary = re.search(r'<pre class="evidence-summary"[^>]*>(.*?)</pre>', page, re.S)
    assert summary is not None
    assert "# Usage evidence: London Borough of Camden (funder:camden)" in summary.group(1)
    assert "`&lt;10`" in summary.group(1)  # the summary's own text, escaped
    for ident in day_identifiers():
        assert ident not in page, ident
    month = await site.client.get(f"/officer/evidence/{MONTH}")
    assert month.status == 200 and "Evidence pack: June 2026" in await month.text()


async def test_each_file_is_served_with_its_content_type(site: Site, written: Path) -> None:
    await site.sign_in("officer@camden.example")
    on_disk = written / "funder_camden" / PERIOD
    answer = await site.client.get(f"{PACK}/ridership.csv")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert answer.headers["Content-Disposition"] == (
        f'attachment; filename="clearway-evidence-funder_camden-{PERIOD}-ridership.csv"'
    )
    body = await answer.read()
    assert body == (on_disk / "ridership.csv").read_bytes()
    assert next(csv.reader(io.StringIO(body.decode())))[:2] == ["boarding_area", "hour"]
    svg = await site.client.get(f"{PACK}/ridership.svg")
    assert svg.headers["Content-Type"] == "image/svg+xml; charset=utf-8"
    assert svg.headers["Content-Security-Policy"] == CSP
    assert svg.headers["X-Content-Type-Options"] == "nosniff"
    assert (await svg.read()).startswith(b"<svg")
    png = await site.client.get(f"{PACK}/ridership.png")
    assert png.headers["Content-Type"] == "image/png"
    assert (await png.read()) == (on_disk / "ridership.png").read_bytes()
    for name in TABLES:
        for ext in ("csv", "svg", "png"):
            served = await (await site.client.get(f"{PACK}/{name}.{ext}")).read()
            for ident in day_identifiers():
                assert ident.encode() not in served, (name, ext, ident)


@pytest.mark.parametrize(
    "path",
    [
        f"{PACK}/..%2F..%2Ffunder_islington%2F{ISLINGTON_DAY}%2Fridership.csv",
        f"/officer/evidence/..%2Ffunder_islington%2F{ISLINGTON_DAY}/ridership.csv",
        "/officer/evidence/%2E%2E/funder_islington",
        f"/officer/evidence/{ISLINGTON_DAY}/ridership.csv",  # Islington's period, not Camden's
        f"/officer/evidence/{ISLINGTON_DAY}",
        f"{PACK}/%2Fetc%2Fpasswd",
        f"{PACK}/%2E%2E%2F%2E%2E%2Ffunder_islington%2F{ISLINGTON_DAY}%2Fridership.csv",
        f"{PACK}/index.html",
        f"{PACK}/report.md",
        f"{PACK}/missing.csv",
        f"{PACK}/ridership.csv%00.png",
        "/officer/evidence/2026-06-16",
        "/officer/evidence/2026-02-30/ridership.csv",
    ],
)
async def test_nothing_outside_the_councils_packs_is_served(site: Site, path: str) -> None:
    await site.sign_in("officer@camden.example")
    assert (await raw_get(site, f"{PACK}/ridership.csv"))[0] == 200  # the cookies work
    status, body = await raw_get(site, path)
    assert status == 404, path
    assert "There is nothing here." in body
    assert "boarding_area" not in body and "root:" not in body


async def test_dot_dot_segments_never_leave_the_officer_pages(site: Site) -> None:
    await site.sign_in("officer@camden.example")
    for path in (
        f"{PACK}/../../../etc/passwd",
        f"/officer/evidence/../../../../{ISLINGTON_DAY}/ridership.csv",
    ):
        status, body = await raw_get(site, path)
        assert status == 404, path
        assert "root:" not in body and "boarding_area" not in body
    answer = await site.client.get(URL(f"{PACK}/%2e%2e/ridership.csv", encoded=True))
    assert answer.status == 404


async def test_a_link_in_a_pack_is_not_followed(site: Site, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("card_token\ntok-secret\n", encoding="utf-8")
    pack = write_day_pack(tmp_path / "reports")
    (pack / "leak.csv").symlink_to(secret)
    portal = Portal(FakeAccounts(), FakeBenefits(), WebConfig(secret=b"s" * 32))  # type: ignore[arg-type]
    app = web_app(portal)
    add_evidence_routes(app, EvidencePages(portal, EvidenceShelf(tmp_path / "reports")))
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        linked = Site(client, FakeBenefits())
        await linked.sign_in("officer@camden.example")
        page = await (await client.get(PACK)).text()
        assert "leak" not in page  # not listed...
        answer = await client.get(f"{PACK}/leak.csv")
        assert answer.status == 404  # ...nor read through the link
        assert "tok-secret" not in await answer.text()
    finally:
        await client.close()


async def test_the_summary_is_shown_as_text_never_as_markup(site: Site, tmp_path: Path) -> None:
    pack = write_day_pack(tmp_path / "reports")
    (pack / "report.md").write_text(
        "# Evil </pre><script>alert(1)</script>\n<img src=x onerror=alert(2)>\n",
        encoding="utf-8",
    )
    portal = Portal(FakeAccounts(), FakeBenefits(), WebConfig(secret=b"s" * 32))  # type: ignore[arg-type]
    app = web_app(portal)
    add_evidence_routes(app, EvidencePages(portal, EvidenceShelf(tmp_path / "reports")))
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        await Site(client, FakeBenefits()).sign_in("officer@camden.example")
        page = await (await client.get(PACK)).text()
        assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "<script" not in page and "<img src=x" not in page
        assert "Ridership" in page  # tables without a title in the summary: by name
    finally:
        await client.close()
