"""The device registry: PostgreSQL holds it, Redis holds a copy of each record that every
batch reads (so a revocation applies to the very next batch, on every ingest process).

Writes go to PostgreSQL first, then replace the Redis copy. A copy missing from Redis (a
flushed or new Redis) is read from PostgreSQL and put back. Copies expire after a minute,
which bounds how long a copy can be stale if replacing it failed (the admin call then
fails too and is retried).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.ingest.domain.devices import Device, DeviceKey, DeviceStatus, KeyStatus

MIGRATIONS = [
    """
    CREATE TABLE devices (
        device_id text PRIMARY KEY,
        operator_id text NOT NULL,
        allowed_stop_ids text[] NOT NULL,
        allowed_route_ids text[] NOT NULL,
        status text NOT NULL CHECK (status IN ('active', 'revoked')),
        registered_at timestamptz NOT NULL,
        revoked_at timestamptz,
        revoked_reason text NOT NULL DEFAULT ''
    );
    CREATE INDEX devices_operator ON devices (operator_id, device_id);
    CREATE TABLE device_keys (
        device_id text NOT NULL REFERENCES devices (device_id),
        key_id text NOT NULL,
        public_key bytea NOT NULL,
        status text NOT NULL CHECK (status IN ('active', 'retired')),
        added_at timestamptz NOT NULL,
        retired_at timestamptz,
        PRIMARY KEY (device_id, key_id)
    );
    """,
]

CACHE_TTL_S = 60


def _encode(device: Device) -> bytes:
    return json.dumps(
        {
            "d": device.device_id,
            "o": device.operator_id,
            "s": sorted(device.allowed_stop_ids),
            "r": sorted(device.allowed_route_ids),
            "st": device.status.value,
            "at": device.registered_at.isoformat(),
            "rv": device.revoked_at.isoformat() if device.revoked_at else None,
            "rr": device.revoked_reason,
            "k": [
                [
                    k.key_id,
                    k.public_key.hex(),
                    k.status.value,
                    k.added_at.isoformat(),
                    k.retired_at.isoformat() if k.retired_at else None,
                ]
                for k in device.keys
            ],
        },
        separators=(",", ":"),
    ).encode()


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _decode(raw: bytes) -> Device:
    data: dict[str, Any] = json.loads(raw)
    return Device(
        device_id=data["d"],
        operator_id=data["o"],
        allowed_stop_ids=frozenset(data["s"]),
        allowed_route_ids=frozenset(data["r"]),
        status=DeviceStatus(data["st"]),
        registered_at=datetime.fromisoformat(data["at"]),
        revoked_at=_when(data["rv"]),
        revoked_reason=data["rr"],
        keys=tuple(
            DeviceKey(kid, bytes.fromhex(pk), KeyStatus(st), datetime.fromisoformat(at), _when(rt))
            for kid, pk, st, at, rt in data["k"]
        ),
    )


def _device_of(row: asyncpg.Record, keys: Sequence[asyncpg.Record]) -> Device:
    return Device(
        device_id=row["device_id"],
        operator_id=row["operator_id"],
        allowed_stop_ids=frozenset(row["allowed_stop_ids"]),
        allowed_route_ids=frozenset(row["allowed_route_ids"]),
        status=DeviceStatus(row["status"]),
        registered_at=row["registered_at"],
        revoked_at=row["revoked_at"],
        revoked_reason=row["revoked_reason"],
        keys=tuple(
            DeviceKey(
                k["key_id"],
                bytes(k["public_key"]),
                KeyStatus(k["status"]),
                k["added_at"],
                k["retired_at"],
            )
            for k in keys
        ),
    )


class DeviceRegistry:
    """Devices and their keys (PostgreSQL), read per batch through Redis."""

    def __init__(self, pool: asyncpg.Pool, redis: aioredis.Redis, prefix: str) -> None:
        self.pool = pool
        self.redis = redis
        self.prefix = prefix

    def _key(self, device_id: str) -> str:
        return f"{self.prefix}{device_id}"

    async def device(self, device_id: str) -> Device | None:
        """The device as registered now (None when unknown): one Redis read, PostgreSQL on
        a miss, or when Redis does not answer (PostgreSQL is the registry; Redis a copy)."""
        try:
            raw = await self.redis.get(self._key(device_id))
        except (RedisError, OSError):
            return await self.load(device_id)
        if raw is not None:
            return (
                None
                if raw == b"-"
                else _decode(bytes(raw) if isinstance(raw, bytes) else raw.encode())
            )
        device = await self.load(device_id)
        # Unknown devices are remembered briefly too, so a flood of them stays off PostgreSQL.
        with contextlib.suppress(RedisError, OSError):
            await self.redis.set(
                self._key(device_id), _encode(device) if device else b"-", ex=CACHE_TTL_S
            )
        return device

    async def load(self, device_id: str, conn: asyncpg.Connection | None = None) -> Device | None:
        """The device from PostgreSQL."""
        if conn is None:
            async with self.pool.acquire() as acquired:
                return await self.load(device_id, acquired)
        row = await conn.fetchrow("SELECT * FROM devices WHERE device_id = $1", device_id)
        if row is None:
            return None
        keys = await conn.fetch(
            "SELECT * FROM device_keys WHERE device_id = $1 ORDER BY added_at, key_id", device_id
        )
        return _device_of(row, keys)

    async def publish(self, device: Device) -> None:
        """Replace the Redis copy after a change committed in PostgreSQL."""
        await self.redis.set(self._key(device.device_id), _encode(device), ex=CACHE_TTL_S)

    async def list(self, operator_id: str, after: str, limit: int) -> list[Device]:
        """Devices ordered by id, after `after`, of `operator_id` (all when empty)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM devices WHERE ($1 = '' OR operator_id = $1) AND device_id > $2"
                ' ORDER BY device_id COLLATE "C" LIMIT $3',
                operator_id,
                after,
                limit,
            )
            keys = await conn.fetch(
                "SELECT * FROM device_keys WHERE device_id = ANY($1::text[])"
                " ORDER BY added_at, key_id",
                [r["device_id"] for r in rows],
            )
        by_device: dict[str, list[asyncpg.Record]] = {}
        for k in keys:
            by_device.setdefault(k["device_id"], []).append(k)
        return [_device_of(r, by_device.get(r["device_id"], [])) for r in rows]

    async def register(self, device: Device, key: DeviceKey) -> tuple[Device, bool]:
        """Insert `device` with its first key; (the stored device, created). An existing
        device is returned unchanged when it has that key (a repeated registration)."""
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.execute(
                "INSERT INTO devices (device_id, operator_id, allowed_stop_ids,"
                " allowed_route_ids, status, registered_at) VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (device_id) DO NOTHING",
                device.device_id,
                device.operator_id,
                sorted(device.allowed_stop_ids),
                sorted(device.allowed_route_ids),
                device.status.value,
                device.registered_at,
            )
            created = inserted.endswith(" 1")
            if created:
                await self._insert_key(conn, device.device_id, key)
            stored = await self.load(device.device_id, conn)
        assert stored is not None
        if created:
            await self.publish(stored)
        return stored, created

    async def _insert_key(self, conn: asyncpg.Connection, device_id: str, key: DeviceKey) -> None:
        await conn.execute(
            "INSERT INTO device_keys (device_id, key_id, public_key, status, added_at)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (device_id, key_id) DO NOTHING",
            device_id,
            key.key_id,
            key.public_key,
            key.status.value,
            key.added_at,
        )

    async def revoke(self, device_id: str, reason: str, at: datetime) -> Device | None:
        """Mark the device revoked (a revoked device stays revoked, with its first reason)."""
        return await self._update(
            device_id,
            "UPDATE devices SET status = 'revoked', revoked_at = coalesce(revoked_at, $2),"
            " revoked_reason = CASE WHEN status = 'revoked' THEN revoked_reason ELSE $3 END"
            " WHERE device_id = $1",
            at,
            reason,
        )

    async def retire_key(self, device_id: str, key_id: str, at: datetime) -> Device | None:
        """Retire one of the device's keys (a retired key stays retired)."""
        return await self._update(
            device_id,
            "UPDATE device_keys SET status = 'retired', retired_at = coalesce(retired_at, $3)"
            " WHERE device_id = $1 AND key_id = $2",
            key_id,
            at,
        )

    async def set_scope(
        self, device_id: str, stop_ids: Sequence[str], route_ids: Sequence[str]
    ) -> Device | None:
        """Replace the stops and routes the device may tap at."""
        return await self._update(
            device_id,
            "UPDATE devices SET allowed_stop_ids = $2, allowed_route_ids = $3 WHERE device_id = $1",
            sorted(set(stop_ids)),
            sorted(set(route_ids)),
        )

    async def _update(self, device_id: str, sql: str, *args: object) -> Device | None:
        """Run one UPDATE on the device's row(s) (`$1` = device id) and publish the result;
        None when the device is unknown."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT device_id FROM devices WHERE device_id = $1 FOR UPDATE", device_id
            )
            if row is None:
                return None
            await conn.execute(sql, device_id, *args)
            device = await self.load(device_id, conn)
        assert device is not None
        await self.publish(device)
        return device

    async def add_key(self, device_id: str, key: DeviceKey) -> Device | None:
        """Add a key to the device (a repeated add changes nothing)."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT device_id FROM devices WHERE device_id = $1 FOR UPDATE", device_id
            )
            if row is None:
                return None
            await self._insert_key(conn, device_id, key)
            device = await self.load(device_id, conn)
        assert device is not None
        await self.publish(device)
        return device


def now() -> datetime:
    """The registry's clock (UTC, microseconds as PostgreSQL keeps them)."""
    return datetime.now(UTC)
