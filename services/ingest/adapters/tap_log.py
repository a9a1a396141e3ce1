"""Writes accepted taps and dead letters to Kafka and waits until Kafka durably has them."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from clearway.events.v1 import events_pb2
from clearway.kafka import Topics, dead_letter_headers
from clearway.telemetry import kafka_headers_with_trace


class TapLog:
    """The `taps` topic (key = card token) and its dead-letter topic (key = device id)."""

    def __init__(self, producer: AIOKafkaProducer, topics: Topics) -> None:
        self.producer = producer
        self.topics = topics

    async def append_accepted(self, taps: list[events_pb2.Tap]) -> list[BaseException | None]:
        """Send every tap, then wait for each acknowledgement (acks=all); None = durable."""
        futures = [
            await self.producer.send(
                self.topics.taps,
                value=tap.SerializeToString(deterministic=True),
                key=tap.card_token.encode(),
                headers=kafka_headers_with_trace(),
            )
            for tap in taps
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        return [r if isinstance(r, BaseException) else None for r in results]

    async def append_rejected(self, rejected: list[events_pb2.RejectedTap]) -> None:
        """Park rejected taps with their reason on the dead-letter topic; raises if not durable."""
        futures = [
            await self.producer.send(
                self.topics.taps_dlq,
                value=item.SerializeToString(deterministic=True),
                key=item.tap.device_id.encode() or b"unknown-device",
                headers=dead_letter_headers(item.reason_code, item.detail),
            )
            for item in rejected
        ]
        await asyncio.gather(*futures)
