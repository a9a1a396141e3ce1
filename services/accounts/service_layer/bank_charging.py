"""Bank-card charging: bill each due service day of a bank card as one charge, attempt it
at the payment gateway exactly once per attempt, recover debts on the schedule, and keep
the card on the deny list while it owes.

The charging loop (`BankCharging.run`, a background task; safe with several instances):
1. bills due days: rows locked `FOR UPDATE SKIP LOCKED`, one charge per day whose total
   differs from what it was billed (the day's charge, then adjustments or refunds);
2. attempts due charges, each in three steps: record the attempt (outcome `unknown`, its
   idempotency key `<charge id>:<attempt>`) and lease the charge, commit; call the
   gateway; record the outcome, the new recovery state and any deny-list change (through
   the outbox) in one transaction. A crash between leaves `unknown`; when the lease ends
   the next attempt reuses that key, so the acquirer never takes the money twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import asyncpg

from clearway.consumer import RetryPolicy, back_off_after
from clearway.errors import ClearwayError, ErrorKind
from clearway.money import Money
from services.accounts.adapters.bank_charge_store import (
    Attempt,
    BankChargeRepository,
    StoredBankCharge,
    bill_due_days,
    due_charge_ids,
    lock_charge,
    record_attempt,
    record_outcome,
    unknown_attempt,
    update_deny_list,
)
from services.accounts.adapters.outbox import OutboxRelay
from services.accounts.domain.bank_charges import (
    IN_DEBT,
    RecoverySchedule,
    after_outcome,
    attempt_key,
)
from services.accounts.domain.paging import card_tag

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChargeResult:
    """What the gateway answered: approved or declined (with the acquirer's reason), and
    the acquirer's reference of an approved payment."""

    approved: bool
    reason: str = ""
    reference: str = ""


class PaymentGateway(Protocol):
    """The payment-gateway port: charge (a negative amount refunds) a bank card once per
    idempotency key; the same key again answers the first outcome."""

    async def charge(self, card_token: str, amount: Money, idempotency_key: str) -> ChargeResult:
        """Charge the card; raise only when the outcome is unknown (a timeout, no answer)."""
        ...


class NotInDebtError(ClearwayError):
    """A pay-now for a charge that is not owed (paid, pending, or not the card's)."""

    kind = ErrorKind.FAILED_PRECONDITION
    code = "NOT_IN_DEBT"


class ChargeInProgressError(ClearwayError):
    """A pay-now while an attempt at the same charge is in flight."""

    kind = ErrorKind.FAILED_PRECONDITION
    code = "CHARGE_IN_PROGRESS"


@dataclass(frozen=True, slots=True)
class BankChargeSettings:
    """How the charging loop runs."""

    schedule: RecoverySchedule = field(default_factory=RecoverySchedule)
    poll_s: float = 5.0
    lease: timedelta = timedelta(seconds=60)  # an attempt in flight holds its charge
    batch: int = 100


@dataclass
class BankCharging:
    """The use cases of bank-card mode, over PostgreSQL, the gateway and the outbox."""

    pool: asyncpg.Pool
    gateway: PaymentGateway
    charges: BankChargeRepository
    relay: OutboxRelay | None
    denylist_topic: str
    settings: BankChargeSettings = field(default_factory=BankChargeSettings)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    billed: int = 0
    attempts: int = 0

    async def run(self) -> None:
        """Bill and attempt until cancelled; infrastructure failures are retried."""
        delays = self.retry.delays()
        while True:
            try:
                await self.run_once()
                delays = self.retry.delays()
            except Exception as exc:
                await back_off_after("bank charging failed", exc, delays, log)
                continue
            await asyncio.sleep(self.settings.poll_s)

    async def run_once(self) -> int:
        """Bill the due days, then attempt the due charges; how many attempts were made."""
        now = self.clock()
        async with self.pool.acquire() as conn, conn.transaction():
            self.billed += await bill_due_days(conn, now, self.settings.batch)
        async with self.pool.acquire() as conn:
            due = await due_charge_ids(conn, now, self.settings.batch)
        made = 0
        for charge_id in due:
            if await self._attempt(charge_id, automatic=True) is not None:
                made += 1
        return made

    async def _attempt(self, charge_id: str, *, automatic: bool) -> StoredBankCharge | None:
        """One attempt at the charge (None when another instance holds or took it)."""
        now = self.clock()
        async with self.pool.acquire() as conn, conn.transaction():
            charge = await lock_charge(conn, charge_id, skip_locked=automatic)
            if charge is None:
                return None
            leased = charge.next_attempt_at is not None and charge.next_attempt_at > now
            pending = await unknown_attempt(conn, charge_id)
            if automatic and leased:
                return None  # another instance took it meanwhile
            if not automatic:
                if pending is not None and leased:
                    raise ChargeInProgressError("a payment of this charge is in progress")
                if charge.status not in IN_DEBT:
                    raise NotInDebtError("this charge is not owed")
            attempt = pending or Attempt(
                charge_id,
                charge.attempts + 1,
                attempt_key(charge_id, charge.attempts + 1),
                automatic,
            )
            await record_attempt(conn, attempt, now, now + self.settings.lease)
        amount = Money(charge.amount_minor, charge.currency)
        result = await self.gateway.charge(charge.card_token, amount, attempt.idempotency_key)
        self.attempts += 1
        return await self._record(charge, attempt, result)

    async def _record(
        self, charge: StoredBankCharge, attempt: Attempt, result: ChargeResult
    ) -> StoredBankCharge:
        at = self.clock()
        async with self.pool.acquire() as conn, conn.transaction():
            # Locked again; an attempt whose lease ran out may have been completed by
            # another instance meanwhile (same key, same answer): it is recorded once.
            await lock_charge(conn, charge.charge_id, skip_locked=False)
            latest = await unknown_attempt(conn, charge.charge_id)
            if latest is None or latest.attempt != attempt.attempt:
                done = await lock_charge(conn, charge.charge_id, skip_locked=False)
                if done is None:  # pragma: no cover - charges are never deleted
                    raise RuntimeError("bank charge vanished")
                return done
            # From the state before the attempt's lease (the lease only held the charge):
            # a declined pay-now keeps the schedule it had.
            state = after_outcome(
                charge.state,
                result.approved,
                at,
                self.settings.schedule,
                automatic=attempt.automatic,
            )
            await record_outcome(
                conn,
                attempt,
                approved=result.approved,
                reason=result.reason,
                reference=result.reference,
                state=state,
                at=at,
            )
            change = await update_deny_list(conn, charge.card_token, at, self.denylist_topic)
            stored = await lock_charge(conn, charge.charge_id, skip_locked=False)
        if stored is None:  # pragma: no cover - charges are never deleted
            raise RuntimeError("bank charge vanished")
        if change is not None and self.relay is not None:
            self.relay.notify()
        log.info(
            "bank charge attempted",
            extra={
                "charge_id": charge.charge_id,
                "card": card_tag(charge.card_token),
                "attempt": attempt.attempt,
                "approved": result.approved,
                "status": state.status.value,
            },
        )
        return stored

    async def pay_now(self, card_token: str, charge_id: str) -> StoredBankCharge:
        """The traveller pays a charge in debt now (not one of the scheme's 6 retries)."""
        owned = {c.charge_id for c in await self.charges.charges_of(card_token, 1000)}
        if charge_id not in owned:
            raise NotInDebtError("no such charge is owed on this card")
        done = await self._attempt(charge_id, automatic=False)
        if done is None:  # pragma: no cover - a pay-now waits for the lock
            raise ChargeInProgressError("a payment of this charge is in progress")
        return done

    async def list_charges(self, card_token: str) -> list[StoredBankCharge]:
        """The card's charges, newest service day first (at most 100)."""
        return await self.charges.charges_of(card_token, 100)

    async def drain(self, rounds: int = 20) -> None:
        """Run until nothing is due (tests)."""
        for _ in range(rounds):
            if not await self.run_once():
                return
