"""The soak's verdict: what counts as flat memory, bounded lag and a rate as asked."""

from __future__ import annotations

import pytest

from services.soak.verdict import (
    DRAIN,
    RUN,
    Criteria,
    Sample,
    judge,
    lag_figures,
    least_squares_slope,
    percentile,
    rss_figures,
    steady,
    thirds,
)

CRITERIA = Criteria(warmup_s=300, max_lag=4500)


def samples(
    rss: dict[str, list[float]] | None = None,
    lag: dict[str, list[int]] | None = None,
    minutes: int = 30,
    rate: float = 150,
    every_s: float = 10,
) -> list[Sample]:
    count = int(minutes * 60 / every_s) + 1
    rss = rss or {"fares": [100.0] * count}
    lag = lag or {"fares": [10] * count}
    return [
        Sample(
            t_s=i * every_s,
            phase=RUN,
            sent=int(i * every_s * rate),
            accepted=int(i * every_s * rate * 0.95),
            rss_mb={p: values[i] for p, values in rss.items() if i < len(values)},
            lag={n: values[i] for n, values in lag.items() if i < len(values)},
        )
        for i in range(count)
    ]


def ramp(start: float, mb_per_hour: float, count: int = 181, every_s: float = 10) -> list[float]:
    return [start + mb_per_hour * i * every_s / 3600 for i in range(count)]


def test_least_squares_slope_of_a_line_is_its_slope() -> None:
    assert least_squares_slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2)
    assert least_squares_slope([(5, 7)]) == 0
    assert least_squares_slope([(1, 1), (1, 2)]) == 0  # no spread in x


def test_thirds_cut_in_order_and_lose_nothing() -> None:
    first, middle, last = thirds(list(range(10)))
    assert first + middle + last == list(range(10))
    assert (len(first), len(middle), len(last)) == (3, 4, 3)


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([0, 10], 50) == 5
    assert percentile([3, 1, 2], 100) == 3
    assert percentile([], 95) == 0


def test_memory_that_stays_level_after_the_warm_up_is_flat() -> None:
    # it grows for the first five minutes (caches filling), then holds
    warming = [80 + min(i, 30) for i in range(181)]
    figures = rss_figures(samples(rss={"fares": warming}), "fares", CRITERIA)
    assert figures.flat
    assert figures.start == 80 and figures.end == 110 and figures.max == 110
    assert figures.slope_mb_per_h == pytest.approx(0, abs=1e-9)


def test_memory_growing_steadily_is_a_leak_even_when_slow() -> None:
    leak = ramp(100, 40)  # 40 MB an hour: 20 MB over a 30-minute soak
    figures = rss_figures(samples(rss={"fares": leak}), "fares", CRITERIA)
    assert figures.slope_mb_per_h == pytest.approx(40)
    assert not figures.flat


def test_a_late_step_up_in_memory_fails_even_with_a_small_slope() -> None:
    stepped = [100.0] * 150 + [130.0] * 31  # +30% in the last five minutes
    figures = rss_figures(samples(rss={"fares": stepped}), "fares", CRITERIA)
    assert figures.last_mean > figures.middle_mean * 1.05
    assert not figures.flat


def test_noisy_but_level_memory_is_flat() -> None:
    noisy = [100 + (3 if i % 2 else -3) for i in range(181)]
    assert rss_figures(samples(rss={"fares": noisy}), "fares", CRITERIA).flat


def test_lag_under_the_bound_and_not_growing_is_bounded() -> None:
    spiky = [0 if i % 3 else 900 for i in range(181)]
    figures = lag_figures(samples(lag={"fares": spiky}), "fares", CRITERIA)
    assert figures.bounded
    assert figures.max == 900


def test_lag_over_the_bound_is_not_bounded() -> None:
    lag = [10] * 180 + [5000]
    assert not lag_figures(samples(lag={"fares": lag}), "fares", CRITERIA).bounded


def test_lag_that_keeps_growing_is_not_bounded_even_under_the_bound() -> None:
    growing = [i * 20 for i in range(181)]  # 3,600 at the end, under 4,500
    figures = lag_figures(samples(lag={"fares": growing}), "fares", CRITERIA)
    assert figures.max <= CRITERIA.max_lag
    assert not figures.bounded


def test_warm_up_and_drain_samples_are_not_judged() -> None:
    run = samples(minutes=10)
    drain = [Sample(t_s=700, phase=DRAIN, sent=0, accepted=0, rss_mb={}, lag={})]
    kept = steady(run + drain, 300)
    assert kept[0].t_s == 300 and kept[-1].t_s == 600
    assert all(s.phase == RUN for s in kept)


def test_a_clean_steady_run_passes_every_check() -> None:
    verdict = judge(samples(), CRITERIA, 150, {"fares": 0}, {"fares": 0})
    assert verdict.passed, [c for c in verdict.checks if not c.ok]
    assert verdict.rate == pytest.approx(150)
    assert verdict.accepted_rate == pytest.approx(142.5)


@pytest.mark.parametrize(
    ("errors", "tracebacks", "exited", "failures", "failed_check"),
    [
        ({"ingest": 1}, {}, (), (), "no error-level log line"),
        ({}, {"accounts": 2}, (), (), "no traceback in any log"),
        ({}, {}, ("fares",), (), "every process ran to the end"),
        ({}, {}, (), ("taps: AioRpcError",), "traffic ran without failing"),
    ],
)
def test_errors_tracebacks_exits_and_traffic_failures_fail_the_soak(
    errors: dict[str, int],
    tracebacks: dict[str, int],
    exited: tuple[str, ...],
    failures: tuple[str, ...],
    failed_check: str,
) -> None:
    verdict = judge(samples(), CRITERIA, 150, errors, tracebacks, exited, failures)
    assert not verdict.passed
    assert [c.name for c in verdict.checks if not c.ok] == [failed_check]


def test_a_rate_well_short_of_the_target_fails() -> None:
    verdict = judge(samples(rate=100), CRITERIA, 150, {}, {})
    assert [c.name for c in verdict.checks if not c.ok] == ["rate as asked"]


def test_too_few_samples_after_the_warm_up_fail() -> None:
    verdict = judge(samples(minutes=5), CRITERIA, 150, {}, {})
    assert not verdict.passed
    assert "enough steady samples" in [c.name for c in verdict.checks if not c.ok]
