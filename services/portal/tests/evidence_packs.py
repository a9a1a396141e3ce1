"""Evidence packs written by the real reports code (no Kafka): the reports' hand-counted
service day of funder:camden (services/reports/tests/day.py), built and written as the
nightly job does with `--packs`."""

from __future__ import annotations

from pathlib import Path

from clearway.settings import REPO_ROOT
from services.reports.adapters.benefits import posting_from_event
from services.reports.adapters.feed import network_places
from services.reports.adapters.files import write_pack
from services.reports.adapters.journeys import journey_from_event
from services.reports.domain.reports import ReportScope, build_reports
from services.reports.domain.scope import Period, council_of
from services.reports.tests.day import (
    COUNCIL,
    MONTH,
    PERIOD,
    day_scheme,
    hand_counted_day,
    hand_counted_postings,
    identifiers,
)

LONDON_FEED = REPO_ROOT / "examples" / "feeds" / "london"
TABLES = (
    "ridership",
    "origin_destination",
    "concession_take_up",
    "voucher_spend",
    "budget",
    "rewards",
)
__all__ = ["COUNCIL", "MONTH", "PERIOD", "TABLES", "day_identifiers", "write_day_pack"]


def write_day_pack(packs: Path, period: str = PERIOD, council: str | None = COUNCIL) -> Path:
    """The pack of `period` for `council` (None: the network) under `packs`; its directory."""
    scheme = day_scheme()
    places = network_places(LONDON_FEED)
    span = Period.parse(period)
    scope = ReportScope(
        period=span,
        timezone=places.timezone,
        currency=scheme.currency,
        council=council_of(scheme, council, span) if council else None,
        stop_areas=places.stop_areas,
        entitlement_schemes=scheme.entitlement_schemes,
    )
    reports = build_reports(
        [journey_from_event(e) for e in hand_counted_day()],
        [posting_from_event(p) for p in hand_counted_postings()],
        scope,
    )
    return write_pack(reports, packs)[0].parent


def day_identifiers() -> set[str]:
    """Every card token, journey, leg and posting id of the day: none may reach a page."""
    return set(identifiers(hand_counted_day(), hand_counted_postings()))
