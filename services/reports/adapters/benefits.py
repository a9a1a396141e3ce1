"""Benefit postings (redemptions at providers, rewards) from the `benefits` topic."""

from __future__ import annotations

from clearway.events.v1 import events_pb2
from clearway.money import Money
from services.reports.adapters.topics import read_topic
from services.reports.domain.benefits import Posting, PostingKind
from services.reports.domain.scope import Period

_KINDS = {
    events_pb2.BenefitPosting.KIND_REDEMPTION: PostingKind.REDEMPTION,
    events_pb2.BenefitPosting.KIND_REWARD: PostingKind.REWARD,
}


def posting_from_event(event: events_pb2.BenefitPosting) -> Posting:
    """The fields the reports use, from a `BenefitPosting` event."""
    return Posting(
        posting_id=event.posting_id,
        kind=_KINDS.get(event.kind, PostingKind.OTHER),
        funder_id=event.funder_id,
        amount=Money(event.amount.amount_minor, event.amount.currency),
        service_day=event.service_day,
        provider_id=event.provider_id,
        entitlement_scheme_id=event.entitlement_scheme_id,
        category=event.category,
        reward_rule_id=event.reward_rule_id,
    )


async def read_postings(
    bootstrap: str, topic: str, period: Period | None, funder_id: str | None = None
) -> list[Posting]:
    """Every posting of `period` (None: of any day) on `topic` paid by `funder_id` (or
    anyone), each posting id once (read whole, see `read_topic`)."""
    seen: dict[str, Posting] = {}

    def keep(value: bytes) -> None:
        event = events_pb2.BenefitPosting.FromString(value)
        in_period = period is None or period.contains(event.service_day)
        if in_period and funder_id in (None, event.funder_id):
            seen.setdefault(event.posting_id, posting_from_event(event))

    await read_topic(bootstrap, topic, keep)
    return list(seen.values())
