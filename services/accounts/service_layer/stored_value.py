"""Stored-value use cases: top up a card online, credit retailers' top-ups from the
`topups` topic, read a card's balance and its movements.

A top-up's record, its balance movement and the events it causes (the `TopUp` on
`topups` for settlement, a deny-list REMOVE when it clears a debt) commit in one
transaction; the outbox relay sends the events afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from clearway.common.v1 import money_pb2
from clearway.events.v1 import events_pb2
from services.accounts.adapters.balance_book import (
    BalanceBook,
    BalanceRepository,
    MovementRow,
    StoredTopUp,
    claim_online_top_up,
    claim_sold_top_ups,
    top_up_by_key,
)
from services.accounts.adapters.outbox import OutboxMessage, OutboxRelay, enqueue
from services.accounts.domain.balance import (
    CardBalance,
    IdempotencyKeyReusedError,
    Movement,
    MovementKind,
    StoredValueRules,
    check_idempotency_key,
    check_top_up_amount,
)
from services.accounts.domain.paging import (
    decode_movements_token,
    effective_page_size,
    encode_movements_token,
)


@dataclass(frozen=True, slots=True)
class TopUpSale:
    """A retailer's sale read from the `topups` topic, checked."""

    top_up_id: str
    card_token: str
    retailer_id: str
    amount_minor: int
    currency: str
    sold_at: datetime
    service_day: date | None


@dataclass(frozen=True, slots=True)
class TopUpResult:
    """What a TopUp call answers (the first time and on every retry with its key)."""

    top_up: StoredTopUp
    replayed: bool


@dataclass(frozen=True, slots=True)
class MovementsPage:
    """One page of a card's balance movements, newest first."""

    movements: tuple[MovementRow, ...]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class ServiceDayClock:
    """The scheme's service day: local date in `timezone`, shifted back by `day_start`."""

    timezone: str = "Europe/London"
    day_start: time = time(4, 30)

    def service_day(self, at: datetime) -> date:
        """The service day an instant belongs to."""
        local = at.astimezone(ZoneInfo(self.timezone))
        start = timedelta(hours=self.day_start.hour, minutes=self.day_start.minute)
        return (local - start).date()


def top_up_event(top_up: StoredTopUp, service_day: date) -> events_pb2.TopUp:
    """The `topups` event settlement posts (the retailer owes it, less commission)."""
    event = events_pb2.TopUp(
        top_up_id=top_up.top_up_id,
        card_token=top_up.card_token,
        retailer_id=top_up.retailer_id,
        amount=money_pb2.Money(amount_minor=top_up.amount_minor, currency=top_up.currency),
        service_day=service_day.isoformat(),
    )
    event.sold_at.FromDatetime(top_up.sold_at)
    return event


@dataclass
class StoredValue:
    """The use cases, over PostgreSQL, the balance book and the outbox relay."""

    pool: asyncpg.Pool
    book: BalanceBook
    balances: BalanceRepository
    relay: OutboxRelay | None
    rules: StoredValueRules
    topups_topic: str
    day_clock: ServiceDayClock = field(default_factory=ServiceDayClock)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def _relay_soon(self) -> None:
        if self.relay is not None:
            self.relay.notify()

    async def top_up(
        self,
        traveller_id: str,
        card_token: str,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
    ) -> TopUpResult:
        """Credit the card and queue its TopUp event, once per (traveller, key); the same
        key again answers the original result, or IDEMPOTENCY_KEY_REUSED when the card or
        amount differ. The card's ownership is the caller's to check first."""
        amount = check_top_up_amount(amount_minor, currency, self.rules)
        key = check_idempotency_key(idempotency_key)
        sold_at = self.clock()
        service_day = self.day_clock.service_day(sold_at)
        top_up_id = f"online-{uuid.uuid4().hex}"
        async with self.pool.acquire() as conn, conn.transaction():
            claimed = await claim_online_top_up(
                conn,
                top_up_id=top_up_id,
                card_token=card_token,
                retailer_id=self.rules.online_retailer_id,
                amount_minor=amount.amount_minor,
                currency=amount.currency,
                sold_at=sold_at,
                service_day=service_day,
                traveller_id=traveller_id,
                idempotency_key=key,
            )
            if claimed:
                move = Movement(card_token, MovementKind.TOP_UP, top_up_id, 0, amount.amount_minor)
                posting = await self.book.post(conn, [move], sold_at)
                stored = StoredTopUp(
                    top_up_id,
                    card_token,
                    self.rules.online_retailer_id,
                    amount.amount_minor,
                    amount.currency,
                    sold_at,
                    posting.posted[0].balance_after_minor,
                )
                event = top_up_event(stored, service_day)
                await enqueue(
                    conn,
                    [
                        OutboxMessage(
                            self.topups_topic,
                            card_token.encode(),
                            event.SerializeToString(deterministic=True),
                        )
                    ],
                )
        if claimed:
            self._relay_soon()
            return TopUpResult(stored, replayed=False)
        async with self.pool.acquire() as conn:
            earlier = await top_up_by_key(conn, traveller_id, key)
        if earlier is None:  # pragma: no cover - the claim saw a committed row
            raise RuntimeError("idempotency key claimed but its top-up is missing")
        if (earlier.card_token, earlier.amount_minor, earlier.currency) != (
            card_token,
            amount.amount_minor,
            amount.currency,
        ):
            raise IdempotencyKeyReusedError(
                "this idempotency_key was used for another card or amount; use a new key"
            )
        return TopUpResult(earlier, replayed=True)

    async def credit_sales(self, sales: Sequence[TopUpSale]) -> int:
        """Credit retailers' top-ups not credited before (by top_up_id), in one
        transaction; how many were new."""
        if not sales:
            return 0
        at = self.clock()
        async with self.pool.acquire() as conn, conn.transaction():
            new = await claim_sold_top_ups(
                conn,
                [
                    (
                        s.top_up_id,
                        s.card_token,
                        s.retailer_id,
                        s.amount_minor,
                        s.currency,
                        s.sold_at,
                        s.service_day,
                    )
                    for s in sales
                ],
            )
            moves: list[Movement] = []
            for sale in sales:
                if sale.top_up_id in new:
                    new.discard(sale.top_up_id)  # a repeat within the batch credits once
                    moves.append(
                        Movement(
                            sale.card_token,
                            MovementKind.TOP_UP,
                            sale.top_up_id,
                            0,
                            sale.amount_minor,
                        )
                    )
            await self.book.post(conn, moves, at)
        if moves:
            self._relay_soon()
        return len(moves)

    async def balance(self, card_token: str) -> CardBalance:
        """The card's balance."""
        return await self.balances.balance(card_token)

    async def movements(self, card_token: str, page_size: int, page_token: str) -> MovementsPage:
        """One page of the card's movements, newest first."""
        size = effective_page_size(page_size)
        before = decode_movements_token(page_token, card_token)
        rows = await self.balances.movements(card_token, before, size + 1)
        served = rows[:size]
        more = len(rows) > size and served
        token = encode_movements_token(served[-1].movement_id, card_token) if more else ""
        return MovementsPage(tuple(served), token)
