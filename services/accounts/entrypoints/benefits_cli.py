"""`clearway benefits ...`: provision council officers and providers' devices
(docs/benefits.md).

    clearway benefits officers add --email E --council funder:X [--create]
    clearway benefits officers remove --email E
    clearway benefits devices keygen --out pos-1.key     a new Ed25519 key (on the device)
    clearway benefits devices register --device-id pos-1 --provider provider:X \
        --public-key pos-1.pub
    clearway benefits devices revoke --device-id pos-1
    clearway benefits devices list

Every command but `keygen` writes to the accounts database directly (the scheme's
engineers hold its credentials: CLEARWAY_PG_DSN, CLEARWAY_DB_SCHEMA; its migrations are
applied first). Councils and providers are checked against the scheme file
(CLEARWAY_SCHEME_FILE, default examples/schemes/london.toml). `--create` signs the account
up first, with the password in CLEARWAY_PASSWORD. `keygen` writes the private key (PEM,
mode 0600) to --out and its public half to the same name with `.pub`; `register` takes a
PEM or raw 32-byte public key file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from clearway.db import create_pool, migrate
from clearway.device_keys import public_key_from_file
from clearway.errors import ClearwayError
from clearway.scheme.file import load_scheme
from clearway.scheme.model import Scheme
from clearway.settings import ServiceSettings, env_str
from services.accounts.adapters.journey_repository import MIGRATIONS
from services.accounts.app import DEFAULT_SCHEME_FILE, SCHEME_FILE_VAR
from services.accounts.domain.redemptions import ProviderDevice
from services.accounts.redemption_device import RedemptionDevice
from services.accounts.service_layer import benefits_admin


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clearway benefits", description=__doc__.splitlines()[0])
    parser.add_argument("--scheme", type=Path, default=None, help="the scheme file")
    area = parser.add_subparsers(dest="area", required=True)
    officers = area.add_parser("officers", help="council officers").add_subparsers(
        dest="command", required=True
    )
    add = officers.add_parser("add", help="give an account a council's officer role")
    add.add_argument("--email", required=True)
    add.add_argument("--council", required=True, help="the council's funder: party id")
    add.add_argument("--create", action="store_true", help="sign the account up first")
    remove = officers.add_parser("remove", help="take the officer role away")
    remove.add_argument("--email", required=True)
    devices = area.add_parser("devices", help="providers' devices").add_subparsers(
        dest="command", required=True
    )
    keygen = devices.add_parser("keygen", help="a new Ed25519 key")
    keygen.add_argument("--out", type=Path, required=True)
    register = devices.add_parser("register", help="register a device and its public key")
    register.add_argument("--device-id", required=True)
    register.add_argument("--provider", required=True, help="the provider: party id")
    register.add_argument("--public-key", type=Path, required=True)
    revoke = devices.add_parser("revoke", help="revoke a device for good")
    revoke.add_argument("--device-id", required=True)
    devices.add_parser("list", help="registered devices")
    return parser


def device_json(device: ProviderDevice) -> dict[str, Any]:
    """A device as the CLI prints it."""
    return {
        "device_id": device.device_id,
        "provider_id": device.provider_id,
        "key_id": device.key_id,
        "status": "revoked" if device.revoked else "active",
        "registered_at": device.registered_at.isoformat(),
    }


def _keygen(out: Path) -> dict[str, Any]:
    device = RedemptionDevice.generate("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.touch(mode=0o600, exist_ok=False)
    out.write_bytes(device.private_pem())
    public = out.with_suffix(".pub")
    public.write_bytes(device.public_pem())
    return {
        "key_id": device.key_id,
        "public_key": device.public_key.hex(),
        "private_key_file": str(out),
        "public_key_file": str(public),
    }


async def _with_pool(work: Callable[[asyncpg.Pool], Awaitable[Any]]) -> Any:
    settings = ServiceSettings.from_env("accounts")
    pool = await create_pool(settings.endpoints.pg_dsn, settings.db_schema, max_size=2)
    try:
        await migrate(pool, MIGRATIONS)
        return await work(pool)
    finally:
        await pool.close()


def _scheme(args: argparse.Namespace) -> Scheme:
    path = args.scheme or Path(env_str(SCHEME_FILE_VAR, str(DEFAULT_SCHEME_FILE)))
    return load_scheme(path)


def _password(create: bool) -> str | None:
    if not create:
        return None
    password = os.environ.get("CLEARWAY_PASSWORD", "")
    if not password:
        raise SystemExit("clearway benefits officers add --create: set CLEARWAY_PASSWORD")
    return password


def _run(args: argparse.Namespace) -> Any:
    command = (args.area, args.command)
    if command == ("officers", "add"):
        scheme, password = _scheme(args), _password(args.create)

        async def add(pool: asyncpg.Pool) -> Any:
            traveller_id = await benefits_admin.add_officer(
                pool, args.email, args.council, scheme=scheme, create_with_password=password
            )
            return {"traveller_id": traveller_id, "council": args.council}

        return asyncio.run(_with_pool(add))
    if command == ("officers", "remove"):

        async def remove(pool: asyncpg.Pool) -> Any:
            return {"removed": await benefits_admin.remove_officer(pool, args.email)}

        return asyncio.run(_with_pool(remove))
    if command == ("devices", "keygen"):
        return _keygen(args.out)
    if command == ("devices", "register"):
        scheme = _scheme(args)
        try:
            public_key = public_key_from_file(args.public_key.read_bytes())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"--public-key: {exc}") from None

        async def register(pool: asyncpg.Pool) -> Any:
            return device_json(
                await benefits_admin.register_device(
                    pool, args.device_id, args.provider, public_key, scheme
                )
            )

        return asyncio.run(_with_pool(register))
    if command == ("devices", "revoke"):

        async def revoke(pool: asyncpg.Pool) -> Any:
            return device_json(await benefits_admin.revoke_device(pool, args.device_id))

        return asyncio.run(_with_pool(revoke))

    async def listing(pool: asyncpg.Pool) -> Any:
        return [device_json(d) for d in await benefits_admin.list_devices(pool)]

    return asyncio.run(_with_pool(listing))


def main(argv: list[str]) -> int:
    """Run one `clearway benefits` command; print the result as JSON."""
    args = _parser().parse_args(argv)
    try:
        result = _run(args)
    except ClearwayError as exc:
        print(f"clearway benefits {args.area} {args.command}: {exc.code}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0
