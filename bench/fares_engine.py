"""Fare engine benchmark: taps/s of a parse-only pass vs the full `fares simulate` pass.

Run: .venv/bin/python bench/fares_engine.py [--taps N] [--profile-taps M] [--month-cards C]
Generates a JSON-lines taps file for examples/feeds/london (deterministic), times a
parse-only pass and the full engine pass (parse, check, price, cap, write JSON lines) in
the same run, prints taps/s for both and their ratio and the peak RSS, then cProfile's
top entries for the engine pass over a smaller sample, then the same sample's CPU time per
tap by stage of the pipeline (ordering, pairing, fare legs, transfers, caps and charging,
JSON output), then the process's memory while the
same fare data prices a simulated month day by day (as the fares service does): it should
stay flat. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import resource
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from services.fares.adapters.gtfs_reader import load_fare_data
from services.fares.domain import FareData, Tap, TapKind, price_card
from services.fares.domain.caps import CapSpend
from services.fares.domain.charging import charge_journeys
from services.fares.domain.fare_legs import fare_leg_of, join_legs
from services.fares.domain.legs import pair_taps
from services.fares.domain.pricing import PricingStart, _ordered_taps
from services.fares.domain.transfers import link_journeys
from services.fares.entrypoints.cli import output_lines, parse_taps, simulate_file

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


def rss_mb() -> float:
    """The process's resident memory now (Linux), else its peak."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """The process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # KiB on Linux


def month(data: FareData, cards: int) -> None:
    """Price 30 service days, one after the other, each day's taps card by card with the
    same fare data (as the fares service does), and print the memory after each week: with
    nothing remembered per day or instant, it stays flat."""
    start = datetime(2025, 3, 3, tzinfo=LONDON)
    rng = random.Random(3)
    print(f"\nmemory over a simulated month ({cards:,} cards a day, 30 days, price_card):")
    for day in range(30):
        for card in range(cards):
            token = f"card-{card:07d}"
            t = start + timedelta(days=day, hours=6, minutes=rng.randrange(180))
            taps: list[Tap] = []
            for n in range(rng.randint(2, 6)):
                if rng.random() < 0.35:
                    stop, route = rng.choice(BUS)
                    taps.append(Tap(f"{token}-{day}-{n}", token, t, stop, TapKind.BOARD, route))
                else:
                    a, b = rng.sample(RAIL, 2)
                    taps.append(Tap(f"{token}-{day}-{n}-in", token, t, a, TapKind.ENTRY))
                    t += timedelta(minutes=rng.randint(8, 40), seconds=rng.randrange(60))
                    taps.append(Tap(f"{token}-{day}-{n}-out", token, t, b, TapKind.EXIT))
                t += timedelta(minutes=rng.randint(5, 150), seconds=rng.randrange(60))
            price_card(data, taps)
        if day % 7 == 6 or day == 29:
            print(f"  after day {day + 1:2d}: RSS {rss_mb():6.1f} MB")


def parse_pass(path: Path) -> int:
    """Read and parse every line into Taps; nothing else."""
    with path.open(encoding="utf-8-sig") as f:
        return len(parse_taps(f))


def engine_pass(data: FareData, path: Path, out_path: Path) -> int:
    """What `clearway fares simulate` does: parse, check, price, cap, write JSON lines."""
    with out_path.open("w", encoding="utf-8") as out:
        return simulate_file(data, path, out)


STAGES = ("order", "pair", "fare legs", "transfers", "charge", "output")


def stages(data: FareData, path: Path) -> dict[str, float]:
    """CPU microseconds per tap of each stage `price_card` and the output run, card by card
    as `simulate` does (the stages of services/fares/domain/pricing.py, called one by one)."""
    with path.open(encoding="utf-8") as f:
        taps = parse_taps(f)
    by_card: dict[str, list[Tap]] = {}
    for tap in taps:
        by_card.setdefault(tap.card_token, []).append(tap)
    spent = dict.fromkeys(STAGES, 0.0)
    clock = time.process_time
    for card in sorted(by_card):
        t0 = clock()
        ordered = _ordered_taps(by_card[card])
        start = PricingStart.of(ordered)
        t1 = clock()
        legs = pair_taps(data, ordered, None)
        t2 = clock()
        fare_legs = [
            fare_leg_of(group, start.rider_category_id, start.fare_media_id)
            for group in join_legs(legs)
        ]
        t3 = clock()
        journeys = link_journeys(fare_legs)
        t4 = clock()
        priced = charge_journeys(card, journeys, CapSpend.after(start.spent), None)
        t5 = clock()
        "\n".join(output_lines(priced))
        t6 = clock()
        for name, (a, b) in zip(
            STAGES, [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6)], strict=True
        ):
            spent[name] += b - a
    return {name: seconds / len(taps) * 1e6 for name, seconds in spent.items()}


def main() -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--taps", type=int, default=1_000_000)
    parser.add_argument("--profile-taps", type=int, default=100_000)
    parser.add_argument("--month-cards", type=int, default=5_000)
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
        print(f"peak RSS so far: {peak_rss_mb():.0f} MB (every parsed tap is held until written)")
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
        per_tap = stages(data, sample)
        print(
            "\nCPU time per tap by stage (same sample, no profiler; the clock is read 6 times "
            "a card):\n  "
            + ", ".join(f"{name} {us:.2f} us" for name, us in per_tap.items())
            + f"; total {sum(per_tap.values()):.2f} us (parse-only: "
            f"{parse_cpu / n * 1e6:.2f} us)"
        )
        if args.month_cards:
            month(data, args.month_cards)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
