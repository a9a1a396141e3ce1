"""Fare engine benchmark: taps/s of a parse-only pass vs the full `fares simulate` pass.

Run: .venv/bin/python bench/fares_engine.py [--taps N] [--profile-taps M]
Generates a JSON-lines taps file for examples/feeds/london (deterministic), times a
parse-only pass and the full engine pass (parse, check, price, cap, write JSON lines) in
the same run, prints taps/s for both and their ratio, then cProfile's top entries for the
engine pass over a smaller sample. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from services.fares.adapters.gtfs_reader import load_fare_data
from services.fares.domain import FareData
from services.fares.entrypoints.cli import parse_taps, simulate_file

REPO = Path(__file__).resolve().parents[1]

FEED = REPO / "examples" / "feeds" / "london"
RAIL = ["KGX", "OXC", "VIC", "LST", "BDS", "FAR", "CMD", "BRX", "SFD", "WHC"]
BUS = [("BUS_A1", "BUS_73"), ("BUS_A3", "BUS_73"), ("BUS_B1", "BUS_390"), ("BUS_B3", "BUS_390")]
LONDON = ZoneInfo("Europe/London")


def generate(path: Path, n_taps: int, seed: int = 7) -> int:
    """Write about `n_taps` taps: cards travel on weekdays, ~8 taps per card-day, with
    buses (Hopper), tube trips, and some missing exits. Returns the number written."""
    rng = random.Random(seed)
    written = 0
    start = datetime(2025, 3, 3, tzinfo=LONDON)
    card = 0
    with path.open("w", encoding="utf-8") as out:
        while written < n_taps:
            card += 1
            token = f"card-{card:07d}"
            media = "OYSTER" if card % 5 == 0 else "CONTACTLESS"
            day = start + timedelta(days=rng.randrange(5))
            t = day + timedelta(hours=6, minutes=rng.randrange(180))
            for _ in range(rng.randint(2, 6)):
                lines: list[dict[str, str]] = []
                if rng.random() < 0.35:
                    stop, route = rng.choice(BUS)
                    lines.append({"stop": stop, "kind": "board", "route": route})
                else:
                    a, b = rng.sample(RAIL, 2)
                    lines.append({"stop": a, "kind": "entry"})
                    if rng.random() > 0.03:
                        lines.append({"stop": b, "kind": "exit", "dt": "1"})
                for rec in lines:
                    if rec.pop("dt", None):
                        t += timedelta(minutes=rng.randint(8, 40))
                    rec |= {"card": token, "time": t.isoformat(), "fare_media": media}
                    rec["tap_id"] = f"{token}-{written}"
                    out.write(json.dumps(rec, separators=(",", ":")) + "\n")
                    written += 1
                t += timedelta(minutes=rng.randint(5, 150))
    return written


def parse_pass(path: Path) -> int:
    """Read and parse every line into Taps; nothing else."""
    with path.open(encoding="utf-8-sig") as f:
        return len(parse_taps(f))


def engine_pass(data: FareData, path: Path, out_path: Path) -> int:
    """What `clearway fares simulate` does: parse, check, price, cap, write JSON lines."""
    with out_path.open("w", encoding="utf-8") as out:
        return simulate_file(data, path, out)


def main() -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--taps", type=int, default=1_000_000)
    parser.add_argument("--profile-taps", type=int, default=100_000)
    args = parser.parse_args()
    data = load_fare_data(FEED)
    with tempfile.TemporaryDirectory() as tmp:
        taps_file, out_file = Path(tmp) / "taps.jsonl", Path(tmp) / "journeys.jsonl"
        t0 = time.perf_counter()
        n = generate(taps_file, args.taps)
        print(
            f"generated {n:,} taps ({taps_file.stat().st_size / 1e6:.0f} MB) in "
            f"{time.perf_counter() - t0:.1f} s; feed {data.fare_version}; pid {os.getpid()}"
        )
        t0, c0 = time.perf_counter(), time.process_time()
        parse_pass(taps_file)
        parse_s, parse_cpu = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        engine_pass(data, taps_file, out_file)
        engine_s, engine_cpu = time.perf_counter() - t0, time.process_time() - c0
        lines = sum(1 for _ in out_file.open(encoding="utf-8"))
        print(
            f"parse-only : {n / parse_s:>10,.0f} taps/s wall ({parse_s:.2f} s), "
            f"{n / parse_cpu:>10,.0f} taps/s CPU"
        )
        print(
            f"full engine: {n / engine_s:>10,.0f} taps/s wall ({engine_s:.2f} s), "
            f"{n / engine_cpu:>10,.0f} taps/s CPU; {lines:,} output lines"
        )
        print(
            f"ratio engine/parse-only throughput: {parse_s / engine_s:.2f} wall, "
            f"{parse_cpu / engine_cpu:.2f} CPU (engine takes {engine_s / parse_s:.1f}x the "
            "parse-only time)"
        )
        print(f"load average while measuring: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        sample = Path(tmp) / "sample.jsonl"
        generate(sample, min(args.profile_taps, n), seed=11)
        profiler = cProfile.Profile()
        profiler.enable()
        engine_pass(data, sample, Path(tmp) / "sample_out.jsonl")
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
        print(
            f"\nwhere time goes (engine pass over {min(args.profile_taps, n):,} taps, by own time):"
        )
        print("\n".join(text.getvalue().splitlines()[:40]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
