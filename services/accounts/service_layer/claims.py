"""Dispute use cases: claim a missing exit, list a card's claims, and record each claim's
outcome when fares' re-priced revision of the journey comes back on `journeys`.

```
traveller ──ClaimMissingExit──▶ checks ──QuoteFare──▶ fares (is the stop in the fare data?)
   └─▶ one transaction: claims row + correction tap (EXIT) in the outbox ──relay──▶ taps
fares prices the late exit ──▶ journeys: revision n+1 (lower charge) ──▶ accounts consumer
   └─▶ history + balance credit (as for any revision) ──▶ claim refunded / rejected
```
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import asyncpg

from clearway.events.v1 import events_pb2
from clearway.events.v1.events_pb2 import PricedJourney
from clearway.settings import SettingsError
from services.accounts.adapters.claim_repository import (
    StoredClaim,
    claim_of_journey,
    claims_of_card,
    insert_claim,
    journeys_between,
    latest_journey,
    next_tap_sequence,
    pending_claims,
    resolve_claim,
)
from services.accounts.adapters.outbox import OutboxMessage, OutboxRelay, enqueue
from services.accounts.domain.claims import (
    CLAIM_DEVICE_ID,
    ClaimExistsError,
    ClaimRules,
    ClaimStatus,
    JourneyChangedError,
    LegView,
    MissingJourneyIdError,
    OpenEntry,
    UnknownJourneyError,
    check_exit_stop,
    check_in_window,
    claim_outcome,
    claimed_exit_at,
    correction_tap_id,
    open_entry,
)
from services.accounts.domain.history import JourneyRevision

MAX_LISTED_CLAIMS = 100


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, str(default))
    if not raw.isdigit() or int(raw) <= 0:
        raise SettingsError(f"{name} must be a positive integer, got {raw!r}")
    return int(raw)


@dataclass(frozen=True, slots=True)
class ClaimSettings:
    """The dispute rules (fares' address is the app's CLEARWAY_FARES_TARGET)."""

    rules: ClaimRules = field(default_factory=ClaimRules)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClaimSettings:
        """From CLEARWAY_CLAIM_WINDOW_DAYS (28), CLEARWAY_CLAIM_DEFAULT_JOURNEY_MINUTES (20),
        and CLEARWAY_CLAIM_MAX_JOURNEY_MINUTES (120)."""
        env = os.environ if env is None else env
        rules = ClaimRules(
            window_days=_positive_int(env, "CLEARWAY_CLAIM_WINDOW_DAYS", 28),
            default_journey=timedelta(
                minutes=_positive_int(env, "CLEARWAY_CLAIM_DEFAULT_JOURNEY_MINUTES", 20)
            ),
            max_journey=timedelta(
                minutes=_positive_int(env, "CLEARWAY_CLAIM_MAX_JOURNEY_MINUTES", 120)
            ),
        )
        if rules.default_journey > rules.max_journey:
            raise SettingsError("the default claimed journey must not exceed the maximum")
        return cls(rules)


class StopCheck(Protocol):
    """Checks a claimed exit against the fare data (fares' QuoteFare in production)."""

    async def check_exit(
        self,
        entry: OpenEntry,
        exit_stop_id: str,
        exited_at: datetime,
        rider_category_id: str,
        fare_media_id: str,
    ) -> None: ...


def _at(journey_ts: object, present: bool) -> datetime | None:
    if not present:
        return None
    return journey_ts.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined, no-any-return]


def leg_views(journey: PricedJourney) -> list[LegView]:
    """The legs of a priced journey, as the claim rules read them."""
    return [
        LegView(
            leg.incomplete,
            leg.from_stop_id,
            leg.to_stop_id,
            _at(leg.entry_at, leg.HasField("entry_at")),
            _at(leg.exit_at, leg.HasField("exit_at")),
            leg.operator_id,
            leg.route_id,
        )
        for leg in journey.legs
    ]


def next_tap_after(bodies: Sequence[bytes], after: datetime) -> datetime | None:
    """The earliest tap time later than `after` among these journeys' legs."""
    times = [
        t
        for body in bodies
        for leg in leg_views(PricedJourney.FromString(body))
        for t in (leg.entry_at, leg.exit_at)
        if t is not None and t > after
    ]
    return min(times, default=None)


def correction_tap(
    entry: OpenEntry, claim: StoredClaim, *, sequence: int, now: datetime, zone: str
) -> events_pb2.Tap:
    """The EXIT a claim becomes, as ingest would have written it on `taps`. Rider category
    and fare media are left empty: fares falls back to the card's, as for any tap."""
    offset = claim.exited_at.astimezone(ZoneInfo(zone)).utcoffset() or timedelta(0)
    tap = events_pb2.Tap(
        tap_id=claim.tap_id,
        device_id=CLAIM_DEVICE_ID,
        sequence_number=sequence,
        card_token=claim.card_token,
        utc_offset_minutes=int(offset.total_seconds() // 60),
        stop_id=claim.exit_stop_id,
        kind=events_pb2.TAP_KIND_EXIT,
        route_id=entry.route_id,
        operator_id=entry.operator_id,
        late=True,
    )
    tap.tapped_at.FromDatetime(claim.exited_at)
    tap.received_at.FromDatetime(now)
    return tap


@dataclass
class Claims:
    """The dispute use cases over PostgreSQL, the outbox relay and fares' stop check."""

    pool: asyncpg.Pool
    relay: OutboxRelay | None
    stop_check: StopCheck
    taps_topic: str
    rules: ClaimRules = field(default_factory=ClaimRules)
    timezone: str = "Europe/London"
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    async def claim_missing_exit(
        self,
        traveller_id: str,
        card_token: str,
        journey_id: str,
        exit_stop_id: str,
        exited_at: datetime | None,
    ) -> StoredClaim:
        """Record the claim and queue its correction tap, in one transaction. The card's
        ownership is the caller's to check first."""
        if not journey_id:
            raise MissingJourneyIdError("journey_id is required")
        if "\x00" in journey_id:  # PostgreSQL text cannot hold it: no journey has it
            raise UnknownJourneyError("no such journey on this card")
        stop_id = check_exit_stop(exit_stop_id)
        now = self.clock()
        async with self.pool.acquire() as conn:
            latest = await latest_journey(conn, card_token, journey_id)
            if latest is None or not latest.has_legs:
                raise UnknownJourneyError("no such journey on this card")
            if await claim_of_journey(conn, journey_id) is not None:
                raise ClaimExistsError("this journey was claimed already: one claim per journey")
            journey = PricedJourney.FromString(latest.body)
            entry = open_entry(leg_views(journey))
            check_in_window(entry, now, self.rules)
            nearby = await journeys_between(
                conn,
                card_token,
                entry.entry_at - timedelta(days=1),
                entry.entry_at + self.rules.max_journey,
            )
        exit_at, estimated = claimed_exit_at(
            entry, exited_at, next_tap_after(nearby, entry.entry_at), now, self.rules
        )
        await self.stop_check.check_exit(
            entry, stop_id, exit_at, journey.rider_category_id, journey.fare_media_id
        )
        async with self.pool.acquire() as conn, conn.transaction():
            locked = await latest_journey(conn, card_token, journey_id, lock=True)
            if locked is None or locked.revision != latest.revision:
                raise JourneyChangedError("the journey was re-priced meanwhile; claim again")
            sequence = await next_tap_sequence(conn)
            claim = StoredClaim(
                claim_id=f"claim-{uuid.uuid4().hex}",
                traveller_id=traveller_id,
                card_token=card_token,
                journey_id=journey_id,
                claimed_revision=latest.revision,
                claimed_charge_minor=journey.charge.amount_minor,
                currency=journey.charge.currency,
                entry_stop_id=entry.stop_id,
                entry_at=entry.entry_at,
                exit_stop_id=stop_id,
                exited_at=exit_at,
                exited_at_estimated=estimated,
                tap_id=correction_tap_id(sequence),
                status=ClaimStatus.PENDING,
                reason="",
                resulting_revision=None,
                refund_minor=None,
                created_at=now,
                resolved_at=None,
            )
            if not await insert_claim(conn, claim):
                raise ClaimExistsError("this journey was claimed already: one claim per journey")
            tap = correction_tap(entry, claim, sequence=sequence, now=now, zone=self.timezone)
            await enqueue(
                conn,
                [
                    OutboxMessage(
                        self.taps_topic,
                        card_token.encode(),
                        tap.SerializeToString(deterministic=True),
                    )
                ],
            )
        if self.relay is not None:
            self.relay.notify()
        return claim

    async def list_claims(self, card_token: str) -> list[StoredClaim]:
        """The card's claims, newest first (at most MAX_LISTED_CLAIMS)."""
        async with self.pool.acquire() as conn:
            return await claims_of_card(conn, card_token, MAX_LISTED_CLAIMS)

    async def resolve(self, revs: Sequence[JourneyRevision]) -> int:
        """Record the outcome of every pending claim whose correction tap is in one of
        these (stored) revisions; idempotent, so a redelivered batch changes nothing.
        How many claims were resolved."""
        later = [r for r in revs if r.revision > 1]  # a claim's result is never revision 1
        if not later:
            return 0
        resolved = 0
        async with self.pool.acquire() as conn, conn.transaction():
            for claim in await pending_claims(conn, sorted({r.journey_id for r in later})):
                result = _result_of(claim, later)
                if result is None:
                    continue
                outcome = claim_outcome(claim.claimed_charge_minor, result.charge_minor)
                await resolve_claim(
                    conn,
                    claim.claim_id,
                    status=outcome.status,
                    reason=outcome.reason,
                    resulting_revision=result.revision,
                    refund_minor=outcome.refund_minor,
                    at=self.clock(),
                )
                resolved += 1
        return resolved


def _result_of(claim: StoredClaim, revs: Sequence[JourneyRevision]) -> JourneyRevision | None:
    """The earliest revision after the claimed one that holds the claim's correction tap."""
    for rev in sorted(revs, key=lambda r: r.revision):
        if rev.journey_id != claim.journey_id or rev.revision <= claim.claimed_revision:
            continue
        journey = PricedJourney.FromString(rev.body)
        if any(claim.tap_id in leg.tap_ids for leg in journey.legs):
            return rev
    return None
