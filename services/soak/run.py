"""`clearway soak`: run the fleet at a steady tap rate for a bounded time and judge it.

Starts the four services and the portal as their own processes (run-unique topics,
schemas and consumer groups; every port shifted by `--port-shift`, 11300 by default, clear
of the demo's and the fault suite's), streams signed tap batches at `--rate` taps a second
for `--minutes`, funds the cards by retailers' top-ups and has travellers read their
journeys (gRPC and the portal) meanwhile, samples every process's memory, every service's
consumer lag and the rate, then lets the consumers drain, stops the fleet, reads its logs
and writes `var/soak-<id>/report.md` with a plot. Exits 1 when a check fails (docs/soak.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from clearway.infra.endpoints import Endpoints
from clearway.kafka import Topics
from clearway.pki import default_pki_dir
from clearway.scheme.file import load_scheme
from clearway.settings import ADMIN_PORT_OFFSET, REPO_ROOT
from services.demo import ABOVE_EPHEMERAL_SHIFT, PORTAL, SERVICES, Fleet, ensure_pki
from services.fares.domain import load_fare_data
from services.ingest.simulator.cli import DEFAULT_FEED
from services.ingest.simulator.day import devices_of
from services.ingest.simulator.stream import register_devices
from services.settlement.app import DEFAULT_SCHEME
from services.soak.pacing import cards_per_slice
from services.soak.probes import METRICS_PORT_OFFSET, LogFindings, rss_mb, scan_log, scrape_lag
from services.soak.report import write_report
from services.soak.traffic import (
    SliceMaker,
    TapSender,
    Traffic,
    accounts_reader,
    portal_reader,
    run_taps,
)
from services.soak.verdict import DRAIN, RUN, Criteria, Sample, judge

TAPS_PER_CARD = 4.4  # the simulator's mean over a day (journeys, exits, resends, faults)


@dataclass(frozen=True, slots=True)
class Settings:
    """How long, how fast, and what counts as a pass."""

    minutes: float = 30.0
    rate: float = 150.0
    seed: int = 7
    validators: int = 8
    sample_s: float = 10.0
    warmup_s: float = 300.0
    max_lag: int | None = None  # default: 30 s of taps at the rate
    max_rss_slope_mb_per_h: float = 20.0
    max_rss_growth: float = 0.05
    port_shift: int = ABOVE_EPHEMERAL_SHIFT + 300
    read_every_s: float = 2.0
    portal_every_s: float = 10.0
    slice_s: float = 60.0
    drain_s: float = 120.0

    @property
    def effective_warmup_s(self) -> float:
        """The warm-up, at most a quarter of the run (so a short run still has samples)."""
        return min(self.warmup_s, self.minutes * 60 / 4)

    @property
    def lag_bound(self) -> int:
        """The most records any consuming service may be behind."""
        return self.max_lag if self.max_lag is not None else round(30 * self.rate)

    def criteria(self) -> Criteria:
        """The verdict's thresholds."""
        return Criteria(
            warmup_s=self.effective_warmup_s,
            max_lag=self.lag_bound,
            max_rss_slope_mb_per_h=self.max_rss_slope_mb_per_h,
            max_rss_growth=self.max_rss_growth,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where the report went and whether the soak passed."""

    run_id: str
    report: Path
    passed: bool


class Sampler:
    """Takes a sample of the fleet every so often."""

    def __init__(self, fleet: Fleet, traffic: Traffic, t0: float) -> None:
        self.fleet, self.traffic, self.t0 = fleet, traffic, t0
        self.samples: list[Sample] = []
        self.exited: set[str] = set()

    async def take(self, http: aiohttp.ClientSession, phase: str) -> Sample:
        """One sample: RSS per process, lag per consuming service, taps so far."""
        rss: dict[str, float] = {}
        for name, process in self.fleet.processes.items():
            mb = rss_mb(process.pid) if process.poll() is None else None
            if mb is None:
                self.exited.add(name)
            else:
                rss[name] = mb
        lag: dict[str, int] = {}
        for name in SERVICES:
            found = await scrape_lag(http, self.fleet.port(name) + METRICS_PORT_OFFSET)
            if found is not None:
                lag[name] = found
        tally = self.traffic.tally
        sample = Sample(time.monotonic() - self.t0, phase, tally.sent, tally.accepted, rss, lag)
        self.samples.append(sample)
        return sample


def progress_line(sample: Sample, before: Sample | None) -> str:
    """One line per sample on the console."""
    rate = 0.0
    if before is not None and sample.t_s > before.t_s:
        rate = (sample.accepted - before.accepted) / (sample.t_s - before.t_s)
    lag = " ".join(f"{n} {v}" for n, v in sorted(sample.lag.items()))
    rss = " ".join(f"{p} {mb:.0f}" for p, mb in sorted(sample.rss_mb.items()))
    return (
        f"  {sample.phase:<5} {sample.t_s:6.0f} s  accepted {sample.accepted:>8} "
        f"({rate:5.1f}/s)  lag: {lag}  RSS MB: {rss}"
    )


async def _sample_until(
    sampler: Sampler, http: aiohttp.ClientSession, phase: str, until: float, every_s: float
) -> None:
    while True:
        before = sampler.samples[-1] if sampler.samples else None
        sample = await sampler.take(http, phase)
        print(progress_line(sample, before), flush=True)
        if time.monotonic() >= until:
            return
        await asyncio.sleep(max(0.0, min(every_s, until - time.monotonic())))


async def _drain(sampler: Sampler, http: aiohttp.ClientSession, settings: Settings) -> float | None:
    """Sample until every consumer has caught up; seconds it took (None: not in time)."""
    start = time.monotonic()
    while time.monotonic() - start < settings.drain_s:
        await asyncio.sleep(min(settings.sample_s, 5.0))
        before = sampler.samples[-1]
        sample = await sampler.take(http, DRAIN)
        print(progress_line(sample, before), flush=True)
        if sample.lag and not any(sample.lag.values()):
            return time.monotonic() - start
    return None


async def run_soak(settings: Settings) -> Outcome:
    """Start the fleet, drive it, sample it, stop it, judge it, write the report."""
    run_id = f"soak-{int(time.time())}"
    work_dir = REPO_ROOT / "var" / run_id
    endpoints = Endpoints.from_env()
    scheme = load_scheme(DEFAULT_SCHEME, agencies_from=DEFAULT_FEED)
    pki_dir = default_pki_dir()
    ensure_pki(pki_dir, scheme)
    feed = load_fare_data(DEFAULT_FEED)
    fleet = Fleet(run_id, work_dir, pki_dir, port_shift=settings.port_shift)
    topics = Topics(prefix=f"{run_id}.")
    started_at = datetime.now(UTC)
    print(
        f"Clearway soak {run_id}: {settings.minutes:g} min at {settings.rate:g} taps/s over "
        f"{settings.validators} validator streams, seed {settings.seed}, ports +"
        f"{settings.port_shift}; logs and report in {work_dir}"
    )
    traffic = Traffic()
    failures: list[str] = []
    drained: float | None = None
    traffic_end_s = 0.0
    traffic_from: datetime | None = None
    cards = cards_per_slice(settings.rate, settings.slice_s, TAPS_PER_CARD)
    sampler = Sampler(fleet, traffic, time.monotonic())
    fleet.start()
    try:
        await fleet.wait_serving()
        await register_devices(
            f"127.0.0.1:{fleet.port('ingest') + ADMIN_PORT_OFFSET}", pki_dir, devices_of(feed)
        )
        maker = SliceMaker(feed, cards, settings.seed, started_at.date(), run_id)
        sender = TapSender(
            fleet.address("ingest"), pki_dir, settings.validators, settings.rate, traffic
        )
        t0 = sampler.t0 = time.monotonic()
        traffic_from = datetime.now(UTC)
        tasks = {
            "taps": asyncio.create_task(
                run_taps_guarded(
                    maker, sender, endpoints.kafka_bootstrap, topics.topups, settings.slice_s
                )
            ),
            "accounts reads": asyncio.create_task(
                accounts_reader(
                    fleet.address("accounts"),
                    traffic,
                    sender.stop,
                    settings.read_every_s,
                    seed=settings.seed,
                )
            ),
            "portal reads": asyncio.create_task(
                portal_reader(
                    fleet.portal_url,
                    fleet.address("accounts"),
                    traffic,
                    sender.stop,
                    every_s=settings.portal_every_s,
                    seed=settings.seed,
                )
            ),
        }
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            until = t0 + settings.minutes * 60
            await _sample_until(sampler, http, RUN, until, settings.sample_s)
            sender.stop.set()
            for name, task in tasks.items():
                try:
                    await asyncio.wait_for(task, 60)
                except Exception as exc:
                    failures.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
            traffic_end_s = time.monotonic() - t0
            drained = await _drain(sampler, http, settings)
    finally:
        codes = fleet.stop()
    logs = {
        name: scan_log(work_dir / f"{name}.log", since=traffic_from) for name in (*SERVICES, PORTAL)
    }
    verdict = judge(
        sampler.samples,
        settings.criteria(),
        settings.rate,
        {n: f.errors for n, f in logs.items()},
        {n: f.tracebacks for n, f in logs.items()},
        sorted(sampler.exited),
        failures,
    )
    report = write_report(
        work_dir,
        run_id,
        _settings_table(settings, started_at, cards),
        sampler.samples,
        verdict,
        _traffic_table(traffic, drained),
        logs,
        codes,
        [settings.effective_warmup_s / 60, traffic_end_s / 60],
        settings.rate,
    )
    print_verdict(verdict.checks, logs)
    print(f"\nReport: {report}\nPlot:   {report.parent / 'soak.png'}")
    print("\nSoak PASSED." if verdict.passed else "\nSoak FAILED.")
    return Outcome(run_id, report, verdict.passed)


async def run_taps_guarded(
    maker: SliceMaker, sender: TapSender, bootstrap: str, topups_topic: str, slice_s: float
) -> None:
    """The taps (`run_taps`); when they end, for whatever reason, the readers stop too."""
    try:
        await run_taps(maker, sender, bootstrap, topups_topic, slice_s)
    finally:
        sender.stop.set()


def _settings_table(settings: Settings, started_at: datetime, cards: int) -> dict[str, object]:
    return {
        "started": started_at.isoformat(timespec="seconds"),
        "duration (min)": f"{settings.minutes:g}",
        "rate (taps/s)": f"{settings.rate:g}",
        "seed": settings.seed,
        "validator streams": settings.validators,
        "cards per slice": f"{cards} (a simulated service day of new cards, about "
        f"{settings.slice_s:g} s of taps; examples/feeds/london)",
        "sample interval (s)": f"{settings.sample_s:g}",
        "warm-up (s)": f"{settings.effective_warmup_s:g}",
        "RSS flat": f"slope <= {settings.max_rss_slope_mb_per_h:g} MB/h and last third <= "
        f"middle third + {settings.max_rss_growth:.0%}",
        "lag bound (records)": settings.lag_bound,
        "port shift": settings.port_shift,
        "accounts reads every (s)": f"{settings.read_every_s:g}",
        "portal reads every (s)": f"{settings.portal_every_s:g}",
    }


def _traffic_table(traffic: Traffic, drained: float | None) -> dict[str, object]:
    tally = traffic.tally
    rejected = ", ".join(f"{r} {n}" for r, n in sorted(tally.rejected.items())) or "none"
    return {
        "taps sent": tally.sent,
        "accepted": tally.accepted,
        "duplicates (deliberate resends)": tally.duplicates,
        "rejected (deliberately malformed)": f"{tally.rejected_total} ({rejected})",
        "every tap answered (accepted + duplicates + rejected = sent)": tally.balanced(),
        "streams retried": tally.retried_batches,
        "slices": traffic.slices,
        "top-ups published": traffic.top_ups,
        "accounts reads (add card, 2 x ListJourneys, GetBalance, remove)": dict(traffic.reads),
        "portal pages by status": dict(traffic.pages),
        "drained after traffic stopped": "not within the drain limit"
        if drained is None
        else f"in {drained:.0f} s",
    }


def print_verdict(checks: tuple[object, ...], logs: dict[str, LogFindings]) -> None:
    """The checks, one a line, and the first error lines if any."""
    print("\nVerdict")
    for check in checks:
        name, ok, detail = (getattr(check, k) for k in ("name", "ok", "detail"))
        print(f"  {'ok    ' if ok else 'FAILED'} {name}: {detail}")
    for name, found in logs.items():
        for line in found.examples:
            print(f"  {name}: {line}")
    for name, found in logs.items():
        for line in found.start_up_examples:
            print(f"  (start-up, not judged) {name}: {line}")


def main(argv: list[str]) -> int:
    """Parse arguments, run the soak, exit 1 unless it passed."""
    parser = argparse.ArgumentParser(prog="clearway soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=150.0, help="taps a second")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--validators", type=int, default=8, help="concurrent streams")
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument(
        "--warmup-minutes", type=float, default=5.0, help="capped at a quarter of the run"
    )
    parser.add_argument("--max-lag", type=int, default=None, help="default: 30 s of taps")
    parser.add_argument("--max-rss-slope", type=float, default=20.0, help="MB per hour")
    parser.add_argument("--port-shift", type=int, default=ABOVE_EPHEMERAL_SHIFT + 300)
    parser.add_argument("--drain-seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    settings = Settings(
        minutes=args.minutes,
        rate=args.rate,
        seed=args.seed,
        validators=args.validators,
        sample_s=args.sample_seconds,
        warmup_s=args.warmup_minutes * 60,
        max_lag=args.max_lag,
        max_rss_slope_mb_per_h=args.max_rss_slope,
        port_shift=args.port_shift,
        drain_s=args.drain_seconds,
    )
    with contextlib.suppress(KeyboardInterrupt):
        return 0 if asyncio.run(run_soak(settings)).passed else 1
    return 130
