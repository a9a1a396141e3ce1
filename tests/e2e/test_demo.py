"""`clearway demo` (what `make demo` runs once the infrastructure is up), end to end on a
small day: the five processes on their default ports, the network day, Camden's youth
allowance spent at both providers, the closes, and every conservation check passing,
including those covering the council's redemptions."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime

import pytest

from clearway.scheme.file import load_scheme
from clearway.settings import REPO_ROOT
from services.demo import last_closable_day
from services.settlement.app import DEFAULT_SCHEME

pytestmark = pytest.mark.integration

BENEFIT_CHECKS = (
    "redemptions authorised = providers' vouchers redeemed = council's vouchers funded",
    "each provider's file is owed exactly its redemptions",
    "each young person's allowance - redemptions = what is left",
)


def test_the_demo_day_is_one_whose_period_may_already_close() -> None:
    scheme = load_scheme(DEFAULT_SCHEME)  # cut-off 10:00 Europe/London, the next day
    winter = {  # GMT: 10:00 London is 10:00 UTC
        datetime(2026, 12, 1, 9, 59, tzinfo=UTC): date(2026, 11, 29),
        datetime(2026, 12, 1, 10, 1, tzinfo=UTC): date(2026, 11, 30),
    }
    summer = {  # BST: 10:00 London is 09:00 UTC
        datetime(2026, 7, 15, 8, 59, tzinfo=UTC): date(2026, 7, 13),
        datetime(2026, 7, 15, 9, 1, tzinfo=UTC): date(2026, 7, 14),
    }
    for now, day in (winter | summer).items():
        assert last_closable_day(scheme, now) == day, now


def test_the_demo_runs_and_its_conservation_check_covers_the_council() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", "--cards", "60", "--validators", "2"],
        cwd=REPO_ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-4000:]
    assert "Conservation check passed." in out
    for check in BENEFIT_CHECKS:
        assert f"ok     {check}" in out, check
    assert "granted     12 young people" in out
    assert "at provider:camden-leisure" in out and "at provider:soundbox" in out
    assert "refused     1 (OVER_VISIT_LIMIT)" in out
    assert "replayed    1" in out
    assert "Camden's usage evidence for" in out  # the pack the officer's portal pages show
    for party in ("provider:camden-leisure", "provider:soundbox", "funder:camden"):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(party))
        assert "verified" in line, line
