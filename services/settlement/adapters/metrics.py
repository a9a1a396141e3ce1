"""Settlement's metrics (served at /metrics; names, units and attributes in docs/metrics.md):
the ledger's totals per open period and account, read from PostgreSQL at an interval.

The totals are the ledger's own figures (every instance reports the same ones, whatever it
posted itself, and a restart loses nothing), not counts kept in this process. Only open
periods are reported: a closed period is final (its signed files hold its figures) and
stops being reported, so the period attribute takes only a few values at a time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from opentelemetry import metrics

from clearway.consumer import RetryPolicy, back_off_after
from clearway.telemetry import ObservedGauge

log = logging.getLogger(__name__)
meter = metrics.get_meter("clearway.settlement")

LEDGER_POSTED = ObservedGauge(
    meter,
    "clearway.settlement.ledger.posted",
    unit="{minor_unit}",
    description=(
        "Posted so far in each open settlement period per ledger account, over all parties,"
        " in minor units of the currency (a period's accounts sum to 0)"
    ),
)


class OpenPeriodTotals(Protocol):
    """The ledger, as the totals read it."""

    async def open_period_totals(self) -> list[tuple[str, str, str, int]]:
        """(period, account, currency, amount in minor units) of every open period."""
        ...


class LedgerTotals:
    """The latest totals read from the ledger, for the gauge to report."""

    def __init__(self, ledger: OpenPeriodTotals) -> None:
        self._ledger = ledger
        self._totals: list[tuple[str, str, str, int]] = []

    async def refresh(self) -> None:
        """Read the totals now."""
        self._totals = await self._ledger.open_period_totals()

    async def run(self, interval_s: float, retry: RetryPolicy | None = None) -> None:
        """Refresh every `interval_s` until cancelled; a failed read (PostgreSQL away) is
        logged and retried with back-off, keeping the last totals meanwhile."""
        policy = retry or RetryPolicy()
        delays = policy.delays()
        while True:
            try:
                await self.refresh()
            except Exception as exc:
                await back_off_after("reading the ledger totals failed", exc, delays, log)
                continue
            delays = policy.delays()
            await asyncio.sleep(interval_s)

    def points(self) -> list[tuple[int, dict[str, str]]]:
        """The gauge's points (read at collection)."""
        return [
            (
                amount,
                {
                    "clearway.period": period,
                    "clearway.ledger.account": account,
                    "clearway.currency": currency,
                },
            )
            for period, account, currency, amount in self._totals
        ]
