"""Apportionment: split a charge (or an adjustment) between the operators that carried it."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from clearway.money import Money

from .errors import InvalidJourneyError


class ApportionmentMethod(enum.Enum):
    """Declared method of splitting a charge between operators.

    Only EQUAL is implemented; distance share, standalone-fare share and fixed
    percentages slot in as further `_weights_*` functions.
    """

    EQUAL = "EQUAL"


@dataclass(frozen=True, slots=True)
class Leg:
    """What apportionment needs to know about one leg of a journey."""

    leg_id: str
    operator_id: str
    distance_m: int = 0


@dataclass(frozen=True, slots=True)
class Share:
    """An operator's part of a charge."""

    operator_id: str
    amount: Money


def operators_of(legs: Sequence[Leg]) -> list[str]:
    """The distinct operators of `legs`, in order of first appearance."""
    return list(dict.fromkeys(leg.operator_id for leg in legs))


def _weights_equal(operators: Sequence[str], legs: Sequence[Leg]) -> list[int]:
    return [1 for _ in operators]


def apportion(
    charge: Money,
    legs: Sequence[Leg],
    method: ApportionmentMethod = ApportionmentMethod.EQUAL,
) -> list[Share]:
    """Shares of `charge` per distinct operator of `legs`; they sum exactly to `charge`.

    Negative amounts (refund adjustments) split the same way, mirrored. The remainder
    pennies go to the operators that appear first, so the split is deterministic.
    """
    operators = operators_of(legs)
    if not operators:
        raise InvalidJourneyError("NO_LEGS", "a charge needs at least one leg to apportion")
    if method is ApportionmentMethod.EQUAL:
        weights = _weights_equal(operators, legs)
    else:  # pragma: no cover - every enum member is handled above
        raise NotImplementedError(method)
    parts = charge.allocate(weights)
    return [Share(op, amount) for op, amount in zip(operators, parts, strict=True)]
