"""`clearway journeys CARD --email EMAIL`: one of your cards' journey history from the
accounts service, newest first. Signs in as EMAIL (password from CLEARWAY_PASSWORD, else
asked for); `--sign-up` creates the account and `--add-card` attaches the card first."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
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


async def sign_in(
    channel: grpc.aio.Channel,
    email: str,
    password: str,
    *,
    sign_up: bool = False,
    add_card: str = "",
) -> tuple[tuple[str, str], ...]:
    """The metadata of a signed-in traveller (signed up and the card added first, when
    asked: repeating either changes nothing)."""
    stub = accounts_pb2_grpc.TravellerServiceStub(channel)
    if sign_up:
        try:
            await stub.SignUp(accounts_pb2.SignUpRequest(email=email, password=password))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
    reply = await stub.SignIn(accounts_pb2.SignInRequest(email=email, password=password))
    metadata = (("authorization", f"Bearer {reply.session_token}"),)
    if add_card:
        await stub.AddCard(accounts_pb2.AddCardRequest(card_token=add_card), metadata=metadata)
    return metadata


async def print_history(
    target: str,
    card: str,
    limit: int,
    email: str,
    password: str,
    *,
    sign_up: bool = False,
    add_card: bool = False,
) -> int:
    """Print up to `limit` journeys of `card`; 0 on success, 1 on a gRPC error."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = accounts_pb2_grpc.AccountsServiceStub(channel)
        token, shown = "", 0
        try:
            metadata = await sign_in(
                channel, email, password, sign_up=sign_up, add_card=card if add_card else ""
            )
            while shown < limit:
                page = await stub.ListJourneys(
                    accounts_pb2.ListJourneysRequest(
                        card_token=card, page_size=min(20, limit - shown), page_token=token
                    ),
                    metadata=metadata,
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
    parser.add_argument("--email", required=True, help="the traveller account to sign in as")
    parser.add_argument("--sign-up", action="store_true", help="create the account first")
    parser.add_argument("--add-card", action="store_true", help="attach the card first")
    args = parser.parse_args(argv)
    password = os.environ.get("CLEARWAY_PASSWORD") or getpass.getpass("password: ")
    return asyncio.run(
        print_history(
            args.target,
            args.card_token,
            args.limit,
            args.email,
            password,
            sign_up=args.sign_up,
            add_card=args.add_card,
        )
    )
