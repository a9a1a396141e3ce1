"""Period-close benchmark: settlement closing a service day of a million priced journeys.

Run: .venv/bin/python bench/settlement_close.py [--journeys N] [--batch B] [--keep]
         [--profile FILE]

A scheme of 20 operators (agencies OP01..OP20 on the networks BUS, TRAM and RAIL), a
funder and the scheme party (fees, a default method, network and operator-set rules, a
funding rule) is written to a temporary TOML file and loaded as the service loads it.
--journeys priced journeys of one service day (1 to 3 legs on random operators, with
distances and standalone and reference fares, ~8 % concessions, a few re-priced and
withdrawn second revisions; seeded, so every run posts the same) are posted into a fresh
schema with `LedgerRepository.post_many`, --batch revisions at a time.

Then the close is timed, as ClosePeriod does it once the consumer has caught up:
`mark_closed` + `issue_file_sets` (every party's signed file set and the scheme's
pain.001). In the same run and database, a bare `COPY (SELECT ... FROM ledger_entries
WHERE period_id = $1) TO STDOUT` of the period's ledger rows into a file, and a COPY of
the close's own query (every party's lines in one pass), give the floors the close is
compared with.

Prints figures and ratios; asserts nothing. --profile FILE runs the close under cProfile
(its figures are then inflated by the profiler), saves the stats to FILE and prints the
top entries. The schema and the files are dropped at the end unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import itertools
import os
import pstats
import random
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pipeline import CpuSnapshot  # bench/ is on sys.path when a bench script runs

from clearway.db import checked_schema, create_pool
from clearway.infra.endpoints import Endpoints
from clearway.money import Money
from clearway.runtime import tune_garbage_collector
from clearway.scheme.file import load_scheme
from clearway.scheme.model import Scheme
from clearway.settings import ServiceSettings
from services.settlement.adapters.ledger_repository import (
    PERIOD_LINES_QUERY,
    PERIOD_LINES_SETTINGS,
    LedgerRepository,
    StoredFileSet,
)
from services.settlement.domain.settle import JourneyBasis, Leg
from services.settlement.service_layer.periods import SettlementPorts, issue_file_sets

SEED = 11
DAY = date(2026, 11, 25)  # a Wednesday: funding hours matter
PERIOD = DAY.isoformat()
TIMEZONE = ZoneInfo("Europe/London")
CURRENCY = "GBP"
OPERATORS = tuple(f"OP{n:02d}" for n in range(1, 21))
NETWORKS = {"BUS": OPERATORS[:8], "TRAM": OPERATORS[8:14], "RAIL": OPERATORS[14:]}
NETWORK_OF = {op: network for network, ops in NETWORKS.items() for op in ops}
TIER = {"BUS": "local", "TRAM": "regional", "RAIL": "national"}
FIXED_RULES = {  # operator-set rules: rule id -> agency -> percentage
    "op15-op16-fixed": {"OP15": "70", "OP16": "30"},
    "op09-op15-fixed": {"OP09": "35", "OP15": "65"},
    "op17-op18-op19-fixed": {"OP17": "40", "OP18": "35", "OP19": "25"},
}
DISTANCE_M = {"BUS": (400, 9_000), "TRAM": (800, 14_000), "RAIL": (2_000, 80_000)}
LATE_BY = 10_000  # a second revision arrives this many journeys after its first
PROGRESS_EVERY_S = 30.0
TOP_ENTRIES = 25

LEDGER_ROWS_QUERY = "SELECT * FROM ledger_entries WHERE period_id = $1"


# ---------------------------------------------------------------- the scheme


def _bank(n: int) -> str:
    """Fictitious UK bank details, distinct per party."""
    sort_code = f"30-{n // 100:02d}-{n % 100:02d}"
    return f'{{ sort_code = "{sort_code}", account_number = "{10_000_000 + n * 7_919:08d}" }}'


def scheme_toml() -> str:
    """The bench's scheme: the scheme party, 20 operators, a funder; fees 150 bps + 1p; a
    default method, network rules, operator-set `fixed` rules and one funding rule."""
    parts = [
        'scheme_id = "bench-20-operators"\nname = "Clearway close bench scheme"\n'
        'currency = "GBP"\n\n[settlement]\ntimezone = "Europe/London"\ncutoff = "10:00"\n'
        'reference_rider_category = "ADULT"\n',
        '[[party]]\nid = "scheme:clearway"\nname = "Clearway (bench)"\n'
        f"effective_from = 2025-01-01\nbank = {_bank(1)}\n",
    ]
    for n, op in enumerate(OPERATORS, start=2):
        parts.append(
            f'[[party]]\nid = "operator:{op}"\nname = "Operator {op} (bench)"\n'
            f'agency_ids = ["{op}"]\ntier = "{TIER[NETWORK_OF[op]]}"\n'
            f"effective_from = 2025-01-01\nbank = {_bank(n)}\n"
        )
    parts.append(
        '[[party]]\nid = "funder:county"\nname = "County council (bench)"\n'
        f"effective_from = 2025-01-01\nbank = {_bank(99)}\n"
    )
    parts.append(
        "[[fees]]\neffective_from = 2025-01-01\nclearing_fee_bps = 150\n"
        "clearing_fee_per_journey_minor = 1\nretailer_commission_bps = 200\n"
    )
    parts.append('[[apportionment.default]]\nmethod = "distance"\neffective_from = 2025-01-01\n')
    for rule_id, network, method in (
        ("bus-equal", "BUS", "equal"),
        ("tram-standalone", "TRAM", "standalone_fare"),
    ):
        parts.append(
            f'[[apportionment.rule]]\nid = "{rule_id}"\nnetwork = "{network}"\n'
            f'method = "{method}"\neffective_from = 2025-01-01\n'
        )
    for rule_id, percentages in FIXED_RULES.items():
        operators = ", ".join(f'"{op}"' for op in percentages)
        shares = ", ".join(f'{op} = "{pct}"' for op, pct in percentages.items())
        parts.append(
            f'[[apportionment.rule]]\nid = "{rule_id}"\noperators = [{operators}]\n'
            f'method = "fixed"\npercentages = {{ {shares} }}\neffective_from = 2025-01-01\n'
        )
    parts.append(
        '[[funding]]\nid = "county-concessions"\nfunder = "funder:county"\n'
        'rider_categories = ["SENIOR", "YOUTH"]\nnetworks = ["BUS", "TRAM"]\nhours = [\n'
        '  { days = "Mon-Fri", from = "09:30", to = "23:00" },\n'
        '  { days = "Sat,Sun", from = "00:00", to = "24:00" },\n]\n'
        'reimbursement = { form = "no_better_no_worse", factor = "0.48",'
        " additional_per_journey_minor = 12 }\neffective_from = 2025-01-01\n"
    )
    return "\n".join(parts)


# ---------------------------------------------------------------- the generated day


@dataclass
class DayCounts:
    """What the generator produced."""

    journeys: int = 0
    revisions: int = 0
    repriced: int = 0
    withdrawn: int = 0
    concessions: int = 0
    legs: int = 0


def _legs_on(rng: random.Random, operators: Sequence[str]) -> list[str]:
    """The agencies of a journey's legs, one per operator given, in random order."""
    legs = list(operators)
    rng.shuffle(legs)
    return legs


def _agencies(rng: random.Random) -> list[str]:
    """The agency of every leg: a fixed-rule operator set, one network, or a mix."""
    u = rng.random()
    if u < 0.06:
        return _legs_on(rng, list(rng.choice(list(FIXED_RULES.values()))))
    count = rng.choices((1, 2, 3), weights=(60, 30, 10))[0]
    if u < 0.80:
        network = rng.choices(("BUS", "TRAM", "RAIL"), weights=(50, 25, 25))[0]
        return [rng.choice(NETWORKS[network]) for _ in range(count)]
    return [rng.choice(OPERATORS) for _ in range(max(count, 2))]


def _leg(rng: random.Random, journey_id: str, k: int, agency: str, category: str) -> Leg:
    """One leg with a distance and its standalone (the traveller's) and reference (adult)
    fares; now and then a distance of 0 or a fare not known."""
    network = NETWORK_OF[agency]
    distance = 0 if rng.random() < 0.01 else rng.randint(*DISTANCE_M[network])
    adult = {"BUS": 175, "TRAM": 150 + distance // 80, "RAIL": 250 + distance // 60}[network]
    if rng.random() < 0.02:
        return Leg(f"{journey_id}-{k}", agency, network, distance, None, None)
    standalone = adult
    if category == "SENIOR":
        standalone = adult // 2 if network == "RAIL" else 0
    elif category == "YOUTH":
        standalone = adult // 2
    return Leg(
        f"{journey_id}-{k}",
        agency,
        network,
        distance,
        Money(standalone, CURRENCY),
        Money(adult, CURRENCY),
    )


def _charge(rng: random.Random, legs: Sequence[Leg]) -> Money:
    """The legs' standalone fares (200 for a fare not known), less a transfer discount."""
    total = sum(
        200 if leg.standalone_fare is None else leg.standalone_fare.amount_minor for leg in legs
    )
    if len(legs) > 1:
        total -= rng.choice((0, 0, 50, 100))
    return Money(max(total, 0), CURRENCY)


def new_journey(rng: random.Random, n: int, counts: DayCounts) -> JourneyBasis:
    """Revision 1 of journey number `n` of the day."""
    journey_id = f"j-{PERIOD}-{n:07d}"
    u = rng.random()
    category = "SENIOR" if u < 0.05 else "YOUTH" if u < 0.08 else "ADULT"
    counts.concessions += category != "ADULT"
    legs = tuple(
        _leg(rng, journey_id, k, agency, category)
        for k, agency in enumerate(_agencies(rng), start=1)
    )
    counts.legs += len(legs)
    local = datetime.combine(DAY, datetime.min.time(), TIMEZONE) + timedelta(
        hours=5, seconds=rng.randrange(int(18.5 * 3600))
    )
    return JourneyBasis(
        journey_id, 1, DAY, local.astimezone(UTC), category, _charge(rng, legs), legs
    )


def second_revision(
    rng: random.Random, first: JourneyBasis, counts: DayCounts
) -> JourneyBasis | None:
    """Now and then a revision 2: withdrawn (its taps joined another journey), or
    re-priced (a late tap added a leg, or a cap changed the charge)."""
    u = rng.random()
    if u < 0.005:
        counts.withdrawn += 1
        return JourneyBasis(
            first.journey_id,
            2,
            DAY,
            first.started_at,
            first.rider_category_id,
            Money(0, CURRENCY),
            (),
        )
    if u < 0.025:
        counts.repriced += 1
        legs = first.legs
        if len(legs) < 3 and rng.random() < 0.5:
            agency = rng.choice(OPERATORS)
            legs = (
                *legs,
                _leg(rng, first.journey_id, len(legs) + 1, agency, first.rider_category_id),
            )
        charge = Money(max(0, _charge(rng, legs).amount_minor - rng.randrange(0, 150)), CURRENCY)
        return JourneyBasis(
            first.journey_id, 2, DAY, first.started_at, first.rider_category_id, charge, legs
        )
    return None


def revisions(journeys: int, seed: int, counts: DayCounts) -> Iterator[JourneyBasis]:
    """Every revision of the day in arrival order; second revisions come LATE_BY journeys
    after their first. Deterministic for a seed."""
    rng = random.Random(seed)
    late: deque[tuple[int, JourneyBasis]] = deque()
    for n in range(1, journeys + 1):
        first = new_journey(rng, n, counts)
        counts.journeys += 1
        yield first
        second = second_revision(rng, first, counts)
        if second is not None:
            late.append((n + LATE_BY, second))
        while late and late[0][0] <= n:
            yield late.popleft()[1]
    for _, second in late:
        yield second


# ---------------------------------------------------------------- phases


@dataclass
class Phase:
    """A timed phase: wall seconds, CPU seconds of this process and of PostgreSQL, and
    the machine's busy CPU seconds."""

    seconds: float = 0.0
    cpu: float = 0.0
    postgres: float = 0.0
    busy: float = 0.0

    def describe(self) -> str:
        """CPU use over the phase."""
        return (
            f"CPU: this process {self.cpu:.1f} s, PostgreSQL {self.postgres:.1f} s; machine"
            f" busy {self.busy / max(self.seconds, 1e-9):.2f} of {os.cpu_count()} cores"
        )


class Timer:
    """Times a block: wall, this process's CPU, and PostgreSQL's CPU (from /proc)."""

    def __init__(self, phase: Phase) -> None:
        self.phase = phase

    def __enter__(self) -> Timer:
        self.snapshot = CpuSnapshot.now()
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.phase.seconds += time.perf_counter() - self.wall
        self.phase.cpu += time.process_time() - self.cpu
        now, then = CpuSnapshot.now(), self.snapshot
        self.phase.busy += now.busy - then.busy
        self.phase.postgres += sum(  # backends that ended meanwhile are not counted
            seconds - then.infra.get(pid, (name, 0.0))[1]
            for pid, (name, seconds) in now.infra.items()
            if name == "postgres"
        )


@dataclass(frozen=True)
class Posted:
    """What posting the day did."""

    counts: DayCounts
    entries: int
    phase: Phase  # post_many only, not the generating


async def post_day(ledger: LedgerRepository, journeys: int, batch: int) -> Posted:
    """Generate and post the day, `batch` revisions per post_many."""
    counts = DayCounts()
    stream = revisions(journeys, SEED, counts)
    posting = Phase()
    generating = 0.0
    entries = batches = 0
    started = last_print = time.monotonic()
    while True:
        t0 = time.perf_counter()
        items = list(itertools.islice(stream, batch))
        generating += time.perf_counter() - t0
        if not items:
            break
        with Timer(posting):
            results = await ledger.post_many(items)
        counts.revisions += len(items)
        entries += sum(r.inserted for r in results)
        batches += 1
        if time.monotonic() - last_print > PROGRESS_EVERY_S:
            last_print = time.monotonic()
            print(
                f"     ... {counts.revisions:,} revisions posted at {last_print - started:.0f} s"
                f" ({counts.revisions / posting.seconds:,.0f}/s)",
                flush=True,
            )
    print(
        f"  {counts.revisions:,} revisions of {counts.journeys:,} journeys ({counts.repriced:,}"
        f" re-priced, {counts.withdrawn:,} withdrawn; {counts.concessions:,} concessions;"
        f" {counts.legs / max(counts.journeys, 1):.2f} legs per journey) in {batches:,}"
        f" batches of {batch:,}"
    )
    print(
        f"  generating {generating:.1f} s; post_many {posting.seconds:.1f} s:"
        f" {counts.revisions / posting.seconds:,.0f} revisions/s,"
        f" {entries:,} ledger entries ({entries / posting.seconds:,.0f}/s)"
    )
    print(f"  post_many {posting.describe()}")
    return Posted(counts, entries, posting)


@dataclass(frozen=True)
class Closed:
    """What the close produced."""

    file_sets: list[StoredFileSet]
    phase: Phase
    bytes_written: int
    files: int

    @property
    def lines(self) -> int:
        """Lines of every party's lines.csv."""
        return sum(s.line_count for s in self.file_sets)


async def close(ports: SettlementPorts, profile: Path | None) -> Closed:
    """mark_closed + issue_file_sets, timed (under cProfile when `profile` is set)."""
    phase = Phase()
    profiler = cProfile.Profile() if profile else None
    with Timer(phase):
        if profiler:
            profiler.enable()
        await ports.ledger.mark_closed(PERIOD)
        file_sets = await issue_file_sets(ports, PERIOD, DAY)
        if profiler:
            profiler.disable()
    if profiler and profile:
        profiler.dump_stats(profile)
    files, size = await asyncio.to_thread(_tree_size, ports.files_root / PERIOD)
    return Closed(file_sets, phase, size, files)


def _tree_size(root: Path) -> tuple[int, int]:
    """(files, bytes) under `root`."""
    sizes = [p.stat().st_size for p in root.rglob("*") if p.is_file()]
    return len(sizes), sum(sizes)


@dataclass(frozen=True)
class Copied:
    """A COPY ... TO STDOUT into files."""

    rows: int
    bytes: int
    phase: Phase


async def copy_ledger_rows(pool: asyncpg.Pool, out: Path) -> Copied:
    """The period's ledger rows, as they are, into one file."""
    phase = Phase()
    async with pool.acquire() as conn:
        with Timer(phase):
            status = await conn.copy_from_query(LEDGER_ROWS_QUERY, PERIOD, output=out)
    return Copied(int(status.split()[-1]), (await asyncio.to_thread(out.stat)).st_size, phase)


async def copy_close_query(pool: asyncpg.Pool, out: Path) -> Copied:
    """The close's query (LedgerRepository.copy_period_lines: every party's lines in one
    pass, grouped, joined with the bases, in file order) into one file."""
    phase = Phase()
    async with pool.acquire() as conn, conn.transaction():
        for setting in PERIOD_LINES_SETTINGS:  # as the close runs it
            await conn.execute(setting)
        with Timer(phase):
            status = await conn.copy_from_query(PERIOD_LINES_QUERY, PERIOD, output=out)
    return Copied(int(status.split()[-1]), (await asyncio.to_thread(out.stat)).st_size, phase)


# Where a close's time goes, from the profile: (what, [(file name end, function)]),
# inclusive time of each function; the parts do not overlap.
PROFILE_PARTS = (
    (
        "checks, totals and CSV rows (PeriodFileSets.add_rows)",
        [("file_sets.py", "add_rows")],
    ),
    (
        "splitting COPY rows (copy_period_lines' sink, without add_rows)",
        [("~", "<method 'split' of 'bytes' objects>")],
    ),
    (
        "bases posted before migration v4 rendered from their JSON (_LegacyColumns)",
        [("ledger_repository.py", "resolve")],
    ),
    (
        "reading PostgreSQL's replies (socket reads, asyncpg's COPY protocol)",
        [("selector_events.py", "_read_ready")],
    ),
    (
        "idle in the event loop (waiting for PostgreSQL or the writer thread)",
        [("~", "<method 'poll' of 'select.epoll' objects>")],
    ),
)


def print_profile(path: Path) -> None:
    """Where the close's time goes, then the top entries by own and cumulative time."""
    stats = pstats.Stats(str(path))
    table = stats.stats  # type: ignore[attr-defined]  # (file, line, function) -> timings
    total = max(stats.total_tt, 1e-9)  # type: ignore[attr-defined]
    print(f"  where the time goes (profiled: {total:.1f} s)")
    accounted = 0.0
    for label, functions in PROFILE_PARTS:
        seconds = sum(
            timings[3]
            for (file, _, name), timings in table.items()
            for end, wanted in functions
            if file.endswith(end) and name == wanted
        )
        accounted += seconds
        print(f"    {seconds:7.2f} s {seconds / total:6.1%}  {label}")
    rest = total - accounted
    print(f"    {rest:7.2f} s {rest / total:6.1%}  the rest (sealing, summaries, ...)")
    stats.sort_stats(pstats.SortKey.TIME).print_stats(TOP_ENTRIES)
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(TOP_ENTRIES)


# ---------------------------------------------------------------- the whole run


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


async def run(args: argparse.Namespace) -> None:
    """Scheme, schema, posting, close, COPYs, summary; then clean up."""
    work_dir = Path(tempfile.mkdtemp(prefix="clearway-close-bench-"))
    scheme_file = work_dir / "scheme.toml"
    scheme_file.write_text(scheme_toml(), encoding="utf-8")
    scheme = load_scheme(scheme_file)  # agencies unchecked: no GTFS feed of OP01..OP20
    schema = checked_schema(f"bench_close_{int(time.time())}")
    print(
        f"Clearway period-close bench: {args.journeys:,} journeys on {len(OPERATORS)}"
        f" operators, service day {PERIOD}; schema {schema}, files in {work_dir}"
    )
    print_scheme(scheme, scheme_file)
    dsn = Endpoints.from_env().pg_dsn
    pool = await create_pool(dsn, schema, max_size=4)
    try:
        await measure(args, scheme, pool, work_dir)
    finally:
        await pool.close()
        if args.keep:
            print(f"\nKept schema {schema} and {work_dir}")
        else:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            finally:
                await conn.close()
            shutil.rmtree(work_dir, ignore_errors=True)
            print(f"\nDropped schema {schema}; removed {work_dir}")


def print_scheme(scheme: Scheme, path: Path) -> None:
    """What the scheme holds, as loaded."""
    kinds: dict[str, int] = {}
    for party in scheme.parties:
        kinds[party.kind.value] = kinds.get(party.kind.value, 0) + 1
    rules = scheme.rules_on(DAY)
    print(
        f"  scheme {scheme.scheme_id} ({path.name}, loaded and checked): "
        + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        + f"; default {scheme.default_method(DAY).value}; {len(rules)} method rules ("
        + ", ".join(f"{r.rule_id} {r.method.value}" for r in rules)
        + f"); {len(scheme.funding_rules)} funding rule"
    )


async def measure(
    args: argparse.Namespace, scheme: Scheme, pool: asyncpg.Pool, work_dir: Path
) -> None:
    """Every phase, then the summary."""
    ledger = LedgerRepository(pool, scheme)
    await ledger.migrate()
    print(f"\nPosting (post_many, batches of {args.batch:,})")
    posted = await post_day(ledger, args.journeys, args.batch)
    vacuum = Phase()
    with Timer(vacuum):  # what autovacuum will have done by the time a day closes
        await pool.execute("VACUUM ANALYZE ledger_entries, bases, journey_positions")
    print(f"  VACUUM ANALYZE {vacuum.seconds:.1f} s (autovacuum would have by the close)")

    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"clearway close bench").digest())
    # No events, no lag probe: the close is timed from after ClosePeriod's wait.
    ports = SettlementPorts(
        ledger,
        scheme,
        work_dir / "files",
        key,
        events=None,  # type: ignore[arg-type]
        lag=None,  # type: ignore[arg-type]
        close_wait_s=0,
    )
    print("\nClose (mark_closed + issue_file_sets)" + (" under cProfile" if args.profile else ""))
    closed = await close(ports, args.profile)
    print_close(closed, posted.counts.journeys)

    print("\nBare COPY of the period's ledger rows (SELECT * ... WHERE period_id = $1)")
    bare = await copy_ledger_rows(pool, work_dir / "ledger_rows.tsv")
    print_copy(bare)
    print("COPY of the close's query (every party's lines in one pass)")
    grouped = await copy_close_query(pool, work_dir / "close_query.tsv")
    print_copy(grouped)

    print_summary(posted, closed, bare, grouped)
    if args.profile:
        print(f"\nProfile of the close ({args.profile})")
        print_profile(args.profile)


def print_close(closed: Closed, journeys: int) -> None:
    """The close's figures."""
    seconds = closed.phase.seconds
    largest = max(closed.file_sets, key=lambda s: s.line_count)
    print(
        f"  {seconds:.1f} s: {journeys / seconds:,.0f} journeys/s,"
        f" {closed.lines / seconds:,.0f} lines/s; {len(closed.file_sets)} file sets,"
        f" {closed.files} files, {closed.lines:,} lines, {_mb(closed.bytes_written)}"
        f" ({closed.bytes_written / seconds / 1e6:,.1f} MB/s)"
    )
    print(
        f"  largest set {largest.party_id}: {largest.line_count:,} lines; net positions sum"
        f" to {sum(s.net.amount_minor for s in closed.file_sets)};"
        f" {sum(1 for s in closed.file_sets if s.end_to_end_id)} credit transfers in pain.001"
    )
    print(f"  {closed.phase.describe()}")


def print_summary(posted: Posted, closed: Closed, bare: Copied, grouped: Copied) -> None:
    """Every figure side by side, and the ratios."""
    counts = posted.counts
    print(
        f"\nSummary: {counts.journeys:,} journeys ({counts.revisions:,} revisions),"
        f" {posted.entries:,} ledger entries"
    )
    print(f"  {'phase':<18} {'count':>11} {'seconds':>8} {'per second':>12} {'CPU s':>7}")
    for label, count, unit, phase in (
        ("post_many", counts.revisions, "revisions", posted.phase),
        ("close", counts.journeys, "journeys", closed.phase),
        ("COPY ledger rows", bare.rows, "rows", bare.phase),
        ("COPY close query", grouped.rows, "rows", grouped.phase),
    ):
        rate = count / phase.seconds
        print(
            f"  {label:<18} {count:>11,} {phase.seconds:>8.1f} {rate:>10,.0f} {unit[0]}/s"
            f" {phase.cpu:>7.1f}"
        )
    seconds = closed.phase.seconds
    print(
        f"  close wrote {closed.lines:,} lines, {_mb(closed.bytes_written)}; aim under 30 s:"
        f" {'met' if seconds < 30 else 'not met'}"
    )
    print(f"  ratio close / COPY ledger rows: {seconds / bare.phase.seconds:.1f}")
    print(f"  ratio close / COPY close query: {seconds / grouped.phase.seconds:.1f}")
    print("  (CPU s: of this process; PostgreSQL's is in each phase's CPU line above)")


def print_copy(copied: Copied) -> None:
    """One COPY's figures."""
    seconds = copied.phase.seconds
    print(
        f"  {seconds:.2f} s: {copied.rows:,} rows ({copied.rows / seconds:,.0f}/s),"
        f" {_mb(copied.bytes)}; {copied.phase.describe()}"
    )


def main() -> int:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--journeys", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5_000, help="revisions per post_many")
    parser.add_argument("--keep", action="store_true", help="keep the schema and the files")
    parser.add_argument("--profile", type=Path, help="cProfile the close; stats to this file")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    # The collector as the settlement service tunes it (CLEARWAY_GC_THRESHOLDS).
    tune_garbage_collector(ServiceSettings.from_env("settlement").gc_thresholds)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
