"""Cards' concessions on Kafka: `CardConcession` records on the `concessions` topic (key =
card token, one partition, compacted), published by accounts through its outbox; a record
without a value (a tombstone) ends the card's concession.

`ConcessionFollower` (a `TopicFollower`, as the deny list's is) keeps this process's copy
of every card's concession, rebuilt from the topic before ingest reports SERVING and
followed after, so a pass reaches the taps ingest accepts within a poll of its record.
Card tokens are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date

from aiokafka import ConsumerRecord
from google.protobuf.message import DecodeError

from clearway.events.v1 import events_pb2
from services.ingest.adapters.compacted_topic import POLL_TIMEOUT_MS, TopicFollower
from services.ingest.domain.concessions import Concession, Concessions

log = logging.getLogger(__name__)


def _day(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        return None


def concession_of(record: ConsumerRecord[bytes, bytes]) -> tuple[str, Concession | None] | None:
    """(the card, its concession, or None when the record ends it); None when the record
    names no card (no key). A value that is not a usable `CardConcession` ends the card's
    concession too, as compaction would once it is the card's latest record (logged,
    never with the token)."""
    if not record.key:
        problem = "the record has no key"
    else:
        try:
            card_token = record.key.decode()
        except UnicodeDecodeError:
            problem = "the key is not a card token"
        else:
            if not record.value:  # a tombstone: the card has no concession any more
                return card_token, None
            found = _decoded(record, card_token)
            if isinstance(found, Concession):
                return card_token, found
            log.warning(
                "concession record unusable; the card gets none",
                extra={"offset": record.offset, "problem": found, "topic": record.topic},
            )
            return card_token, None
    log.warning(
        "concession record skipped",
        extra={"offset": record.offset, "problem": problem, "topic": record.topic},
    )
    return None


def _decoded(record: ConsumerRecord[bytes, bytes], card_token: str) -> Concession | str:
    """The concession a record's value carries, or what is wrong with it."""
    message = events_pb2.CardConcession()
    try:
        message.ParseFromString(record.value or b"")
    except DecodeError:
        return "the value is not a CardConcession"
    if message.card_token != card_token:
        # Compaction goes by key: a key that is not the card token would lose changes.
        return "the key is not the card token"
    if not message.rider_category_id:
        return "the rider category is empty"
    valid_from, valid_to = _day(message.valid_from), _day(message.valid_to)
    if valid_from is None or valid_to is None or valid_to <= valid_from:
        return "valid_from and valid_to are not YYYY-MM-DD days with from < to"
    return Concession(message.rider_category_id, valid_from, valid_to)


class _ConcessionRecords:
    """Cards' concessions fed from the topic's records (a follower's FollowedRecords)."""

    def __init__(self, concessions: Concessions) -> None:
        self._concessions = concessions

    @property
    def version(self) -> int:
        return self._concessions.version

    def __len__(self) -> int:
        return len(self._concessions)

    def apply(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:
            version = record.offset + 1
            found = concession_of(record)
            if found is None:
                self._concessions.advance(version)
            else:
                self._concessions.apply(version, *found)


class ConcessionFollower(TopicFollower):
    """This process's copy of every card's concession, following the topic (the tap path's
    ConcessionView: `concession`)."""

    def __init__(
        self, bootstrap: str, topic: str, *, poll_timeout_ms: int = POLL_TIMEOUT_MS
    ) -> None:
        self._concessions = Concessions()
        super().__init__(
            bootstrap,
            topic,
            _ConcessionRecords(self._concessions),
            what="concessions",
            poll_timeout_ms=poll_timeout_ms,
        )

    @property
    def concessions(self) -> Concessions:
        """The concessions as applied so far (read them; only the follower applies)."""
        return self._concessions

    def concession(self, card_token: str) -> Concession | None:
        """The card's concession, whatever its days."""
        return self._concessions.concession(card_token)
