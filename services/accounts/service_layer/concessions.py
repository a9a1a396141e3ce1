"""Travel passes reaching the taps (docs/benefits.md#travel-passes): keeping the compacted
`concessions` topic in step with an account's travel passes and cards.

`CardConcessions.sync` runs inside the transaction of whatever changed the account (a
grant or renewal, a revocation, a card added or removed) after it took the account's row
lock: it works out the concession the account's cards carry now (domain.concessions) and
queues, in the outbox, a `CardConcession` for each card that does not carry it yet and a
tombstone for each that carries one it should not. `reconcile` (the expiry sweep) does
the same for accounts whose concession has ended, and for cards of accounts with an active
pass that carry none (grants made before this existed). Card tokens are never logged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

import asyncpg

from clearway.events.v1 import events_pb2
from clearway.scheme.model import EntitlementKind, EntitlementScheme, Scheme
from services.accounts.adapters import benefits_repository as benefits_repo
from services.accounts.adapters import concession_store as store
from services.accounts.adapters.outbox import OutboxMessage, OutboxRelay, enqueue
from services.accounts.domain.concessions import (
    Concession,
    TravelPass,
    concession_changes,
    concession_of,
)
from services.accounts.domain.entitlements import Entitlement, EntitlementStatus

# Accounts brought up to date per transaction of the sweep.
RECONCILE_BATCH = 200


def concession_message(topic: str, card_token: str, concession: Concession | None) -> OutboxMessage:
    """The record that makes `card_token` carry `concession` (None: a tombstone)."""
    if concession is None:
        return OutboxMessage(topic, card_token.encode(), None)
    event = events_pb2.CardConcession(
        card_token=card_token,
        rider_category_id=concession.rider_category_id,
        valid_from=concession.valid_from.isoformat(),
        valid_to=concession.valid_to.isoformat(),
        entitlement_id=concession.entitlement_id,
        funder_id=concession.funder_id,
        entitlement_scheme_id=concession.scheme_id,
    )
    return OutboxMessage(topic, card_token.encode(), event.SerializeToString(deterministic=True))


@dataclass(frozen=True)
class CardConcessions:
    """Publishes what each card's travel-pass concession is, through the outbox."""

    scheme: Scheme
    topic: str = "concessions"

    def _scheme_of(self, scheme_id: str, day: date) -> EntitlementScheme | None:
        found = self.scheme.entitlement_scheme(scheme_id, day)
        if found is not None:
            return found
        declared = [e for e in self.scheme.entitlement_schemes if e.scheme_id == scheme_id]
        return declared[-1] if declared else None

    @property
    def travel_pass_schemes(self) -> list[str]:
        """The ids of the scheme file's travel-pass schemes."""
        return sorted(
            {
                e.scheme_id
                for e in self.scheme.entitlement_schemes
                if e.kind is EntitlementKind.TRAVEL_PASS
            }
        )

    def travel_passes(self, held: Sequence[Entitlement]) -> list[TravelPass]:
        """The account's travel passes that were not revoked, with their rider category
        (their scheme's as in force on their first day)."""
        passes = []
        for e in held:
            if e.status is EntitlementStatus.REVOKED:
                continue
            scheme = self._scheme_of(e.scheme_id, e.valid_from)
            if scheme is None or scheme.kind is not EntitlementKind.TRAVEL_PASS:
                continue
            if not scheme.rider_category:
                continue
            passes.append(
                TravelPass(
                    e.entitlement_id,
                    e.scheme_id,
                    e.funder_id,
                    scheme.rider_category,
                    e.valid_from,
                    e.valid_to,
                )
            )
        return passes

    async def sync(self, conn: asyncpg.Connection, traveller_id: str, day: date) -> int:
        """Queue, in the caller's transaction (which holds the account's row lock), the
        records that make the account's cards carry what its travel passes give on
        service day `day`; how many."""
        held = await benefits_repo.entitlements_of(conn, traveller_id)
        wanted = concession_of(self.travel_passes(held), day)
        cards = await store.cards_of(conn, traveller_id)
        published = await store.published_of(conn, traveller_id)
        changes = concession_changes(cards, published, wanted)
        if changes:
            await store.record_published(conn, traveller_id, changes)
            messages = [concession_message(self.topic, card, c) for card, c in changes]
            await enqueue(conn, messages)
        return len(changes)

    async def reconcile(self, conn: asyncpg.Connection, day: date) -> tuple[int, int]:
        """Bring up to date, in the caller's transaction, up to RECONCILE_BATCH accounts
        whose cards' records are out of date on `day` (their locks taken first, in id
        order); (how many accounts, how many records queued)."""
        due = await store.accounts_due(conn, day, self.travel_pass_schemes, RECONCILE_BATCH)
        if not due:
            return 0, 0
        await store.lock_accounts(conn, due)
        queued = 0
        for traveller_id in due:
            queued += await self.sync(conn, traveller_id, day)
        return len(due), queued


@dataclass
class ConcessionsOfCards:
    """Keeps the concessions of an account's cards in step when a card is added to or
    removed from it (the travellers' `CardsChanged` hook)."""

    concessions: CardConcessions
    today: Callable[[], date]  # the service day now (benefits' clock)
    relay: OutboxRelay | None = None

    async def in_transaction(self, conn: asyncpg.Connection, traveller_id: str) -> None:
        """In the transaction that added or removed the card: the account's row lock, then
        the records of the change (the new card's concession, the removed card's end)."""
        await store.lock_accounts(conn, [traveller_id])
        await self.concessions.sync(conn, traveller_id, self.today())

    def committed(self) -> None:
        """The change committed: relay what it queued soon."""
        if self.relay is not None:
            self.relay.notify()
