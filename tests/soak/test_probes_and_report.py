"""What the soak reads of the fleet (metrics, logs, /proc) and writes (report, plot)."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from services.soak.chart import nice_step, y_range
from services.soak.probes import LogFindings, lag_of, rss_mb, scan_log
from services.soak.report import rate_points, write_report
from services.soak.verdict import RUN, Criteria, Sample, judge

METRICS = """\
# HELP clearway_consumer_lag records behind
# TYPE clearway_consumer_lag gauge
clearway_consumer_lag{clearway_consumer="fares.price_taps",messaging_kafka_partition="0"} 12.0
clearway_consumer_lag{clearway_consumer="fares.price_taps",messaging_kafka_partition="1"} 3.0
clearway_consumer_lag_other 99
process_resident_memory_bytes 1.2e+08
"""


def test_lag_is_the_sum_over_every_partition() -> None:
    assert lag_of(METRICS) == 15
    assert lag_of("process_resident_memory_bytes 1\n") is None


def test_rss_of_this_process_is_read_from_proc() -> None:
    mb = rss_mb(os.getpid())
    assert mb is not None and 10 < mb < 10_000
    assert rss_mb(2**22 + 7) is None  # no such process


def test_error_lines_and_tracebacks_are_counted_after_start_up_only(tmp_path: Path) -> None:
    log = tmp_path / "fares.log"
    lines = [
        {"ts": "2026-12-01T02:00:00.000+00:00", "level": "ERROR", "msg": "leader not ready"},
        {"ts": "2026-12-01T02:05:00.000+00:00", "level": "INFO", "msg": "fine"},
        {"ts": "2026-12-01T02:05:01.000+00:00", "level": "WARNING", "msg": "slow"},
        {"ts": "2026-12-01T02:05:02.000+00:00", "level": "ERROR", "msg": "boom"},
        {
            "ts": "2026-12-01T02:05:03.000+00:00",
            "level": "INFO",
            "msg": "retried",
            "exc": "Traceback (most recent call last):\n  ...",
        },
    ]
    raw = "Traceback (most recent call last):\n  File 'x.py'\nValueError\n"
    log.write_text("".join(json.dumps(e) + "\n" for e in lines) + raw)
    found = scan_log(log, since=datetime.fromisoformat("2026-12-01T02:04:00+00:00"))
    assert (found.lines, found.warnings, found.errors, found.tracebacks) == (8, 1, 1, 2)
    assert found.start_up_errors == 1
    assert "boom" in found.examples[0]
    assert scan_log(tmp_path / "missing.log") == LogFindings()


def test_axes_get_round_steps_and_memory_need_not_start_at_zero() -> None:
    assert nice_step(100) == 50
    assert nice_step(7) == 2
    assert y_range([0, 143]) == (0, 150, 50)
    low, top, _ = y_range([88.0, 92.5], from_zero=False)
    assert low < 88 and top >= 92.5 and low > 0


def test_the_report_has_every_figure_a_plot_and_the_samples(tmp_path: Path) -> None:
    samples = [
        Sample(
            t_s=i * 10.0,
            phase=RUN,
            sent=i * 1500,
            accepted=i * 1400,
            rss_mb={"fares": 90.0, "ingest": 95.0 + i % 2},
            lag={"fares": i % 3},
        )
        for i in range(20)
    ]
    verdict = judge(samples, Criteria(warmup_s=30, max_lag=4500), 150, {}, {})
    assert rate_points(samples)[0] == (10 / 60, 140)
    report = write_report(
        tmp_path,
        "soak-1",
        {"rate (taps/s)": 150},
        samples,
        verdict,
        {"taps sent": 28500},
        {"fares": LogFindings(lines=10)},
        {"fares": 0},
        [0.5, 3.0],
        150,
    )
    text = report.read_text()
    assert text.startswith("# Soak soak-1: PASSED")
    assert "| fares | 90.0 | 90.0 | 90.0 | +0.0 |" in text
    assert "![rate, lag and memory over time](soak.png)" in text
    assert (tmp_path / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((tmp_path / "samples.csv").read_text().splitlines()) == 21
    assert json.loads((tmp_path / "verdict.json").read_text())["passed"] is True
