"""The invariants a fault run must keep, in the order they are checked: the first broken one
is what a failure names."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from clearway.ingest.v1 import ingest_pb2
from services.faults.day import Outcome
from services.faults.leaks import Leak

DONE = (ingest_pb2.ACK_STATUS_ACCEPTED, ingest_pb2.ACK_STATUS_DUPLICATE)


@dataclass(frozen=True, slots=True)
class Check:
    """One invariant and, when broken, what breaks it (a short, secret-free detail)."""

    name: str
    broken: str = ""

    @property
    def ok(self) -> bool:
        """The invariant holds."""
        return not self.broken


def _first(items: Iterator[str], limit: int = 3) -> str:
    shown = []
    for item in items:
        shown.append(item)
        if len(shown) == limit:
            break
    return "; ".join(shown)


def taps_accounted(run: Outcome) -> str:
    """sent = accepted + duplicates + rejected."""
    t = run.tally
    if t.balanced():
        return ""
    return (
        f"sent {t.sent} != accepted {t.accepted} + duplicates {t.duplicates}"
        f" + rejected {t.rejected_total}"
    )


def accepted_on_topic(run: Outcome) -> str:
    """Every tap acknowledged ACCEPTED or DUPLICATE is on the taps topic."""
    on_topic = {tap_id for tap_id, _ in run.taps}
    by_tap = run.tally.by_tap or {}
    missing = [
        f"{d}:{s}"
        for (d, s), statuses in by_tap.items()
        if any(st in DONE for st in statuses) and f"{d}:{s}" not in on_topic
    ]
    return (
        f"{len(missing)} acknowledged taps not on the topic, e.g. {missing[:3]}" if missing else ""
    )


def rejected_dead_lettered(run: Outcome) -> str:
    """Every tap answered REJECTED (and never accepted) is on the dead-letter topic."""
    parked = set(run.dead_letters)
    by_tap = run.tally.by_tap or {}
    missing = [
        key
        for key, statuses in by_tap.items()
        if not any(st in DONE for st in statuses) and key not in parked
    ]
    return f"{len(missing)} rejected taps not dead-lettered, e.g. {missing[:3]}" if missing else ""


def taps_once(run: Outcome) -> str:
    """No tap twice on the taps topic (ingest promises exactly once)."""
    counts = Counter(tap_id for tap_id, _ in run.taps)
    twice = [f"{tap_id} x{n}" for tap_id, n in sorted(counts.items()) if n > 1]
    return f"{len(twice)} taps stored more than once: {twice[:3]}" if twice else ""


def same_taps(run: Outcome, ref: Outcome) -> str:
    """The same taps on the topic as the fault-free run, in the same order per card."""
    mine, theirs = _taps_by_card(run), _taps_by_card(ref)
    if mine == theirs:
        return ""
    a = {t for ts in mine.values() for t in ts}
    b = {t for ts in theirs.values() for t in ts}
    if a != b:
        return f"{len(b - a)} taps missing, {len(a - b)} extra vs the fault-free run"
    cards = sum(1 for c in theirs if mine.get(c) != theirs[c])
    return f"{cards} cards' taps in another order than in the fault-free run"


def _taps_by_card(run: Outcome) -> dict[str, list[str]]:
    from clearway.events.v1 import events_pb2  # noqa: PLC0415 - decode only here

    by_card: dict[str, list[str]] = defaultdict(list)
    for tap_id, value in run.taps:
        by_card[events_pb2.Tap.FromString(value).card_token].append(tap_id)
    return by_card


def revisions_sound(run: Outcome) -> str:
    """A (journey, revision) seen twice is byte-identical; revisions run 1..n."""
    seen: dict[tuple[str, int], bytes] = {}
    revisions: dict[str, set[int]] = defaultdict(set)
    for journey_id, revision, value in run.revisions:
        if seen.setdefault((journey_id, revision), value) != value:
            return f"{journey_id} revision {revision} published twice with different content"
        revisions[journey_id].add(revision)
    gaps = [j for j, revs in revisions.items() if revs != set(range(1, max(revs) + 1))]
    return f"{len(gaps)} journeys miss a revision, e.g. {gaps[:3]}" if gaps else ""


def same_revisions(run: Outcome, ref: Outcome) -> str:
    """The same journey revisions, byte for byte, as the fault-free run."""
    mine = {(j, r): v for j, r, v in run.revisions}
    theirs = {(j, r): v for j, r, v in ref.revisions}
    if mine == theirs:
        return ""
    missing, extra = theirs.keys() - mine.keys(), mine.keys() - theirs.keys()
    differ = [k for k in theirs.keys() & mine.keys() if theirs[k] != mine[k]]
    return (
        f"{len(missing)} revisions missing, {len(extra)} extra, {len(differ)} different "
        f"vs the fault-free run, e.g. {sorted(missing or extra or differ)[:2]}"
    )


def same_rows(name: str) -> Callable[[Outcome, Outcome], str]:
    """The table's rows (as a multiset) equal the fault-free run's."""

    def check(run: Outcome, ref: Outcome) -> str:
        mine, theirs = Counter(run.tables[name]), Counter(ref.tables[name])
        if mine == theirs:
            return ""
        missing, doubled = theirs - mine, mine - theirs
        return (
            f"{sum(missing.values())} rows missing, {sum(doubled.values())} extra or doubled "
            f"(of {sum(theirs.values())} in the fault-free run)"
        )

    return check


def conservation(run: Outcome) -> str:
    """Shares = charges, nets sum to zero, top-ups and redemptions to the penny, every file
    set verifies (the demo's conservation check)."""
    return "; ".join(run.conservation_failures)


def same_files(run: Outcome, ref: Outcome) -> str:
    """Every settlement file byte-identical to the fault-free run's."""
    if not ref.files:
        return "the fault-free run wrote no settlement files"
    missing = sorted(ref.files.keys() - run.files.keys())
    extra = sorted(run.files.keys() - ref.files.keys())
    differ = sorted(k for k in ref.files.keys() & run.files.keys() if ref.files[k] != run.files[k])
    if not (missing or extra or differ):
        return ""
    return f"missing {missing[:3]}, extra {extra[:3]}, different {differ[:5]}"


TABLE_CHECKS = (
    "ledger entries",
    "balance movements",
    "card balances",
    "top-ups",
    "redemptions",
    "entitlement movements",
    "journey revisions",
)


def check_run(run: Outcome, ref: Outcome, leaks: list[Leak]) -> list[Check]:
    """Every invariant, in order (the fault-free run's own checks first)."""
    checks = [
        Check("the fault-free run keeps its own invariants", conservation(ref) or taps_once(ref)),
        Check(
            "every tap accounted for (sent = accepted + duplicates + rejected)", taps_accounted(run)
        ),
        Check("every acknowledged tap is on the taps topic", accepted_on_topic(run)),
        Check("every rejected tap is on the dead-letter topic", rejected_dead_lettered(run)),
        Check("no tap stored twice on the taps topic", taps_once(run)),
        Check("the same taps as the fault-free run", same_taps(run, ref)),
        Check("journey revisions contiguous, a repeat byte-identical", revisions_sound(run)),
        Check("the same journey revisions as the fault-free run", same_revisions(run, ref)),
    ]
    checks += [
        Check(f"{name}: none missing or doubled vs the fault-free run", same_rows(name)(run, ref))
        for name in TABLE_CHECKS
    ]
    checks += [
        Check("shares = charges, nets sum to zero, money conserved", conservation(run)),
        Check("every settlement file byte-identical to the fault-free run", same_files(run, ref)),
        Check(
            "no card token, password, key or session token in any log line",
            f"{len(leaks)} lines, first {leaks[0]}" if leaks else "",
        ),
    ]
    return checks
