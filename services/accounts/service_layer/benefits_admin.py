"""Provisioning of benefits by the scheme's engineers (`clearway benefits ...`, and tests):
council officers and providers' point-of-service devices, written straight to the accounts
database (they hold its credentials; there is no RPC for it).

    await add_officer(pool, "officer@camden.example", "funder:camden")
    await register_device(pool, "pos-1", "provider:camden-leisure", public_key, scheme)
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import asyncpg
from argon2 import PasswordHasher

from clearway.device_keys import check_public_key, key_id_of
from clearway.errors import ClearwayError, ErrorKind
from clearway.scheme.model import PartyKind, Scheme
from services.accounts.adapters import benefits_repository as repo
from services.accounts.adapters.traveller_repository import TravellerRepository
from services.accounts.domain.entitlements import BenefitsInputError, UnknownTravellerError
from services.accounts.domain.redemptions import ProviderDevice, is_device_id
from services.accounts.domain.travellers import check_password, normal_email


class DeviceExistsError(ClearwayError):
    """The device id is registered with another provider or key."""

    code = "DEVICE_EXISTS"
    kind = ErrorKind.ALREADY_EXISTS


class UnknownDeviceError(ClearwayError):
    """No device is registered with this id."""

    code = "UNKNOWN_DEVICE"
    kind = ErrorKind.NOT_FOUND


def _party_of_kind(scheme: Scheme, party_id: str, kind: PartyKind, day: date) -> None:
    party = scheme.party(party_id, day)
    if party is None or party.kind is not kind:
        raise BenefitsInputError(
            f"{party_id!r} is not a {kind.value} party of the scheme {scheme.scheme_id}",
            code=f"UNKNOWN_{kind.value.upper()}",
        )


async def add_officer(
    pool: asyncpg.Pool,
    email: str,
    funder_id: str,
    *,
    scheme: Scheme | None = None,
    create_with_password: str | None = None,
) -> str:
    """Give the account of `email` the officer role of council `funder_id` (a funder party
    of `scheme`, when given); its account id. The account must exist, or is signed up
    with `create_with_password`; UNKNOWN_TRAVELLER otherwise."""
    email = normal_email(email)
    if scheme is not None:
        _party_of_kind(scheme, funder_id, PartyKind.FUNDER, datetime.now(UTC).date())
    elif not funder_id.startswith("funder:"):
        raise BenefitsInputError("a council is a funder: party", code="UNKNOWN_FUNDER")
    if create_with_password is not None:
        password = check_password(create_with_password)
        async with pool.acquire() as conn:
            exists = await repo.traveller_by_email(conn, email)
        if exists is None:  # signed up as SignUp does (taken meanwhile: that account)
            password_hash = await asyncio.to_thread(PasswordHasher().hash, password)
            await TravellerRepository(pool).create(email, password_hash)
    async with pool.acquire() as conn, conn.transaction():
        traveller_id = await repo.traveller_by_email(conn, email)
        if traveller_id is None:
            raise UnknownTravellerError(
                "no account has this email: sign it up first (or pass --create)"
            )
        await repo.set_officer(conn, traveller_id, funder_id)
    return traveller_id


async def remove_officer(pool: asyncpg.Pool, email: str) -> bool:
    """Take the officer role from the account of `email`; False when it held none."""
    email = normal_email(email)
    async with pool.acquire() as conn, conn.transaction():
        traveller_id = await repo.traveller_by_email(conn, email)
        if traveller_id is None:
            return False
        return await repo.delete_officer(conn, traveller_id)


async def register_device(
    pool: asyncpg.Pool, device_id: str, provider_id: str, public_key: bytes, scheme: Scheme
) -> ProviderDevice:
    """Register a provider's device with its raw Ed25519 public key (again with the same:
    unchanged); DEVICE_EXISTS when the id is registered otherwise."""
    if not is_device_id(device_id):
        raise BenefitsInputError(
            "device_id is 1-128 of [A-Za-z0-9._:-], starting with a letter or digit",
            code="BAD_DEVICE_ID",
        )
    _party_of_kind(scheme, provider_id, PartyKind.PROVIDER, datetime.now(UTC).date())
    try:
        check_public_key(public_key)
    except ValueError as exc:
        raise BenefitsInputError(str(exc), code="BAD_PUBLIC_KEY") from None
    key_id = key_id_of(public_key)
    async with pool.acquire() as conn, conn.transaction():
        await repo.insert_device(conn, device_id, provider_id, key_id, public_key)
        found = await repo.device(conn, device_id)
    assert found is not None
    if (found.provider_id, found.public_key, found.revoked) != (provider_id, public_key, False):
        raise DeviceExistsError("this device id is registered with another provider or key")
    return found


async def revoke_device(pool: asyncpg.Pool, device_id: str) -> ProviderDevice:
    """Revoke a device for good (its redemptions are refused with DEVICE_REVOKED)."""
    async with pool.acquire() as conn, conn.transaction():
        if await repo.device(conn, device_id) is None:
            raise UnknownDeviceError("no device is registered with this id")
        await repo.revoke_device(conn, device_id, datetime.now(UTC))
        found = await repo.device(conn, device_id)
    assert found is not None
    return found


async def list_devices(pool: asyncpg.Pool) -> list[ProviderDevice]:
    """Every registered device, by id."""
    async with pool.acquire() as conn:
        return await repo.devices(conn)
