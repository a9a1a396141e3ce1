"""What settlement publishes besides dead letters (the consumer kit's): issued statements."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from clearway.common.v1 import money_pb2
from clearway.events.v1 import events_pb2
from clearway.telemetry import kafka_headers_with_trace
from services.settlement.adapters.ledger_repository import StoredFileSet


class StatementEvents:
    """Announces issued statements on the statements topic (key: party id)."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    async def publish(self, stored: StoredFileSet) -> None:
        """Publish one `StatementIssued` (sha256 of the manifest, path of the file set);
        republishing the same file set is harmless."""
        event = events_pb2.StatementIssued(
            period_id=stored.period_id,
            party_id=stored.party_id,
            statement_id=f"{stored.period_id}/{stored.party_id}",
            net=money_pb2.Money(amount_minor=stored.net.amount_minor, currency=stored.net.currency),
            path=stored.directory,
            sha256=stored.manifest_sha256,
        )
        await self._producer.send_and_wait(
            self.topic,
            event.SerializeToString(),
            key=stored.party_id.encode(),
            headers=kafka_headers_with_trace(),
        )
