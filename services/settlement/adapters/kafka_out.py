"""What settlement publishes besides dead letters (the consumer kit's): issued statements."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from clearway.common.v1 import money_pb2
from clearway.events.v1 import events_pb2
from clearway.telemetry import kafka_headers_with_trace
from services.settlement.adapters.ledger_repository import StoredStatement


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
