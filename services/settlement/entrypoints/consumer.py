"""The settlement handler: priced journey revisions, top-ups and benefit postings, each
batch posted to the ledger in one transaction, exactly once in effect.

The kit's loop (clearway.consumer) commits the Kafka offset only after the ledger
transaction committed; the ledger skips what it already processed (by source and
revision; a top-up by its id, a benefit posting by its posting id), so a redelivery or a
replay adds nothing. A record that cannot be posted is parked on `<topic>.settlement.dlq`
by the loop with its reason code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from clearway.consumer import PartitionBatch, Record
from services.settlement.adapters.journey_events import (
    decode_benefit,
    decode_journey,
    decode_top_up,
)
from services.settlement.adapters.ledger_repository import Item, LedgerRepository

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PostingStats:
    """Counts since start, for logs and tests."""

    posted: int = 0  # revisions, top-ups, benefit postings processed (also ones changing nothing)
    replayed: int = 0  # skipped: not newer than the latest processed for their source
    entries: int = 0  # ledger entries inserted


class JourneyPoster:
    """Decodes `PricedJourney` (journeys topic), `TopUp` (top-ups topic) and
    `BenefitPosting` (benefits topic) records and posts each partition batch to the
    ledger."""

    name = "settlement.post_journeys"

    def __init__(self, ledger: LedgerRepository, top_ups_topic: str, benefits_topic: str) -> None:
        self._ledger = ledger
        self._top_ups_topic = top_ups_topic
        self._benefits_topic = benefits_topic
        self.stats = PostingStats()

    def decode(self, record: Record) -> Item:
        """The journey revision, top-up or benefit posting in the record; a coded error
        when it has none."""
        if record.topic == self._top_ups_topic:
            return decode_top_up(record.value)
        if record.topic == self._benefits_topic:
            return decode_benefit(record.value)
        return decode_journey(record.value)

    async def handle(self, batch: PartitionBatch[Item]) -> None:
        """Post the batch in offset order, in one transaction."""
        results = await self._ledger.post_many([item.value for item in batch.items])
        for result in results:
            if result.skipped:
                self.stats.replayed += 1
            else:
                self.stats.posted += 1
            self.stats.entries += result.inserted
        if results:
            log.debug(
                "postings",
                extra={
                    "topic": batch.topic,
                    "partition": batch.partition,
                    "next_offset": batch.next_offset,
                    "posted": len(results),
                },
            )
