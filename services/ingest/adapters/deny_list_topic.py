"""The deny list on Kafka: its changes are `DenyListChange` events on the `denylist` topic
(key = card token, one partition, compacted), so the list's version is the offset of its
latest change + 1 and reading the topic from the beginning rebuilds the whole list.

`DenyListPublisher` writes changes (acks=all); `DenyListFollower` (a `TopicFollower`, as the
concessions' follower is) keeps this process's copy of the list up to date and wakes whoever
waits for a change. Card tokens are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer, ConsumerRecord
from google.protobuf.message import DecodeError

from clearway.events.v1 import events_pb2
from clearway.telemetry import kafka_headers_with_trace
from services.ingest.adapters.compacted_topic import POLL_TIMEOUT_MS, TopicFollower
from services.ingest.domain.deny_list import MAX_KEPT_CHANGES, DenyList

log = logging.getLogger(__name__)

ADD = events_pb2.DenyListChange.ACTION_ADD
REMOVE = events_pb2.DenyListChange.ACTION_REMOVE


class DenyListPublisher:
    """Publishes deny-list changes and answers with the version that holds each one."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def publish(
        self, card_token: str, add: bool, reason: int, changed_by: str, at: datetime
    ) -> int:
        """Write one change and return the list's version once it is applied (its offset +
        1), once every in-sync replica holds it (with the producer's acks=all)."""
        change = events_pb2.DenyListChange(
            card_token=card_token,
            action=ADD if add else REMOVE,
            reason=reason if add else 0,
            changed_by=changed_by,
        )
        change.changed_at.FromDatetime(at)
        metadata = await self._producer.send_and_wait(
            self._topic,
            key=card_token.encode(),
            value=change.SerializeToString(deterministic=True),
            partition=0,  # the one partition: its offsets number the versions
            headers=kafka_headers_with_trace(),
        )
        return int(metadata.offset) + 1


def _decoded(record: ConsumerRecord[bytes, bytes]) -> events_pb2.DenyListChange | None:
    """The change a record carries; None (logged, never with the token) when it carries
    none that can be applied."""
    change = events_pb2.DenyListChange()
    try:
        change.ParseFromString(record.value or b"")
    except DecodeError:
        problem = "the value is not a DenyListChange"
    else:
        if change.action not in (ADD, REMOVE):
            problem = "the action is neither ADD nor REMOVE"
        elif not change.card_token:
            problem = "the card token is empty"
        elif record.key != change.card_token.encode():
            # Compaction goes by key: a key that is not the card token would lose changes.
            problem = "the key is not the card token"
        else:
            return change
    log.warning(
        "deny-list change skipped",
        extra={"offset": record.offset, "problem": problem, "topic": record.topic},
    )
    return None


def _changed_at(
    change: events_pb2.DenyListChange, record: ConsumerRecord[bytes, bytes]
) -> datetime:
    """When the change was made; the record's timestamp when the change does not say."""
    if change.HasField("changed_at"):
        try:
            return change.changed_at.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):
            pass  # out of datetime's range: the record's own time will do
    return datetime.fromtimestamp(record.timestamp / 1000, tz=UTC)


class _DenyListRecords:
    """The deny list fed from its topic's records (a follower's FollowedRecords)."""

    def __init__(self, deny_list: DenyList) -> None:
        self._list = deny_list

    @property
    def version(self) -> int:
        return self._list.version

    def __len__(self) -> int:
        return len(self._list)

    def apply(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:
            version = record.offset + 1
            change = _decoded(record)
            if change is None:
                self._list.advance(version)  # the version still counts the record
                continue
            self._list.apply(
                version,
                change.card_token,
                change.action == ADD,
                change.reason,
                _changed_at(change, record),
            )


class DenyListFollower(TopicFollower):
    """This process's copy of the deny list, following the topic (implements the tap path's
    DenyListView: `blocked`, `version`).

    `start` rebuilds the list up to the end of the topic seen at start, `run` (a background
    task) follows it until `stop`; `wait_beyond` wakes on every applied change.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        max_changes: int = MAX_KEPT_CHANGES,
        poll_timeout_ms: int = POLL_TIMEOUT_MS,
    ) -> None:
        self._list = DenyList(max_changes)
        super().__init__(
            bootstrap,
            topic,
            _DenyListRecords(self._list),
            what="deny list",
            poll_timeout_ms=poll_timeout_ms,
        )

    @property
    def deny_list(self) -> DenyList:
        """The list as applied so far (read it; only the follower applies changes)."""
        return self._list

    def blocked(self, card_token: str) -> bool:
        """True when the card is on the list."""
        return self._list.blocked(card_token)
