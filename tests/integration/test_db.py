"""Replicas of a service start together: creating the schema and migrating it at the same
moment must not fail (IF NOT EXISTS alone races in PostgreSQL)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from clearway.db import create_pool, migrate

pytestmark = pytest.mark.integration
MIGRATIONS = ["CREATE TABLE things (x integer PRIMARY KEY)", "INSERT INTO things VALUES (1)"]


async def start_replica(dsn: str, schema: str) -> int:
    pool = await create_pool(dsn, schema)
    try:
        return await migrate(pool, MIGRATIONS)
    finally:
        await pool.close()


async def test_replicas_creating_and_migrating_one_schema_together_all_succeed(
    pg_dsn: str, unique_name: str
) -> None:
    schemas = [f"{unique_name}_{i}" for i in range(10)]
    try:
        for schema in schemas:
            versions = await asyncio.gather(*(start_replica(pg_dsn, schema) for _ in range(3)))
            assert versions == [2, 2, 2]
        conn = await asyncpg.connect(pg_dsn)
        try:
            for schema in schemas:
                assert await conn.fetchval(f"SELECT count(*) FROM {schema}.things") == 1
                applied = await conn.fetchval(f"SELECT count(*) FROM {schema}.schema_version")
                assert applied == 2
        finally:
            await conn.close()
    finally:
        conn = await asyncpg.connect(pg_dsn)
        try:
            for schema in schemas:
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()
