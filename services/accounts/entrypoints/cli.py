"""`clearway journeys CARD`: a card's journey history from the accounts service, as a
traveller sees it (newest first)."""

from __future__ import annotations

import argparse
import asyncio
import sys

import grpc

from clearway.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from clearway.events.v1 import events_pb2
from clearway.money import Money
from clearway.settings import DEFAULT_PORTS


def journey_line(j: events_pb2.PricedJourney) -> str:
    """One line per journey: id, revision, stops, charge, and what caps saved."""
    stops = " ".join(
        leg.from_stop_id + (f"→{leg.to_stop_id}" if leg.to_stop_id else "") for leg in j.legs
    )
    saved = sum(c.saved.amount_minor for c in j.caps)
    charge = Money(j.charge.amount_minor, j.charge.currency)
    flags = " INCOMPLETE" if j.incomplete else ""
    if saved:
        flags += f" (capped, saved {Money(saved, j.charge.currency)})"
    return f"  {j.service_day}  {j.journey_id:<26} r{j.revision:<2} {stops:<24} {charge}{flags}"


async def print_history(target: str, card: str, limit: int) -> int:
    """Print up to `limit` journeys of `card`; 0 on success, 1 on a gRPC error."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = accounts_pb2_grpc.AccountsServiceStub(channel)
        token, shown = "", 0
        try:
            while shown < limit:
                page = await stub.ListJourneys(
                    accounts_pb2.ListJourneysRequest(
                        card_token=card, page_size=min(20, limit - shown), page_token=token
                    ),
                    timeout=10,
                )
                for journey in page.journeys:
                    print(journey_line(journey))
                shown += len(page.journeys)
                token = page.next_page_token
                if not token:
                    break
        except grpc.aio.AioRpcError as exc:
            print(f"clearway journeys: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    if shown == 0:
        print("  (no journeys)")
    return 0


def main(argv: list[str]) -> int:
    """Parse arguments and print the history."""
    parser = argparse.ArgumentParser(prog="clearway journeys", description=__doc__)
    parser.add_argument("card_token")
    parser.add_argument("--target", default=f"127.0.0.1:{DEFAULT_PORTS['accounts']}")
    parser.add_argument("--limit", type=int, default=20)
    args = parser.parse_args(argv)
    return asyncio.run(print_history(args.target, args.card_token, args.limit))
