"""Voucher spend, budget used and rewards from benefit postings: pure aggregation.

A `BenefitPosting` carries no card or account, so the people in a cell cannot be counted:
the small-cell rule counts REDEMPTIONS (rewards) instead. That is the more conservative
choice, since each person in a cell redeemed at least once: a cell of 10 redemptions holds
at most 10 people, so it is shown only when it could hold 10.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from clearway.disclosure import SUPPRESSED, shown
from clearway.money import Money
from clearway.scheme.model import EntitlementScheme
from services.reports.domain.scope import Period
from services.reports.domain.tables import Cell, Table, protect


class PostingKind(StrEnum):
    """What moved the money."""

    REDEMPTION = "redemption"  # a provider redeemed an entitlement
    REWARD = "reward"  # a reward credited a card's stored value
    OTHER = "other"  # a kind this version does not know: not counted


@dataclass(frozen=True, slots=True)
class Posting:
    """A benefit posting, as far as the reports need it."""

    posting_id: str
    kind: PostingKind
    funder_id: str
    amount: Money
    service_day: str
    provider_id: str = ""  # REDEMPTION
    entitlement_scheme_id: str = ""  # REDEMPTION
    category: str = ""  # REDEMPTION
    reward_rule_id: str = ""  # REWARD


def standing_postings(
    postings: Iterable[Posting], period: Period, funder_id: str | None = None
) -> list[Posting]:
    """Each posting of `period` once (a posting id repeated is one posting), paid by
    `funder_id` (or by anyone)."""
    return each_posting_once(
        p for p in postings if period.contains(p.service_day) and funder_id in (None, p.funder_id)
    )


def each_posting_once(postings: Iterable[Posting]) -> list[Posting]:
    """Each posting id once (the first seen), sorted by posting id."""
    seen: dict[str, Posting] = {}
    for p in postings:
        seen.setdefault(p.posting_id, p)
    return [seen[posting_id] for posting_id in sorted(seen)]


class _Sums:
    """Per cell: how many postings and their amount."""

    def __init__(self, currency: str) -> None:
        self.currency = currency
        self.count: dict[tuple[str, ...], int] = defaultdict(int)
        self.amount: dict[tuple[str, ...], Money] = defaultdict(lambda: Money.zero(currency))

    def add(self, key: tuple[str, ...], amount: Money) -> None:
        self.count[key] += 1
        self.amount[key] += amount  # a foreign currency raises CurrencyMismatchError

    def cells(self) -> list[Cell]:
        return [
            Cell(key, (n, self.amount[key].amount_minor), people=n, tail=(self.currency,))
            for key, n in self.count.items()
        ]


def voucher_spend(postings: Iterable[Posting], currency: str) -> Table:
    """Redemptions and their amount per entitlement scheme, category and provider.

    The cells of a scheme add up to its budget used: secondary suppression per scheme."""
    sums = _Sums(currency)
    for p in postings:
        if p.kind is PostingKind.REDEMPTION:
            sums.add((p.entitlement_scheme_id, p.category, p.provider_id), p.amount)
    return Table(
        "voucher_spend",
        "Voucher spend by category and provider",
        (
            "entitlement_scheme_id",
            "category",
            "provider_id",
            "redemptions",
            "amount_minor",
            "currency",
        ),
        protect(sums.cells(), subtotal_prefix=1),
    )


def rewards(postings: Iterable[Posting], currency: str) -> Table:
    """Rewards credited to stored value and their amount per reward rule."""
    sums = _Sums(currency)
    for p in postings:
        if p.kind is PostingKind.REWARD:
            sums.add((p.reward_rule_id,), p.amount)
    return Table(
        "rewards",
        "Rewards by rule",
        ("reward_rule_id", "rewards", "amount_minor", "currency"),
        protect(sums.cells()),
    )


def _percent(used: int, budget: int) -> str:
    """`used` as a percentage of `budget`, to one decimal place (exact, half to even)."""
    if budget <= 0:
        return ""
    tenths = round(Fraction(used * 1000, budget))
    return f"{tenths // 10}.{tenths % 10}"


def _budget_minor(versions: Sequence[EntitlementScheme], period: Period) -> int:
    """The budget of a scheme over `period`: per calendar month of the period, the monthly
    budget of the version in force on the month's first day of the period it applies on."""
    total = 0
    for month in period.months():
        version = next(
            (
                v
                for day in period.days()
                if day.strftime("%Y-%m") == month
                for v in versions
                if v.dates.applies_on(day)
            ),
            None,
        )
        total += version.monthly_budget_minor if version is not None else 0
    return total


def budget_used(
    postings: Iterable[Posting],
    schemes: Iterable[EntitlementScheme],
    period: Period,
    currency: str,
    funder_id: str | None = None,
) -> Table:
    """Per entitlement scheme (of `funder_id`, or all) in force in `period`: its budget
    (monthly budget x months of the period) and what its redemptions used of it."""
    versions: dict[str, list[EntitlementScheme]] = defaultdict(list)
    for s in schemes:
        in_force = any(s.dates.applies_on(day) for day in period.days())
        if in_force and funder_id in (None, s.funder_id):
            versions[s.scheme_id].append(s)
    count: dict[str, int] = defaultdict(int)
    used: dict[str, Money] = defaultdict(lambda: Money.zero(currency))
    for p in postings:
        if p.kind is PostingKind.REDEMPTION:
            count[p.entitlement_scheme_id] += 1
            used[p.entitlement_scheme_id] += p.amount
    months = " ".join(period.months())
    rows: list[tuple[str, ...]] = []
    for scheme_id in sorted(versions.keys() | count.keys()):
        known = versions.get(scheme_id, [])
        name = max(known, key=lambda v: v.dates.effective_from).name if known else ""
        budget = _budget_minor(known, period) if known else None
        n, spent = count[scheme_id], used[scheme_id].amount_minor
        if n and not shown(n):
            figures = (SUPPRESSED, SUPPRESSED, SUPPRESSED)
        else:  # no redemption at all is nobody's secret: the budget is untouched
            percent = _percent(spent, budget) if budget is not None else ""
            figures = (str(n), str(spent), percent)
        budget_text = "" if budget is None else str(budget)
        rows.append((scheme_id, name, months, budget_text, *figures, currency))
    return Table(
        "budget",
        "Budget used by entitlement scheme",
        (
            "entitlement_scheme_id",
            "name",
            "budget_months",
            "budget_minor",
            "redemptions",
            "used_minor",
            "used_percent",
            "currency",
        ),
        tuple(rows),
    )
