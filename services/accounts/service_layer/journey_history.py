"""Use cases of the journey history: record a revision, list a card's journeys."""

from __future__ import annotations

from collections.abc import Sequence

from clearway.accounts.v1.accounts_pb2 import ListJourneysResponse
from clearway.events.v1.events_pb2 import PricedJourney
from services.accounts.adapters.cache import HistoryCache
from services.accounts.adapters.journey_repository import JourneyRepository, StoreOutcome
from services.accounts.domain.errors import MissingCardTokenError
from services.accounts.domain.history import JourneyRevision, history_page
from services.accounts.domain.paging import decode_page_token, effective_page_size


class JourneyHistory:
    """The PostgreSQL store with the Redis page cache in front of it."""

    def __init__(self, repository: JourneyRepository, cache: HistoryCache) -> None:
        self.repository = repository
        self.cache = cache

    async def record(self, rev: JourneyRevision) -> StoreOutcome:
        """Store one revision (see `record_many`)."""
        return (await self.record_many([rev]))[0]

    async def record_many(self, revs: Sequence[JourneyRevision]) -> list[StoreOutcome]:
        """Store revisions in one transaction, then invalidate their cards' cached pages.

        The bump happens on every delivery, replays included: if a crash (or a Redis
        outage, which raises) fell between the database commit and the bump, the
        redelivery still invalidates.
        """
        outcomes = await self.repository.store_many(revs)
        if revs:
            await self.cache.bump_many(r.card_token for r in revs)
        return outcomes

    async def list_journeys(
        self, card_token: str, page_size: int, page_token: str
    ) -> ListJourneysResponse:
        """One page of the card's history; domain errors for bad arguments."""
        if not card_token:
            raise MissingCardTokenError("card_token is required")
        size = effective_page_size(page_size)
        after = decode_page_token(page_token, card_token)
        generation = await self.cache.generation(card_token)
        if generation is not None:
            cached = await self.cache.page(card_token, generation, size, page_token)
            if cached is not None:
                return ListJourneysResponse.FromString(cached)
        rows = await self.repository.history(card_token, after, size + 1)
        page = history_page(rows, size, card_token)
        response = ListJourneysResponse(
            journeys=[PricedJourney.FromString(body) for body in page.bodies],
            next_page_token=page.next_page_token,
        )
        if generation is not None:
            await self.cache.put_page(
                card_token, generation, size, page_token, response.SerializeToString()
            )
        return response
