"""`clearway simulate`: stream a synthetic network day to ingest and print the tally."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from clearway.pki import default_pki_dir
from clearway.settings import ADMIN_PORT_OFFSET, DEFAULT_PORTS, REPO_ROOT
from services.fares.domain import load_fare_data
from services.ingest.simulator.day import devices_of, simulate_day
from services.ingest.simulator.stream import Tally, register_devices, send_day

DEFAULT_FEED = REPO_ROOT / "examples" / "feeds" / "london"


def yesterday() -> date:
    """The last complete day: its taps are neither in the future nor too old."""
    return (datetime.now(UTC) - timedelta(days=1)).date()


def tally_json(tally: Tally) -> dict[str, object]:
    """The tally as plain JSON values."""
    return {
        "sent": tally.sent,
        "accepted": tally.accepted,
        "duplicates": tally.duplicates,
        "rejected": dict(sorted(tally.rejected.items())),
        "balanced": tally.balanced(),
    }


def main(argv: list[str]) -> int:
    """Parse arguments, simulate the day, stream it, print the tally as JSON."""
    parser = argparse.ArgumentParser(prog="clearway simulate", description=__doc__)
    parser.add_argument("--target", default=f"127.0.0.1:{DEFAULT_PORTS['ingest']}")
    parser.add_argument(
        "--admin-target",
        default=f"127.0.0.1:{DEFAULT_PORTS['ingest'] + ADMIN_PORT_OFFSET}",
        help="ingest's admin port, where the simulated devices are registered",
    )
    parser.add_argument(
        "--pki-dir",
        type=Path,
        default=None,
        help="the scheme PKI (`clearway pki init`); default var/pki or CLEARWAY_PKI_DIR",
    )
    parser.add_argument("--feed", type=Path, default=DEFAULT_FEED)
    parser.add_argument("--cards", type=int, default=200, help="M cards travelling")
    parser.add_argument("--validators", type=int, default=8, help="N concurrent streams")
    parser.add_argument("--day", type=date.fromisoformat, default=None, help="YYYY-MM-DD")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    feed = load_fare_data(args.feed)
    day = simulate_day(feed, args.day or yesterday(), args.cards, seed=args.seed)
    pki_dir = args.pki_dir or default_pki_dir()

    async def run() -> Tally:
        await register_devices(args.admin_target, pki_dir, devices_of(feed))
        return await send_day(args.target, day, validators=args.validators, pki_dir=pki_dir)

    tally = asyncio.run(run())
    print(json.dumps(tally_json(tally), indent=2))
    return 0 if tally.balanced() else 1
