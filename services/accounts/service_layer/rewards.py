"""Rewards (docs/benefits.md): an officer credits a traveller under one of their council's
officer_grant rules, and a journey starting in an off_peak_travel rule's hours earns its
card the rule's reward. At most once per rule, subject (the account; the card for
off-peak) and period.

A stored-value reward is a balance movement (kind `reward`) posted by the balance book, so
a reward that clears a debt takes the card off the deny list as a top-up does, with a
`BenefitPosting` (the paying party owes the traveller float) in the outbox, in the same
transaction. An entitlement reward is a movement of the entitlement's month ledger, paid
by the council when it is redeemed (no posting).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from clearway.common.v1 import money_pb2
from clearway.events.v1 import events_pb2
from clearway.money import Money
from clearway.scheme.model import RewardCredit, RewardRule
from services.accounts.adapters import benefits_repository as repo
from services.accounts.adapters.balance_book import BalanceBook
from services.accounts.adapters.benefits_repository import (
    SYSTEM_ACTOR,
    AuditEntry,
    NewMovement,
    Officer,
    StoredReward,
)
from services.accounts.adapters.outbox import OutboxMessage, enqueue
from services.accounts.domain.balance import (
    IdempotencyKeyReusedError,
    Movement,
    MovementKind,
    check_idempotency_key,
)
from services.accounts.domain.bank_charges import is_bank_card
from services.accounts.domain.entitlements import (
    AuditAction,
    EntitlementMovementKind,
    UnknownTravellerError,
    check_note,
    month_of,
)
from services.accounts.domain.history import JourneyRevision
from services.accounts.domain.rewards import (
    RewardAlreadyGrantedError,
    RewardRefusedError,
    off_peak_rules,
    officer_rule,
    operator_runs,
    period_of,
)
from services.accounts.domain.travellers import normal_email
from services.accounts.service_layer.benefits import BenefitsContext

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
OFF_PEAK_GRANTOR = "journeys"


@dataclass(frozen=True, slots=True)
class RewardResult:
    """What GrantReward answers (also on a retry with its key)."""

    reward: StoredReward
    replayed: bool


class _RewardConflictError(Exception):
    """The reward's insert met a unique index: the key, or the rule's period."""


def reward_posting(
    reward: StoredReward, service_day: date, at: datetime, topic: str
) -> OutboxMessage:
    """The `BenefitPosting` of a stored-value reward: the paying party owes the float."""
    posting_id = f"reward:{reward.reward_id}"
    posting = events_pb2.BenefitPosting(
        posting_id=posting_id,
        kind=events_pb2.BenefitPosting.KIND_REWARD,
        funder_id=reward.funder_id,
        amount=money_pb2.Money(
            amount_minor=reward.amount.amount_minor, currency=reward.amount.currency
        ),
        service_day=service_day.isoformat(),
        reward_rule_id=reward.rule_id,
    )
    posting.at.FromDatetime(at)
    return OutboxMessage(topic, posting_id.encode(), posting.SerializeToString(deterministic=True))


@dataclass
class Rewards:
    """Officers' rewards."""

    context: BenefitsContext
    book: BalanceBook

    async def grant(
        self, token: str | None, traveller_email: str, rule_id: str, reason: str, key: str
    ) -> RewardResult:
        """Credit the reward of one of the officer's council's officer_grant rules to a
        traveller, once per (rule, account, period); replayed by the officer's key."""
        context = self.context
        officer = await context.officer(token)
        key = check_idempotency_key(key)
        note = check_note(reason, "reason")
        email = normal_email(traveller_email)
        earlier = await self._by_key(officer, key, email, rule_id)
        if earlier is not None:
            return earlier
        at = context.now()
        day = context.service_day(at)
        rule = officer_rule(context.scheme.reward_rule(rule_id, day), officer.funder_id)
        try:
            reward = await self._credit(officer, rule, email, note=note, key=key, at=at)
        except _RewardConflictError:
            earlier = await self._by_key(officer, key, email, rule_id)
            if earlier is not None:
                return earlier
            raise RewardAlreadyGrantedError(
                f"{rule.rule_id} rewarded this traveller in {period_of(rule.period, day)} already"
            ) from None
        context.relay_soon()
        return RewardResult(reward, replayed=False)

    async def _by_key(
        self, officer: Officer, key: str, email: str, rule_id: str
    ) -> RewardResult | None:
        async with self.context.pool.acquire() as conn:
            earlier = await repo.reward_by_key(conn, officer.traveller_id, key)
            if earlier is None:
                return None
            traveller_id = await repo.traveller_by_email(conn, email)
        if (earlier.rule_id, earlier.subject) != (rule_id, traveller_id):
            raise IdempotencyKeyReusedError(
                "this idempotency_key was used for another reward; use a new key"
            )
        return RewardResult(earlier, replayed=True)

    async def _credit(
        self, officer: Officer, rule: RewardRule, email: str, *, note: str, key: str, at: datetime
    ) -> StoredReward:
        context = self.context
        day = context.service_day(at)
        amount = Money(rule.amount_minor, context.currency)
        async with context.pool.acquire() as conn, conn.transaction():
            traveller_id = await repo.traveller_by_email(conn, email)
            if traveller_id is None:
                raise UnknownTravellerError("no traveller account has this email")
            reward = StoredReward(
                officer_reward_id(officer.traveller_id, key),
                rule.rule_id,
                rule.funder_id,
                traveller_id,
                period_of(rule.period, day),
                amount,
                officer.traveller_id,
                key,
            )
            if rule.credit is RewardCredit.STORED_VALUE:
                entitlement_id = ""
                await self._to_stored_value(conn, reward, traveller_id, day, at)
            else:
                entitlement_id = await self._to_entitlement(conn, reward, rule, traveller_id, at)
            detail = f"{rule.rule_id}: {amount} to {email} for {reward.period}; {note or '-'}"
            await repo.add_audit(
                conn,
                AuditEntry(
                    rule.funder_id, AuditAction.REWARDED, entitlement_id, officer.email, detail, at
                ),
            )
        return reward

    async def _to_stored_value(
        self,
        conn: asyncpg.Connection,
        reward: StoredReward,
        traveller_id: str,
        day: date,
        at: datetime,
    ) -> None:
        card = await repo.first_scheme_card(conn, traveller_id)
        if card is None:
            raise RewardRefusedError("the traveller has no scheme card to credit", code="NO_CARD")
        inserted = await repo.insert_reward(
            conn,
            reward,
            traveller_id=traveller_id,
            card_token=card,
            entitlement_id=None,
            service_day=day,
            at=at,
        )
        if not inserted:
            raise _RewardConflictError
        move = Movement(card, MovementKind.REWARD, reward.reward_id, 0, reward.amount.amount_minor)
        await self.book.post(conn, [move], at)
        await enqueue(conn, [reward_posting(reward, day, at, self.context.benefits_topic)])

    async def _to_entitlement(
        self,
        conn: asyncpg.Connection,
        reward: StoredReward,
        rule: RewardRule,
        traveller_id: str,
        at: datetime,
    ) -> str:
        day = self.context.service_day(at)
        await repo.expire_due(conn, day, at, traveller_id=traveller_id)
        held = await repo.entitlements_of(conn, traveller_id, lock=True)
        target = next(
            (
                e
                for e in sorted(held, key=lambda e: e.valid_to)
                if e.scheme_id == rule.entitlement_scheme_id and e.covers(day)
            ),
            None,
        )
        if target is None:
            raise RewardRefusedError(
                f"the traveller holds no active {rule.entitlement_scheme_id} entitlement",
                code="NO_ENTITLEMENT",
            )
        inserted = await repo.insert_reward(
            conn,
            reward,
            traveller_id=traveller_id,
            card_token=None,
            entitlement_id=target.entitlement_id,
            service_day=day,
            at=at,
        )
        if not inserted:
            raise _RewardConflictError
        await repo.add_movement(
            conn,
            NewMovement(
                target.entitlement_id,
                EntitlementMovementKind.REWARD,
                reward.reward_id,
                month_of(day),
                reward.amount,
                at,
            ),
        )
        return target.entitlement_id


def officer_reward_id(granted_by: str, idempotency_key: str) -> str:
    """An officer's reward's id, named by what makes it unique (the officer and their
    idempotency key), as a redemption's is: the same grant always names the same reward,
    so its posting (`reward:<id>`) and the settlement files carrying it are the same
    whenever and however often the grant is made."""
    digest = hashlib.sha256(f"officer\x00{granted_by}\x00{idempotency_key}".encode())
    return f"rwd_{digest.hexdigest()[:32]}"


def off_peak_reward_id(rule_id: str, card_token: str, period: str) -> str:
    """A deterministic id (a replay of the journeys into empty stores posts the same)."""
    digest = hashlib.sha256(f"{rule_id}\x00{card_token}\x00{period}".encode()).hexdigest()
    return f"rwd_{digest[:32]}"


@dataclass
class OffPeakRewards:
    """Called by the journey store, inside its transaction, with each journey's first
    stored revision: the off-peak rewards its card earns, as balance movements for the
    same posting (their postings and audit lines queued in that transaction)."""

    context: BenefitsContext

    async def movements(
        self, conn: asyncpg.Connection, firsts: Sequence[JourneyRevision]
    ) -> list[Movement]:
        """Claim the rewards `firsts` earn (once per rule, card and period)."""
        earned = self._earned(firsts)
        if not earned:
            return []
        claimed = await repo.claim_rewards(conn, earned)
        moves: list[Movement] = []
        postings: list[OutboxMessage] = []
        for reward, card, day, at in earned:
            if reward.reward_id not in claimed:
                continue
            claimed.discard(reward.reward_id)  # twice in one batch: credited once
            moves.append(
                Movement(card, MovementKind.REWARD, reward.reward_id, 0, reward.amount.amount_minor)
            )
            postings.append(reward_posting(reward, day, at, self.context.benefits_topic))
            await repo.add_audit(
                conn,
                AuditEntry(
                    reward.funder_id,
                    AuditAction.REWARDED,
                    "",
                    SYSTEM_ACTOR,
                    f"{reward.rule_id}: {reward.amount} for an off-peak journey in {reward.period}",
                    at,
                ),
            )
        await enqueue(conn, postings)
        return moves

    def _earned(
        self, firsts: Sequence[JourneyRevision]
    ) -> list[tuple[StoredReward, str, date, datetime]]:
        scheme = self.context.scheme
        if not any(r.hours for r in scheme.reward_rules):
            return []  # the scheme has no off-peak rule
        zone = ZoneInfo(scheme.calendar.timezone)
        earned = []
        for rev in firsts:
            if not rev.started_from_legs or is_bank_card(rev.card_token):
                continue
            started = _EPOCH + timedelta(microseconds=rev.started_at_us)
            day = rev.service_day or self.context.service_day(started)
            rules = off_peak_rules(scheme.reward_rules_on(day), started.astimezone(zone))
            if not rules:
                continue  # most journeys: no need to read the legs
            operators = _operators(rev)
            for rule in rules:
                if not operator_runs(rule, operators, _agencies(self.context, rule, day)):
                    continue
                period = period_of(rule.period, day)
                reward = StoredReward(
                    off_peak_reward_id(rule.rule_id, rev.card_token, period),
                    rule.rule_id,
                    rule.funder_id,
                    rev.card_token,
                    period,
                    Money(rule.amount_minor, self.context.currency),
                    OFF_PEAK_GRANTOR,
                    f"{rule.rule_id}:{rev.journey_id}"[:256],
                )
                earned.append((reward, rev.card_token, day, started))
        return earned


def _operators(rev: JourneyRevision) -> list[str]:
    journey = events_pb2.PricedJourney.FromString(rev.body)
    return [leg.operator_id for leg in journey.legs]


def _agencies(context: BenefitsContext, rule: RewardRule, day: date) -> frozenset[str]:
    party = context.scheme.party(rule.funder_id, day)
    return party.agency_ids if party is not None else frozenset()
