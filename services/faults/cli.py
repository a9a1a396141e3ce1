"""`clearway faults`: a network day run twice through the real processes, on a Kafka,
PostgreSQL and Redis of the run's own: first without faults (the reference), then under a
seeded plan of SIGKILLs of every process and restarts of Kafka, PostgreSQL and Redis; then
every invariant, the first broken one named with the seed (docs/faults.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from clearway.pki import default_pki_dir
from clearway.scheme.file import load_scheme
from clearway.settings import REPO_ROOT
from services.demo import (
    ABOVE_EPHEMERAL_SHIFT,
    DEMO_PASSWORD,
    Fleet,
    ensure_pki,
    last_closable_day,
    simulate_top_ups,
)
from services.demo_benefits import OFFICER_PASSWORD, YOUTH_PASSWORD
from services.fares.domain import load_fare_data
from services.faults.checks import Check, check_run
from services.faults.day import Outcome, Traffic, run_day
from services.faults.infra import OwnInfra
from services.faults.injector import FaultLog, Injector, plan_faults
from services.faults.leaks import Secrets, find_leaks
from services.ingest.device_client import DeviceIdentity
from services.ingest.simulator.cli import DEFAULT_FEED
from services.ingest.simulator.day import devices_of, simulate_day
from services.ingest.simulator.stream import FLEET_SECRET
from services.settlement.app import DEFAULT_SCHEME

# Above Linux's ephemeral range (services/demo.py, `ABOVE_EPHEMERAL_SHIFT`), where a restarted
# process could find its port held by some client connection of the busy machine.
REFERENCE_SHIFT = ABOVE_EPHEMERAL_SHIFT + 200  # the fault-free fleet's: 61251-61254, portal 19280
FAULTY_SHIFT = ABOVE_EPHEMERAL_SHIFT + 400  # the faulty fleet's: 61451-61454, portal 19480
# Machine-wide, not per checkout: the ports are the machine's, whichever clone runs.
LOCK = Path(tempfile.gettempdir()) / "clearway-faults.lock"
SECONDS_PER_KILL = 1.6  # the plan spreads kills so each process mostly gets back up between


def secrets_of(traffic: Traffic, runs: list[Outcome], pki_dir: Path) -> Secrets:
    """Everything secret the runs handled."""
    secrets = Secrets()
    secrets.card_tokens = {
        t.card_token for taps in traffic.simulated.by_device.values() for t in taps if t.card_token
    }
    secrets.card_tokens |= {t.card_token for t in traffic.top_ups}
    for run in runs:
        secrets.card_tokens |= set(run.benefits.cards)
        secrets.add("session token or till key", run.benefits.secrets)
    secrets.add("password", [DEMO_PASSWORD, OFFICER_PASSWORD, YOUTH_PASSWORD])
    secrets.add("device secret", [FLEET_SECRET])
    secrets.add("device key", [_device_key(d.device_id) for d in devices_of(traffic.feed)])
    keys = [*pki_dir.glob("*.key.pem"), *pki_dir.glob("clients/*.key.pem")]
    secrets.add_key_files("private key", keys)
    return secrets


def _device_key(device_id: str) -> str:
    key = DeviceIdentity.derived(device_id, FLEET_SECRET).private_key
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return raw.hex()


def print_run(run: Outcome) -> None:
    """A fleet's figures."""
    t = run.tally
    print(
        f"  {run.label}: {t.sent} taps sent ({t.accepted} accepted, {t.duplicates} duplicates, "
        f"{t.rejected_total} rejected; {t.retried_batches} stream resends), "
        f"{len(run.taps)} on the topic; {len(run.revisions)} journey revisions; "
        f"{len(run.tables['ledger entries'])} ledger entries; {len(run.files)} settlement files; "
        f"traffic {run.traffic_s:.0f} s, all {run.total_s:.0f} s"
    )
    if run.not_caught_up:
        print(f"    consumers still behind after the wait: {run.not_caught_up}")


def print_faults(log: FaultLog) -> None:
    """What was injected."""
    kills = ", ".join(f"{name} {n}" for name, n in sorted(log.kills.items()))
    print(f"  SIGKILL     {log.total_kills} ({kills}); {log.kills_during_traffic} during traffic")
    away = ", ".join(f"{name} {s:.0f} s" for name, s in log.infra_away_s)
    print(f"  restarted   {sum(log.infra_restarts.values())} servers ({away})")
    if log.exited_on_their_own:
        print(f"  exited on their own and restarted: {dict(log.exited_on_their_own)}")


async def run_faults(
    seed: int,
    cards: int,
    kills: int,
    *,
    day: date | None = None,
    span_s: float | None = None,
    keep: bool = False,
    work_dir: Path | None = None,
) -> tuple[list[Check], FaultLog]:
    """The whole run; its checks in order and what was injected."""
    with one_run_at_a_time():
        return await _run_faults(seed, cards, kills, day, span_s, keep, work_dir)


@contextlib.contextmanager
def one_run_at_a_time() -> Iterator[None]:
    """Hold the machine's fault-run lock: two runs would share their fleets' ports (the
    services bind with SO_REUSEPORT, so a second fleet would silently take half of the
    first one's connections)."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"another fault run holds {LOCK}; waiting for it", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


async def _run_faults(  # noqa: PLR0917 - run_faults' knobs
    seed: int,
    cards: int,
    kills: int,
    day: date | None,
    span_s: float | None,
    keep: bool,
    work_dir: Path | None,
) -> tuple[list[Check], FaultLog]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = work_dir or REPO_ROOT / "var" / f"faults-{seed}-{stamp}"
    infra = OwnInfra.create(work / "infra")
    print("Starting the run's own Kafka, PostgreSQL and Redis")
    endpoints = await asyncio.to_thread(infra.up)
    try:
        scheme = load_scheme(DEFAULT_SCHEME, agencies_from=DEFAULT_FEED)
        pki_dir = default_pki_dir()
        ensure_pki(pki_dir, scheme)
        feed = load_fare_data(DEFAULT_FEED)
        day = day or last_closable_day(scheme)
        simulated = simulate_day(feed, day, cards, seed=seed)
        traffic = Traffic(scheme, feed, simulated, simulate_top_ups(simulated, seed), day, seed)
        print(f"Day {day}: {cards} cards, {simulated.total()} taps, {len(traffic.top_ups)} top-ups")
        # /metrics off: the suite reads no metric, and a killed process restarts faster.
        env = {**endpoints.as_env(), "CLEARWAY_METRICS_PORT": "0"}
        print("Fault-free run (the reference)")
        reference = Fleet(
            "faults-ref", work / "reference", pki_dir, port_shift=REFERENCE_SHIFT, extra_env=env
        )
        ref = await run_day(reference, endpoints, traffic)
        print_run(ref)
        span = span_s or max(ref.traffic_s, kills * SECONDS_PER_KILL)
        plan = plan_faults(seed, kills, span)
        print(f"Faulty run: {len(plan)} faults planned over {span:.0f} s")
        faulty = Fleet(
            "faults-run", work / "faulty", pki_dir, port_shift=FAULTY_SHIFT, extra_env=env
        )
        injector = Injector(faulty, infra, plan)
        run = await run_day(faulty, endpoints, traffic, injector)
        print_run(run)
        print_faults(injector.log)
        leaks = find_leaks([*ref.logs, *run.logs], secrets_of(traffic, [ref, run], pki_dir))
        return check_run(run, ref, leaks), injector.log
    finally:
        if keep:
            print(f"Kafka, PostgreSQL and Redis of the run left running in {work / 'infra'}")
        else:
            await asyncio.to_thread(infra.remove)
        print(f"Logs and settlement files in {work}")


def main(argv: list[str]) -> int:
    """Parse arguments, run, print the checks; 1 on the first broken invariant."""
    parser = argparse.ArgumentParser(prog="clearway faults", description=__doc__)
    parser.add_argument("--seed", type=int, default=None, help="default: a random seed")
    parser.add_argument("--cards", type=int, default=20_000)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--day", type=date.fromisoformat, default=None)
    parser.add_argument(
        "--span", type=float, default=None, help="seconds the kills are spread over"
    )
    parser.add_argument("--keep", action="store_true", help="leave the run's servers up")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1 << 31)
    print(f"clearway faults --seed {seed} --cards {args.cards} --kills {args.kills}")
    started = time.monotonic()
    checks, _ = asyncio.run(
        run_faults(seed, args.cards, args.kills, day=args.day, span_s=args.span, keep=args.keep)
    )
    print(f"\nInvariants (seed {seed}, {time.monotonic() - started:.0f} s)")
    for check in checks:
        print(f"  {'ok    ' if check.ok else 'FAILED'} {check.name}")
    broken = next((c for c in checks if not c.ok), None)
    if broken is not None:
        print(f"\nFAILED with seed {seed}: {broken.name}: {broken.broken}", file=sys.stderr)
        print(f"reproduce: make faults SEED={seed}", file=sys.stderr)
        return 1
    print(f"\nAll invariants hold under faults (seed {seed}).")
    return 0
