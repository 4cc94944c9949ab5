"""Apply the schema migrations in order, once, safely from several processes at a time.

An advisory lock serialises concurrent starters (several relay hosts on one database);
each migration runs in its own transaction with its version row, so a failure leaves the
schema at the last complete version.
"""

import logging

import asyncpg

from relay.queue.sql import migrations

log = logging.getLogger(__name__)
_LOCK_KEY = 0x72656C6179  # "relay"


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply what is missing; return the names of the files applied."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            log.info("applied migration %s", name)
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied


async def migrate_pool(pool: asyncpg.Pool) -> list[str]:
    """`migrate` on one of the pool's connections (`relay migrate`)."""
    async with pool.acquire() as conn:
        return await migrate(conn)
