"""PostgreSQL plumbing: one schema per service, pools pinned to it, forward-only migrations."""

from __future__ import annotations

import re
from collections.abc import Sequence

import asyncpg

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class SchemaNameError(ValueError):
    """A schema name that is not a plain lower-case identifier."""

    code = "BAD_SCHEMA_NAME"


def checked_schema(schema: str) -> str:
    """`schema` if it is safe to interpolate as an identifier, else SchemaNameError."""
    if not _SCHEMA_NAME.match(schema):
        raise SchemaNameError(f"invalid schema name {schema!r}")
    return schema


async def create_pool(dsn: str, schema: str, min_size: int = 1, max_size: int = 5) -> asyncpg.Pool:
    """A pool whose connections use `schema` (created when missing) as their search path."""
    schema = checked_schema(schema)
    conn = await asyncpg.connect(dsn)
    try:
        # IF NOT EXISTS does not stop two sessions creating the schema at the same moment
        # (replicas starting together): serialise them on an advisory lock.
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"schema:{schema}")
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema, "application_name": f"clearway-{schema}"},
    )
    assert pool is not None
    return pool


async def migrate(pool: asyncpg.Pool, migrations: Sequence[str]) -> int:
    """Apply the migrations not yet applied, in order, in one transaction.

    `migrations[i]` is version i+1; never edit or reorder a released one, only append.
    Returns the schema version after migrating.
    """
    async with pool.acquire() as conn, conn.transaction():
        # One migrator at a time per schema, even with several replicas starting together
        # (the advisory lock also covers creating schema_version itself).
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('migrate:' || current_schema()))")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
        for version, sql in enumerate(migrations, start=1):
            if version <= current:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
    return len(migrations)
