"""The consumer of accounts: `journeys` and `topups` in one batch handler.

A `journeys` batch is stored in one transaction, with the balance debits of its new
revisions (and any deny-list change they cause, in the outbox), then the cards' cached
history pages are invalidated. A `topups` batch credits the retailers' sales not seen
before (by top_up_id) in one transaction. The kit's loop (clearway.consumer) commits the
Kafka offset only after that; both stores are idempotent, so a redelivery or a replay
changes nothing. A record that cannot be used is parked on `<topic>.accounts.dlq` with its
reason. After a commit that queued events, the outbox relay is woken.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime

from google.protobuf.message import DecodeError

from clearway.consumer import PartitionBatch, PoisonRecordError, Record
from clearway.events.v1.events_pb2 import PricedJourney, TopUp
from services.accounts.domain.balance import (
    StoredValueRules,
    check_sold_amount,
    is_top_up_id,
)
from services.accounts.domain.errors import InvalidJourneyError
from services.accounts.domain.history import JourneyRevision, journey_revision
from services.accounts.service_layer.claims import Claims
from services.accounts.service_layer.journey_history import JourneyHistory
from services.accounts.service_layer.stored_value import StoredValue, TopUpSale

log = logging.getLogger(__name__)


def parse_journey(record: Record, rules: StoredValueRules | None = None) -> JourneyRevision:
    """The revision a record carries; InvalidJourneyError (with a reason code) if none."""
    value: bytes = record.value or b""
    try:
        journey = PricedJourney.FromString(value)
    except DecodeError as exc:
        raise InvalidJourneyError("UNDECODABLE", f"not a PricedJourney: {exc}") from None
    rev = journey_revision(journey, record.key, value)
    if (
        rules is not None
        and rev.charge_currency
        and rev.charge_currency != rules.currency
        and rev.charge_minor != 0
    ):
        raise InvalidJourneyError(
            "CURRENCY_MISMATCH", f"charge is not in the scheme's currency {rules.currency}"
        )
    return rev


def parse_top_up(record: Record, rules: StoredValueRules) -> TopUpSale:
    """The retailer's sale a `topups` record carries; PoisonRecordError with a code if none."""
    event = TopUp()
    try:
        event.ParseFromString(record.value or b"")
    except DecodeError as exc:
        raise PoisonRecordError("UNDECODABLE", f"not a TopUp: {exc}") from None
    if not is_top_up_id(event.top_up_id):
        raise PoisonRecordError("BAD_TOP_UP_ID", "top_up_id is empty or malformed")
    if not event.card_token:
        raise PoisonRecordError("MISSING_CARD_TOKEN", "card_token is empty")
    if record.key is not None and record.key != event.card_token.encode():
        raise PoisonRecordError("CARD_TOKEN_MISMATCH", "message key is not the card token")
    if not event.retailer_id:
        raise PoisonRecordError("MISSING_RETAILER", "retailer_id is empty")
    if not event.HasField("amount") or not event.amount.currency:
        raise PoisonRecordError("MISSING_AMOUNT", "amount (with its currency) is missing")
    amount = check_sold_amount(event.amount.amount_minor, event.amount.currency, rules)
    if event.HasField("sold_at"):
        sold_at = event.sold_at.ToDatetime(tzinfo=UTC)
    else:
        sold_at = datetime.fromtimestamp(record.timestamp / 1000, tz=UTC)
    try:
        service_day = date.fromisoformat(event.service_day) if event.service_day else None
    except ValueError:
        raise PoisonRecordError("BAD_SERVICE_DAY", "service_day is not YYYY-MM-DD") from None
    return TopUpSale(
        event.top_up_id,
        event.card_token,
        event.retailer_id,
        amount.amount_minor,
        amount.currency,
        sold_at,
        service_day,
    )


@dataclass(slots=True)
class StoringStats:
    """Counts since start, for logs and tests."""

    stored: int = 0  # revisions handled (replays included)
    new_revisions: int = 0  # revisions kept for the first time
    top_ups: int = 0  # top-up records handled (replays included)
    new_top_ups: int = 0  # top-ups credited


class JourneyRecorder:
    """Stores each partition batch of journey revisions in the history (debiting the
    balances), and credits each partition batch of top-ups."""

    name = "accounts.store_journeys"

    def __init__(
        self,
        history: JourneyHistory,
        stored_value: StoredValue | None = None,
        topups_topic: str | None = None,
        claims: Claims | None = None,
    ) -> None:
        self._history = history
        # Disputes: a stored revision that priced a claim's correction tap settles it.
        self._claims = claims
        self._stored_value = stored_value
        self._topups_topic = topups_topic
        self.stats = StoringStats()

    def decode(self, record: Record) -> JourneyRevision | TopUpSale:
        """The revision or the sale in the record (an error makes it a dead letter)."""
        value = self._stored_value
        if value is not None and record.topic == self._topups_topic:
            return parse_top_up(record, value.rules)
        return parse_journey(record, value.rules if value is not None else None)

    async def handle(self, batch: PartitionBatch[JourneyRevision | TopUpSale]) -> None:
        """Store the batch (one transaction), then what follows its commit."""
        sales = [i.value for i in batch.items if isinstance(i.value, TopUpSale)]
        revs = [i.value for i in batch.items if isinstance(i.value, JourneyRevision)]
        if sales and self._stored_value is not None:
            new = await self._stored_value.credit_sales(sales)
            self.stats.top_ups += len(sales)
            self.stats.new_top_ups += new
        if not revs:
            return
        outcomes = await self._history.record_many(revs)
        if self._claims is not None:
            await self._claims.resolve(revs)  # idempotent: a redelivery changes nothing
        if self._stored_value is not None and self._stored_value.relay is not None:
            self._stored_value.relay.notify()  # a debit may have queued a deny-list change
        self.stats.stored += len(outcomes)
        new_revisions = sum(o.new_revision for o in outcomes)
        self.stats.new_revisions += new_revisions
        log.debug(
            "journeys stored",
            extra={"partition": batch.partition, "revisions": len(outcomes), "new": new_revisions},
        )
