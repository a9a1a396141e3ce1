"""Caps progress of one card: its stored taps of the service week, re-priced in memory up
to an instant. Read-only: nothing is written, nothing is published."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from clearway.events.v1 import events_pb2
from services.fares.adapters.convert import tap_from_proto
from services.fares.adapters.state_store import StateStore, TapWindow
from services.fares.domain import CardCapsProgress, caps_progress
from services.fares.domain.model import FareCatalog
from services.fares.service_layer.repricing import week_of


async def card_caps_progress(
    pool: asyncpg.Pool, catalog: FareCatalog, card_token: str, at: datetime
) -> CardCapsProgress:
    """How much of each cap that counts the card it has used in the service day and the
    service week containing `at` (one indexed read of the week's taps, then pure pricing)."""
    since, until = week_of(catalog, at).tap_window(catalog, at)
    window = TapWindow(card_token, since, min(until, at + timedelta(microseconds=1)))
    async with pool.acquire() as conn:
        found = await StateStore(conn).taps_in([window])
    taps = [
        tap_from_proto(events_pb2.Tap.FromString(b)) for b in found.get(card_token, {}).values()
    ]
    return caps_progress(catalog, card_token, taps, at)
