"""The soak's verdict from its samples: memory flat, lag bounded, traffic as asked. Pure.

Definitions (docs/soak.md):
- the *steady* samples are those of the run phase taken after the warm-up;
- a process's RSS is **flat** when the least-squares slope of its steady samples is at most
  `max_rss_slope_mb_per_h` and the mean of their last third is at most
  `max_rss_growth` above the mean of their middle third;
- a service's consumer lag is **bounded** when no steady sample exceeds `max_lag` records
  and the mean of the last third is at most `lag_trend_tolerance` x `max_lag` above the
  mean of the middle third (a lag that keeps growing fails, a noisy one does not).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

RUN = "run"  # steady traffic is being sent
DRAIN = "drain"  # traffic stopped; the consumers catch up


@dataclass(frozen=True, slots=True)
class Sample:
    """What the soak saw at one moment: `t_s` seconds after steady traffic started."""

    t_s: float
    phase: str
    sent: int  # taps sent so far (cumulative)
    accepted: int  # taps ingest acknowledged ACCEPTED so far (cumulative)
    rss_mb: Mapping[str, float]  # per process; absent when the process has gone
    lag: Mapping[str, int]  # per consuming service: records behind, over all its partitions


@dataclass(frozen=True, slots=True)
class Criteria:
    """The thresholds of the verdict (see the module docstring)."""

    warmup_s: float
    max_lag: int
    max_rss_slope_mb_per_h: float = 20.0
    max_rss_growth: float = 0.05
    lag_trend_tolerance: float = 0.10
    min_rate_share: float = 0.90


@dataclass(frozen=True, slots=True)
class RssFigures:
    """One process's resident memory over the run, in MB."""

    start: float
    end: float
    max: float
    slope_mb_per_h: float
    middle_mean: float
    last_mean: float
    flat: bool


@dataclass(frozen=True, slots=True)
class LagFigures:
    """One consuming service's lag over the steady samples, in records."""

    max: int
    p95: float
    middle_mean: float
    last_mean: float
    bounded: bool


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the verdict."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """Every check, and the figures they were made from."""

    checks: tuple[Check, ...]
    rss: Mapping[str, RssFigures] = field(default_factory=dict)
    lag: Mapping[str, LagFigures] = field(default_factory=dict)
    rate: float = 0.0  # taps sent per second over the steady samples
    accepted_rate: float = 0.0

    @property
    def passed(self) -> bool:
        """True when every check holds."""
        return all(c.ok for c in self.checks)


def least_squares_slope(points: Sequence[tuple[float, float]]) -> float:
    """The slope of the least-squares line through `points` (0 for fewer than two x's)."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx


def thirds(values: Sequence[float]) -> tuple[list[float], list[float], list[float]]:
    """`values` cut in three consecutive parts as equal as can be (the last ones longest)."""
    n = len(values)
    a, b = n // 3, n - n // 3
    return list(values[:a]), list(values[a:b]), list(values[b:])


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean (0 for none)."""
    return sum(values) / len(values) if values else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def steady(samples: Sequence[Sample], warmup_s: float) -> list[Sample]:
    """The run-phase samples taken after the warm-up."""
    return [s for s in samples if s.phase == RUN and s.t_s >= warmup_s]


def rss_figures(samples: Sequence[Sample], process: str, criteria: Criteria) -> RssFigures:
    """How `process`'s RSS moved; `flat` by the criteria over the steady samples."""
    every = [s.rss_mb[process] for s in samples if process in s.rss_mb]
    points = [
        (s.t_s, s.rss_mb[process])
        for s in steady(samples, criteria.warmup_s)
        if process in s.rss_mb
    ]
    slope = least_squares_slope(points) * 3600
    _, middle, last = thirds([mb for _, mb in points])
    middle_mean, last_mean = mean(middle), mean(last)
    flat = (
        len(points) >= 3
        and slope <= criteria.max_rss_slope_mb_per_h
        and last_mean <= middle_mean * (1 + criteria.max_rss_growth)
    )
    return RssFigures(
        start=every[0] if every else 0.0,
        end=every[-1] if every else 0.0,
        max=max(every, default=0.0),
        slope_mb_per_h=slope,
        middle_mean=middle_mean,
        last_mean=last_mean,
        flat=flat,
    )


def lag_figures(samples: Sequence[Sample], service: str, criteria: Criteria) -> LagFigures:
    """How far behind `service` ran; `bounded` by the criteria over the steady samples."""
    lags = [float(s.lag[service]) for s in steady(samples, criteria.warmup_s) if service in s.lag]
    _, middle, last = thirds(lags)
    middle_mean, last_mean = mean(middle), mean(last)
    highest = int(max(lags, default=0))
    bounded = (
        bool(lags)
        and highest <= criteria.max_lag
        and last_mean <= middle_mean + criteria.lag_trend_tolerance * criteria.max_lag
    )
    return LagFigures(highest, percentile(lags, 95), middle_mean, last_mean, bounded)


def sent_rate(samples: Sequence[Sample], warmup_s: float) -> tuple[float, float]:
    """Taps sent and accepted per second between the first and last steady samples."""
    run = steady(samples, warmup_s)
    if len(run) < 2 or run[-1].t_s <= run[0].t_s:
        return 0.0, 0.0
    seconds = run[-1].t_s - run[0].t_s
    return (
        (run[-1].sent - run[0].sent) / seconds,
        (run[-1].accepted - run[0].accepted) / seconds,
    )


def judge(  # noqa: PLR0917 - the verdict's inputs, each its own kind
    samples: Sequence[Sample],
    criteria: Criteria,
    target_rate: float,
    error_lines: Mapping[str, int],
    tracebacks: Mapping[str, int],
    exited: Sequence[str] = (),
    traffic_failures: Sequence[str] = (),
) -> Verdict:
    """Every check of the soak over its samples and its services' logs."""
    processes = sorted({p for s in samples for p in s.rss_mb})
    services = sorted({name for s in samples for name in s.lag})
    rss = {p: rss_figures(samples, p, criteria) for p in processes}
    lag = {name: lag_figures(samples, name, criteria) for name in services}
    rate, accepted_rate = sent_rate(samples, criteria.warmup_s)
    checks = [
        Check(
            "enough steady samples",
            len(steady(samples, criteria.warmup_s)) >= 3,
            f"{len(steady(samples, criteria.warmup_s))} after a {criteria.warmup_s:.0f} s warm-up",
        ),
        Check(
            "every process ran to the end",
            not exited,
            "all running" if not exited else f"exited: {', '.join(exited)}",
        ),
        *(
            Check(
                f"RSS flat: {p}",
                f.flat,
                f"slope {f.slope_mb_per_h:+.1f} MB/h (max {criteria.max_rss_slope_mb_per_h:g}); "
                f"last third {f.last_mean:.1f} MB vs middle third {f.middle_mean:.1f} MB "
                f"(max +{criteria.max_rss_growth:.0%})",
            )
            for p, f in rss.items()
        ),
        *(
            Check(
                f"lag bounded: {name}",
                f.bounded,
                f"max {f.max} (bound {criteria.max_lag}); last third {f.last_mean:.0f} vs "
                f"middle third {f.middle_mean:.0f} "
                f"(max +{criteria.lag_trend_tolerance * criteria.max_lag:.0f})",
            )
            for name, f in lag.items()
        ),
        Check(
            "traffic ran without failing",
            not traffic_failures,
            "; ".join(traffic_failures) or "no failure",
        ),
        Check(
            "rate as asked",
            rate >= criteria.min_rate_share * target_rate,
            f"{rate:.1f} taps/s sent (target {target_rate:g}, "
            f"min {criteria.min_rate_share:.0%}); {accepted_rate:.1f} accepted",
        ),
        Check(
            "no error-level log line",
            sum(error_lines.values()) == 0,
            _per_process(error_lines),
        ),
        Check("no traceback in any log", sum(tracebacks.values()) == 0, _per_process(tracebacks)),
    ]
    return Verdict(tuple(checks), rss, lag, rate, accepted_rate)


def _per_process(counts: Mapping[str, int]) -> str:
    found = {p: n for p, n in sorted(counts.items()) if n}
    return ", ".join(f"{p} {n}" for p, n in found.items()) if found else "none"
