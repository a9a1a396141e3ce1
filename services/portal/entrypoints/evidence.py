"""The officer's evidence packs: the usage evidence the reports job writes each night for
the council (docs/portal.md#evidence-packs, docs/reports.md#evidence-packs).

As every officer page, each handler starts with `Portal.officer_council`: sign-in without a
session, 403 for an account that is not an officer, and the council accounts knows for the
session. The pack directory is that council's, never one named by the URL: the URL names
only a period and a file, both checked against the layout's strict patterns.
"""

from __future__ import annotations

from aiohttp import web

from services.portal.adapters.evidence import EvidenceShelf
from services.portal.domain.evidence import council_dir, pack_tables
from services.portal.entrypoints.web import Portal

PERIOD_LIMIT = 32
FILE_LIMIT = 128


class EvidencePages:
    """The list of the council's packs, one pack's page, and its files."""

    def __init__(self, portal: Portal, shelf: EvidenceShelf) -> None:
        self.portal = portal
        self.shelf = shelf

    async def packs(self, request: web.Request) -> web.StreamResponse:
        """The periods with a pack for the officer's council, newest first."""
        _, council = await self.portal.officer_council(request)
        return self.portal.page(
            request,
            "officer/evidence.html",
            title="Evidence packs",
            council=council,
            packs=await self.shelf.packs(council.funder_id),
        )

    async def pack(self, request: web.Request) -> web.StreamResponse:
        """One pack: each table's chart, its CSV, and the summary (report.md) as text."""
        _, council = await self.portal.officer_council(request)
        period = request.match_info["period"][:PERIOD_LIMIT]
        pack = await self.shelf.pack(council.funder_id, period)
        if pack is None:
            raise web.HTTPNotFound
        return self.portal.page(
            request,
            "officer/evidence_pack.html",
            title=f"Evidence pack: {pack.period.text}",
            council=council,
            pack=pack,
            tables=pack_tables(pack.names, pack.summary),
        )

    async def file(self, request: web.Request) -> web.StreamResponse:
        """One file of the council's pack: a CSV (as a download), an SVG or a PNG."""
        _, council = await self.portal.officer_council(request)
        period = request.match_info["period"][:PERIOD_LIMIT]
        name = request.match_info["file"][:FILE_LIMIT]
        found = await self.shelf.file(council.funder_id, period, name)
        if found is None:
            raise web.HTTPNotFound
        # Both checked by the shelf: a funder's directory name, a period, a file name.
        saved = f"clearway-evidence-{council_dir(council.funder_id)}-{period}-{name}"
        disposition = "attachment" if found.content_type == "text/csv" else "inline"
        return web.Response(
            body=found.body,
            content_type=found.content_type,
            charset=None if found.content_type == "image/png" else "utf-8",
            headers={"Content-Disposition": f'{disposition}; filename="{saved}"'},
        )


def add_evidence_routes(app: web.Application, pages: EvidencePages) -> None:
    """The officer's evidence pages."""
    r = app.router
    r.add_get("/officer/evidence", pages.packs)
    r.add_get("/officer/evidence/{period}", pages.pack)
    r.add_get("/officer/evidence/{period}/{file}", pages.file)
