"""The journeys handler: each batch of priced journey revisions posted to the ledger in one
transaction, exactly once in effect.

The kit's loop (clearway.consumer) commits the Kafka offset only after the ledger
transaction committed; the ledger skips revisions it already processed, so a
redelivery or a replay adds nothing. A record that is not a postable revision is
parked on `<journeys>.settlement.dlq` by the loop with its reason code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from clearway.consumer import PartitionBatch, Record
from services.settlement.adapters.journey_events import decode_journey
from services.settlement.adapters.ledger_repository import LedgerRepository
from services.settlement.domain.ledger import JourneyRevision

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PostingStats:
    """Counts since start, for logs and tests."""

    posted: int = 0  # revisions processed (including ones that changed nothing)
    replayed: int = 0  # revisions skipped: not newer than the latest processed
    entries: int = 0  # ledger entries inserted


class JourneyPoster:
    """Decodes `PricedJourney` records and posts each partition batch to the ledger."""

    name = "settlement.post_journeys"

    def __init__(self, ledger: LedgerRepository) -> None:
        self._ledger = ledger
        self.stats = PostingStats()

    def decode(self, record: Record) -> JourneyRevision:
        """The revision in the record; InvalidJourneyError (a code) when it has none."""
        return decode_journey(record.value)

    async def handle(self, batch: PartitionBatch[JourneyRevision]) -> None:
        """Post the batch's revisions in offset order, in one transaction."""
        results = await self._ledger.post_many([item.value for item in batch.items])
        for result in results:
            if result.skipped:
                self.stats.replayed += 1
            else:
                self.stats.posted += 1
            self.stats.entries += result.inserted
        if results:
            log.debug(
                "journeys posted",
                extra={
                    "partition": batch.partition,
                    "next_offset": batch.next_offset,
                    "revisions": len(results),
                    "entries": sum(r.inserted for r in results),
                },
            )
