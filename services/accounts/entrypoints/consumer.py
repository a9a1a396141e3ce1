"""The journeys handler of accounts: each batch of revisions stored in one transaction, then
the cards' cached history pages invalidated.

The kit's loop (clearway.consumer) commits the Kafka offset only after the store and the
cache invalidation; the store is idempotent, so a redelivery or a replay adds nothing. A
record that cannot be stored is parked on `<journeys>.accounts.dlq` with its reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from clearway.consumer import PartitionBatch, Record
from clearway.events.v1.events_pb2 import PricedJourney
from services.accounts.domain.errors import InvalidJourneyError
from services.accounts.domain.history import JourneyRevision, journey_revision
from services.accounts.service_layer.journey_history import JourneyHistory

log = logging.getLogger(__name__)


def parse_journey(record: Record) -> JourneyRevision:
    """The revision a record carries; InvalidJourneyError (with a reason code) if none."""
    value: bytes = record.value or b""
    try:
        journey = PricedJourney.FromString(value)
    except DecodeError as exc:
        raise InvalidJourneyError("UNDECODABLE", f"not a PricedJourney: {exc}") from None
    return journey_revision(journey, record.key, value)


@dataclass(slots=True)
class StoringStats:
    """Counts since start, for logs and tests."""

    stored: int = 0  # revisions handled (replays included)
    new_revisions: int = 0  # revisions kept for the first time


class JourneyRecorder:
    """Stores each partition batch of journey revisions in the history."""

    name = "accounts.store_journeys"

    def __init__(self, history: JourneyHistory) -> None:
        self._history = history
        self.stats = StoringStats()

    def decode(self, record: Record) -> JourneyRevision:
        """The revision in the record (InvalidJourneyError makes it a dead letter)."""
        return parse_journey(record)

    async def handle(self, batch: PartitionBatch[JourneyRevision]) -> None:
        """Store the batch's revisions and invalidate their cards' cached pages."""
        outcomes = await self._history.record_many([item.value for item in batch.items])
        self.stats.stored += len(outcomes)
        new = sum(o.new_revision for o in outcomes)
        self.stats.new_revisions += new
        if outcomes:
            log.debug(
                "journeys stored",
                extra={"partition": batch.partition, "revisions": len(outcomes), "new": new},
            )
