"""How far the settlement consumer group is behind the end of the topics it consumes."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError

from clearway.kafka import client_options

log = logging.getLogger(__name__)


class GroupLag:
    """Compares the group's committed offsets with the topic's (read-committed) end."""

    def __init__(self, bootstrap: str, group_id: str, *topics: str) -> None:
        self._group_id = group_id
        self._topics = topics
        self._admin = AIOKafkaAdminClient(**client_options(bootstrap))
        self._probe = AIOKafkaConsumer(
            **client_options(bootstrap),
            enable_auto_commit=False,
            isolation_level="read_committed",
        )

    async def start(self) -> None:
        """Connect the admin client and the offset probe."""
        await self._admin.start()
        await self._probe.start()

    async def stop(self) -> None:
        """Disconnect."""
        await self._probe.stop()
        await self._admin.close()

    async def end_offsets(self) -> dict[TopicPartition, int]:
        """The offset after the last committed record of every partition, right now."""
        described = await self._admin.describe_topics(list(self._topics))
        tps = sorted(
            TopicPartition(t["topic"], p["partition"])
            for t in described
            if t["topic"] in self._topics and t["error_code"] == 0
            for p in t["partitions"]
        )
        if {tp.topic for tp in tps} != set(self._topics):
            raise UnknownTopicOrPartitionError(",".join(self._topics))
        offsets: dict[TopicPartition, int] = await self._probe.end_offsets(tps)
        return offsets

    async def lag_behind(self, targets: dict[TopicPartition, int]) -> int:
        """Records between the group's committed offsets and `targets` (0 = caught up)."""
        if not targets:
            return 0
        committed = await self._admin.list_consumer_group_offsets(
            self._group_id, partitions=list(targets)
        )
        lag = 0
        for tp, end in targets.items():
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            lag += max(0, end - done)
        return lag

    async def wait_caught_up(self, timeout_s: float, poll_s: float = 0.2) -> int:
        """Wait until the group has committed everything on the topic when called.

        Returns the remaining lag: 0 when caught up within `timeout_s`, -1 when Kafka
        could not say (the caller must then treat it as not caught up).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        targets: dict[TopicPartition, int] | None = None
        lag = -1
        while True:
            try:
                if targets is None:
                    targets = await self.end_offsets()
                lag = await self.lag_behind(targets)
            except KafkaError:
                log.warning("could not read journeys offsets; retrying", exc_info=True)
            if lag == 0 or loop.time() >= deadline:
                return lag
            await asyncio.sleep(poll_s)
