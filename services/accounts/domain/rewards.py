"""Rewards (docs/benefits.md): which rule an officer may grant, the period a reward counts
against, and which off-peak rules a journey earns. Pure rules over the scheme file's
`RewardRule`s."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime

from clearway.errors import ClearwayError, ErrorKind
from clearway.scheme.model import RewardCredit, RewardKind, RewardPeriod, RewardRule


class UnknownRewardRuleError(ClearwayError):
    """No reward rule of the officer's council that an officer grants has this id."""

    code = "UNKNOWN_REWARD_RULE"
    kind = ErrorKind.NOT_FOUND


class RewardRefusedError(ClearwayError):
    """A reward that cannot be credited (`NO_CARD`, `NO_ENTITLEMENT`)."""

    kind = ErrorKind.FAILED_PRECONDITION


class RewardAlreadyGrantedError(ClearwayError):
    """The rule rewarded this account already in this period."""

    code = "REWARD_ALREADY_GRANTED"
    kind = ErrorKind.ALREADY_EXISTS


def period_of(period: RewardPeriod, day: date) -> str:
    """The period (YYYY-MM-DD or YYYY-MM) service day `day` falls in."""
    if period is RewardPeriod.DAY:
        return day.isoformat()
    return f"{day.year:04d}-{day.month:02d}"


def officer_rule(rule: RewardRule | None, funder_id: str) -> RewardRule:
    """`rule` when an officer of `funder_id` may grant it (an officer_grant rule of their
    council); UNKNOWN_REWARD_RULE otherwise (another council's rule is unknown too)."""
    if rule is None or rule.funder_id != funder_id or rule.kind is not RewardKind.OFFICER_GRANT:
        raise UnknownRewardRuleError("no officer-granted reward rule of your council has this id")
    return rule


def operator_runs(
    rule: RewardRule, operator_ids: Iterable[str], agency_ids: frozenset[str]
) -> bool:
    """Whether a journey on `operator_ids` (its legs' GTFS agencies) may earn `rule`: any
    journey for a council's rule; for an operator's rule (`operator:X`), one with a leg
    of the operator (its agencies `agency_ids`, or X itself)."""
    if not rule.funder_id.startswith("operator:"):
        return True
    own = agency_ids | {rule.funder_id.removeprefix("operator:")}
    return any(op in own for op in operator_ids)


def off_peak_rules(rules: Sequence[RewardRule], started_local: datetime) -> list[RewardRule]:
    """The stored-value off-peak rules (of `rules`, those in force) a journey that started
    at local time `started_local` earns: it started in one of the rule's hours windows."""
    return [
        r
        for r in rules
        if r.kind is RewardKind.OFF_PEAK_TRAVEL
        and r.credit is RewardCredit.STORED_VALUE
        and any(w.contains(started_local) for w in r.hours)
    ]
