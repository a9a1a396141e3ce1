"""`clearway soak` for real, but short: the fleet at a low steady rate for 45 seconds
(`make soak` runs it for 30 minutes). Checks that the report, the samples, the plot and
the verdict exist and are sane, not that a run this short passes: its memory slopes are
over too few minutes to mean anything (docs/soak.md)."""

from __future__ import annotations

import csv
import json

import pytest

from clearway.infra.endpoints import Endpoints
from services.demo import ABOVE_EPHEMERAL_SHIFT
from services.soak.run import Settings, run_soak

pytestmark = pytest.mark.integration

PROCESSES = {"ingest", "fares", "settlement", "accounts", "portal"}
CONSUMERS = {"fares", "settlement", "accounts"}


@pytest.mark.timeout(150)
async def test_a_short_soak_of_the_real_fleet_samples_judges_and_reports(
    endpoints: Endpoints,
) -> None:
    settings = Settings(
        minutes=0.75,
        rate=40,
        seed=3,
        sample_s=3,
        warmup_s=10,
        slice_s=15,
        drain_s=15,
        read_every_s=1,
        portal_every_s=3,
        # Not 11300: a real `make soak` may be running meanwhile.
        port_shift=ABOVE_EPHEMERAL_SHIFT + 350,
    )
    outcome = await run_soak(settings)

    out = outcome.report.parent
    report = outcome.report.read_text()
    assert report.startswith(f"# Soak {outcome.run_id}: ")
    for heading in ("## Verdict", "## Memory per process", "## Consumer lag", "## Logs"):
        assert heading in report
    assert (out / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = list(csv.DictReader((out / "samples.csv").open()))
    run = [r for r in rows if r["phase"] == "run"]
    assert len(run) >= 10  # every ~3 s for 45 s
    assert {f"rss_mb_{p}" for p in PROCESSES} <= set(rows[0])
    assert all(20 < float(r[f"rss_mb_{p}"]) < 2000 for r in run for p in PROCESSES)
    assert int(run[-1]["accepted"]) > 0

    verdict = json.loads((out / "verdict.json").read_text())
    checks = {c["name"]: c for c in verdict["checks"]}
    assert {f"RSS flat: {p}" for p in PROCESSES} <= set(checks)
    assert {f"lag bounded: {n}" for n in CONSUMERS} <= set(checks)
    assert checks["every process ran to the end"]["ok"]
    assert checks["traffic ran without failing"]["ok"], checks["traffic ran without failing"]
    assert checks["no traceback in any log"]["ok"], checks["no traceback in any log"]
    assert checks["no error-level log line"]["ok"], checks["no error-level log line"]
    assert 0.7 * settings.rate <= verdict["rate"] <= 1.1 * settings.rate
    assert all(0 <= f["max"] <= settings.lag_bound for f in verdict["lag"].values())
    assert verdict["passed"] == all(c["ok"] for c in checks.values())
    answered = "every tap answered (accepted + duplicates + rejected = sent)"
    assert verdict["traffic"][answered] == "True"
