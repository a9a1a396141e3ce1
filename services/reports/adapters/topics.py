"""Reading a whole topic once: from the beginning up to the end offsets seen at the start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

from clearway.kafka import client_options

ASSIGN_TIMEOUT_S = 30.0


class TopicNotFoundError(Exception):
    """A topic the reports read does not exist (nothing was published under this prefix)."""


async def read_topic(bootstrap: str, topic: str, on_value: Callable[[bytes], None]) -> None:
    """Give `on_value` the value of every record of `topic`, read from the beginning
    (read_committed) up to the end offsets seen at the start.

    No consumer group and no committed offsets; a missing topic is reported rather than
    auto-created."""
    consumer = AIOKafkaConsumer(
        **client_options(bootstrap),
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            raise TopicNotFoundError(topic)
        consumer.subscribe([topic])  # it exists: subscribing cannot auto-create it
        deadline = time.monotonic() + ASSIGN_TIMEOUT_S
        while not (partitions := sorted(consumer.assignment())):
            if time.monotonic() > deadline:
                raise TopicNotFoundError(f"{topic} (no partitions assigned)")
            await asyncio.sleep(0.05)
        ends = await consumer.end_offsets(partitions)
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.value is not None:
                        on_value(record.value)
    finally:
        await consumer.stop()
