"""`clearway devices ...`: provision validators and rotate their keys.

    clearway devices keygen DEVICE_ID --out KEY.pem          a new Ed25519 key (on the device)
    clearway devices register DEVICE_ID --operator OP --stops S1,S2 [--routes R1] --key KEY.pem
    clearway devices add-key DEVICE_ID --key NEW.pem         rotation, step 1
    clearway devices retire-key DEVICE_ID KEY_ID             rotation, step 2
    clearway devices revoke DEVICE_ID [--reason TEXT]
    clearway devices show DEVICE_ID
    clearway devices list [--operator OP]

Every command but `keygen` calls ingest's DeviceRegistryService on its admin port
(`--admin`, default 127.0.0.1:52051) over mutual TLS as the operations role (the PKI of
`clearway pki`, `--pki-dir`). `register` and `add-key` read only the public half of the
key file (`--key` may also be a raw 32-byte public key in hex, for a key generated inside a
secure element that never leaves it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from clearway.auth import operations_role
from clearway.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from clearway.pki import default_pki_dir, secure_channel
from clearway.rpc import reason_of
from clearway.settings import ADMIN_PORT_OFFSET, DEFAULT_PORTS
from services.ingest.device_client import DeviceIdentity

ADMIN = f"127.0.0.1:{DEFAULT_PORTS['ingest'] + ADMIN_PORT_OFFSET}"


def _public_key(value: str, device_id: str) -> bytes:
    path = Path(value)
    if path.exists():
        return DeviceIdentity.from_pem(device_id, path.read_bytes()).public_key
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise SystemExit(f"--key: {value!r} is neither a PEM file nor a hex public key") from None
    if len(raw) != 32:
        raise SystemExit("--key: a raw Ed25519 public key is 32 bytes (64 hex digits)")
    return raw


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clearway devices", description=__doc__.splitlines()[0])
    parser.add_argument("--admin", default=ADMIN, help="ingest's admin port")
    parser.add_argument("--pki-dir", type=Path, default=None, help="the scheme PKI")
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser("keygen", help="a new Ed25519 key")
    keygen.add_argument("device_id")
    keygen.add_argument("--out", type=Path, required=True)
    register = commands.add_parser("register", help="register a device and its first key")
    register.add_argument("device_id")
    register.add_argument("--operator", required=True)
    register.add_argument("--stops", required=True, help="comma-separated GTFS stop_ids")
    register.add_argument("--routes", default="", help="comma-separated GTFS route_ids")
    register.add_argument("--key", required=True, help="PEM private key file or hex public key")
    add = commands.add_parser("add-key", help="add the device's next key")
    add.add_argument("device_id")
    add.add_argument("--key", required=True)
    retire = commands.add_parser("retire-key", help="retire one of the device's keys")
    retire.add_argument("device_id")
    retire.add_argument("key_id")
    revoke = commands.add_parser("revoke", help="revoke a device")
    revoke.add_argument("device_id")
    revoke.add_argument("--reason", default="")
    show = commands.add_parser("show", help="one device")
    show.add_argument("device_id")
    listing = commands.add_parser("list", help="devices, by id")
    listing.add_argument("--operator", default="")
    return parser


async def _call(args: argparse.Namespace) -> Any:
    pki_dir = args.pki_dir or default_pki_dir()
    async with secure_channel(args.admin, pki_dir, operations_role()) as channel:
        stub = ingest_pb2_grpc.DeviceRegistryServiceStub(channel)
        if args.command == "register":
            return await stub.RegisterDevice(
                ingest_pb2.RegisterDeviceRequest(
                    device_id=args.device_id,
                    operator_id=args.operator,
                    allowed_stop_ids=_split(args.stops),
                    allowed_route_ids=_split(args.routes),
                    public_key=_public_key(args.key, args.device_id),
                )
            )
        if args.command == "add-key":
            return await stub.AddDeviceKey(
                ingest_pb2.AddDeviceKeyRequest(
                    device_id=args.device_id, public_key=_public_key(args.key, args.device_id)
                )
            )
        if args.command == "retire-key":
            return await stub.RetireDeviceKey(
                ingest_pb2.RetireDeviceKeyRequest(device_id=args.device_id, key_id=args.key_id)
            )
        if args.command == "revoke":
            return await stub.RevokeDevice(
                ingest_pb2.RevokeDeviceRequest(device_id=args.device_id, reason=args.reason)
            )
        if args.command == "show":
            return await stub.GetDevice(ingest_pb2.GetDeviceRequest(device_id=args.device_id))
        devices: list[Any] = []
        token = ""
        while True:
            page = await stub.ListDevices(
                ingest_pb2.ListDevicesRequest(
                    operator_id=args.operator, page_size=1000, page_token=token
                )
            )
            devices.extend(page.devices)
            token = page.next_page_token
            if not token:
                return ingest_pb2.ListDevicesResponse(devices=devices)


def main(argv: list[str]) -> int:
    """Run one `clearway devices` command; print the reply as JSON."""
    args = _parser().parse_args(argv)
    if args.command == "keygen":
        identity = DeviceIdentity.generate(args.device_id)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.touch(mode=0o600, exist_ok=False)
        args.out.write_bytes(identity.private_pem())
        print(
            json.dumps(
                {
                    "device_id": args.device_id,
                    "key_id": identity.key_id,
                    "public_key": identity.public_key.hex(),
                    "private_key_file": str(args.out),
                },
                indent=2,
            )
        )
        return 0
    try:
        reply = asyncio.run(_call(args))
    except grpc.aio.AioRpcError as exc:
        reason = reason_of(exc.trailing_metadata()) or exc.code().name
        print(f"clearway devices {args.command}: {reason}: {exc.details()}", file=sys.stderr)
        return 1
    print(json.dumps(MessageToDict(reply, preserving_proto_field_name=True), indent=2))
    return 0
