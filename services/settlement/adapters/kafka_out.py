"""What settlement publishes: dead-lettered journeys and issued statements."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer, ConsumerRecord

from clearway.common.v1 import money_pb2
from clearway.events.v1 import events_pb2
from clearway.kafka import send_dead_letter
from clearway.telemetry import kafka_headers_with_trace
from services.settlement.adapters.ledger_repository import StoredStatement


class DeadLetters:
    """Journeys that cannot be posted, kept with their reason on `<prefix>journeys.dlq`."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    async def send(
        self, record: ConsumerRecord[bytes, bytes], reason_code: str, detail: str
    ) -> None:
        """Publish the original record with reason headers; returns once Kafka has it."""
        await send_dead_letter(self._producer, self.topic, record, reason_code, detail)


class StatementEvents:
    """Announces issued statements on the statements topic (key: party id)."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    async def publish(self, stored: StoredStatement) -> None:
        """Publish one `StatementIssued`; republishing the same statement is harmless."""
        st = stored.statement
        event = events_pb2.StatementIssued(
            period_id=st.period_id,
            party_id=st.party_id,
            statement_id=st.statement_id,
            net=money_pb2.Money(amount_minor=st.net.amount_minor, currency=st.net.currency),
            path=stored.path,
            sha256=stored.sha256,
        )
        await self._producer.send_and_wait(
            self.topic,
            event.SerializeToString(),
            key=st.party_id.encode(),
            headers=kafka_headers_with_trace(),
        )
