"""The soak's report: `report.md` (settings, figures per process and service, verdict),
`soak.png` (rate, lag and memory over time) and `samples.csv` (every sample)."""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from services.soak.chart import Panel, plot_png, timeseries_drawing
from services.soak.probes import LogFindings
from services.soak.verdict import Sample, Verdict


def rate_points(samples: Sequence[Sample]) -> list[tuple[float, float]]:
    """(minute, taps accepted per second since the previous sample)."""
    points = []
    for before, after in itertools.pairwise(samples):
        seconds = after.t_s - before.t_s
        if seconds > 0:
            points.append((after.t_s / 60, (after.accepted - before.accepted) / seconds))
    return points


def panels(samples: Sequence[Sample], target_rate: float) -> list[Panel]:
    """The plot's three panels: rate, lag per consuming service, RSS per process."""
    rates = rate_points(samples)
    services = sorted({name for s in samples for name in s.lag})
    processes = sorted({p for s in samples for p in s.rss_mb})
    end = samples[-1].t_s / 60 if samples else 0.0
    return [
        Panel(
            "Taps accepted per second",
            "taps/s",
            {"accepted": rates, "target": [(0.0, target_rate), (end, target_rate)]},
        ),
        Panel(
            "Consumer lag (records behind, all partitions)",
            "records",
            {n: [(s.t_s / 60, float(s.lag[n])) for s in samples if n in s.lag] for n in services},
        ),
        Panel(
            "Resident memory (VmRSS)",
            "MB",
            {p: [(s.t_s / 60, s.rss_mb[p]) for s in samples if p in s.rss_mb] for p in processes},
            from_zero=False,
        ),
    ]


def render_markdown(  # noqa: PLR0917 - the report's parts
    run_id: str,
    settings: Mapping[str, object],
    verdict: Verdict,
    traffic: Mapping[str, object],
    logs: Mapping[str, LogFindings],
    exit_codes: Mapping[str, int | None],
    plot_name: str = "soak.png",
) -> str:
    """The report as Markdown."""
    lines = [
        f"# Soak {run_id}: {'PASSED' if verdict.passed else 'FAILED'}",
        "",
        "## Settings",
        "",
        *(f"- {key}: {value}" for key, value in settings.items()),
        "",
        "## Verdict",
        "",
        "| check | | detail |",
        "|---|---|---|",
        *(f"| {c.name} | {'ok' if c.ok else '**FAILED**'} | {c.detail} |" for c in verdict.checks),
        "",
        "## Traffic",
        "",
        f"- rate sent over the steady samples: {verdict.rate:.1f} taps/s "
        f"({verdict.accepted_rate:.1f} accepted/s)",
        *(f"- {key}: {value}" for key, value in traffic.items()),
        "",
        "## Memory per process (VmRSS, MB)",
        "",
        "| process | start | end | max | slope (MB/h, steady) | middle third | last third | flat |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        *(
            f"| {p} | {f.start:.1f} | {f.end:.1f} | {f.max:.1f} | {f.slope_mb_per_h:+.1f} "
            f"| {f.middle_mean:.1f} | {f.last_mean:.1f} | {'yes' if f.flat else 'NO'} |"
            for p, f in verdict.rss.items()
        ),
        "",
        "## Consumer lag per service (records, steady samples)",
        "",
        "| service | max | p95 | middle third mean | last third mean | bounded |",
        "|---|---:|---:|---:|---:|---|",
        *(
            f"| {n} | {f.max} | {f.p95:.0f} | {f.middle_mean:.0f} | {f.last_mean:.0f} "
            f"| {'yes' if f.bounded else 'NO'} |"
            for n, f in verdict.lag.items()
        ),
        "",
        "## Logs",
        "",
        "| process | lines | warnings | errors | tracebacks | start-up errors (not judged) "
        "| exit code |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {p} | {f.lines} | {f.warnings} | {f.errors} | {f.tracebacks} "
            f"| {f.start_up_errors} | {exit_codes.get(p)} |"
            for p, f in logs.items()
        ),
        *_examples(logs),
        "",
        f"![rate, lag and memory over time]({plot_name})",
        "",
        "Grey vertical lines: the end of the warm-up, and the end of traffic (then the "
        "consumers drain). Every sample is in `samples.csv`; docs/soak.md explains the checks.",
        "",
    ]
    return "\n".join(lines)


def _examples(logs: Mapping[str, LogFindings]) -> list[str]:
    lines: list[str] = []
    for heading, attribute in (
        ("First error lines", "examples"),
        (
            "Error lines while the services started, before any traffic (not judged)",
            "start_up_examples",
        ),
    ):
        found = [(p, e) for p, f in logs.items() for e in getattr(f, attribute)]
        if found:
            lines += ["", f"{heading}:", "", *(f"- {p}: `{e}`" for p, e in found)]
    return lines


def write_samples_csv(samples: Sequence[Sample], path: Path) -> None:
    """One row per sample: time, phase, taps, then RSS per process and lag per service."""
    processes = sorted({p for s in samples for p in s.rss_mb})
    services = sorted({name for s in samples for name in s.lag})
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(
            [
                "t_s",
                "phase",
                "sent",
                "accepted",
                *(f"rss_mb_{p}" for p in processes),
                *(f"lag_{n}" for n in services),
            ]
        )
        for s in samples:
            writer.writerow(
                [
                    f"{s.t_s:.1f}",
                    s.phase,
                    s.sent,
                    s.accepted,
                    *(f"{s.rss_mb[p]:.1f}" if p in s.rss_mb else "" for p in processes),
                    *(s.lag.get(n, "") for n in services),
                ]
            )


def write_report(  # noqa: PLR0917 - the report's parts
    out_dir: Path,
    run_id: str,
    settings: Mapping[str, object],
    samples: Sequence[Sample],
    verdict: Verdict,
    traffic: Mapping[str, object],
    logs: Mapping[str, LogFindings],
    exit_codes: Mapping[str, int | None],
    marks_min: Sequence[float],
    target_rate: float,
) -> Path:
    """Write report.md, soak.png, samples.csv and verdict.json; returns report.md's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    x_max = samples[-1].t_s / 60 if samples else 1.0
    title = f"Clearway soak {run_id}"
    drawing = timeseries_drawing(title, panels(samples, target_rate), x_max, marks_min)
    (out_dir / "soak.png").write_bytes(plot_png(drawing))
    write_samples_csv(samples, out_dir / "samples.csv")
    (out_dir / "verdict.json").write_text(
        json.dumps(
            {
                "passed": verdict.passed,
                "checks": [asdict(c) for c in verdict.checks],
                "rss_mb": {p: asdict(f) for p, f in verdict.rss.items()},
                "lag": {n: asdict(f) for n, f in verdict.lag.items()},
                "rate": verdict.rate,
                "accepted_rate": verdict.accepted_rate,
                "settings": {k: str(v) for k, v in settings.items()},
                "traffic": {k: str(v) for k, v in traffic.items()},
            },
            indent=2,
        )
    )
    report = out_dir / "report.md"
    report.write_text(render_markdown(run_id, settings, verdict, traffic, logs, exit_codes))
    return report
