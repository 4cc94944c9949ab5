"""Events and attempts in time partitions (0020), on a real server: rows already there
survive the migration, partitions are added ahead and take the new rows, rows the default
partition took are moved into the partition made for them, and P-RETENTION drops whole
partitions."""

import asyncpg
import pytest

from relay.queue.migrate import migrate
from relay.queue.partitions import Partitions, width
from relay.queue.sql import migrations

pytestmark = [pytest.mark.queue, pytest.mark.asyncio]

EVENT = "INSERT INTO events (tenant, kind, recipient) VALUES ('acme', 'delivered', $1)"


async def _where(conn: asyncpg.Connection | asyncpg.Pool, table: str) -> dict[str, int]:
    """How many rows of `table` each partition holds."""
    rows = await conn.fetch(
        f"SELECT tableoid::regclass::text AS part, count(*) FROM {table} GROUP BY 1"
    )
    return {r["part"]: r["count"] for r in rows}


async def test_rows_survive_the_migration_and_go_when_their_partition_does(
    empty_database: str,
) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        for version, _, sql in migrations():
            if version < 20:
                await conn.execute(sql)
        await conn.execute(
            "INSERT INTO messages (id, tenant, mail_from, content, size)"
            " VALUES ('00000000-0000-0000-0000-000000000001', 'acme', 'a@acme.example', '', 0)"
        )
        delivery = await conn.fetchval(
            "INSERT INTO deliveries (message_id, recipient, domain, tenant, expires_at)"
            " VALUES ('00000000-0000-0000-0000-000000000001', 'r@x.example', 'x.example',"
            " 'acme', now() + interval '1 day') RETURNING id"
        )
        await conn.execute(
            "INSERT INTO attempts (delivery_id, outcome, reply, at)"
            " VALUES ($1, 'deferred', '451 later', now() - interval '1 day')",
            delivery,
        )
        old = await conn.fetchval(
            "INSERT INTO events (tenant, kind, at) VALUES ('acme', 'deferred', now() - interval"
            " '1 day') RETURNING id"
        )
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.executemany(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            [(v, n) for v, n, _ in migrations() if v < 20],
        )
        assert "0020_partitions.sql" in await migrate(conn)
        assert await _where(conn, "events") == {"events_before_partitions": 1}
        assert await _where(conn, "attempts") == {"attempts_before_partitions": 1}
        new = await conn.fetchval(
            "INSERT INTO events (tenant, kind) VALUES ('acme', 'delivered') RETURNING id"
        )
        assert new > old  # the ids go on: webhooks read events by id
        assert await conn.fetchval("SELECT sum(delivered + deferred) FROM rates") == 2
        assert await conn.fetchval("SELECT count(*) FROM partitions") == 2
        # everything older than an hour from now: the table of the rows before the migration
        # and the partitions added since
        await conn.fetchval(
            "SELECT add_partitions('events', interval '1 minute', interval '2 minutes')"
        )
        dropped = await conn.fetchval("SELECT drop_partitions('events', now() + interval '1 hour')")
        assert dropped >= 3
        assert await _where(conn, "events") == {}
        assert await conn.fetchval("SELECT count(*) FROM attempts") == 1  # not its window
    finally:
        await conn.close()


async def test_new_rows_go_to_the_partitions_added_ahead(pool: asyncpg.Pool) -> None:
    partitions = Partitions(pool)
    await pool.execute(EVENT, "early@x.example")  # before any partition: the default
    assert list(await _where(pool, "events")) == ["events_default"]
    added = await partitions.add("events", 7 * 60.0)  # partitions of a minute, an hour ahead
    assert width(7 * 60.0) == 60 and added >= 60
    assert await partitions.add("events", 7 * 60.0) == 0  # nothing more needed yet
    await pool.execute(EVENT, "late@x.example")
    where = await _where(pool, "events")
    assert "events_default" not in where and sum(where.values()) == 2  # the early one moved
    assert await pool.fetchval("SELECT sum(delivered) FROM rates") == 2  # counted once each


async def test_retention_drops_the_partitions_past_the_window(pool: asyncpg.Pool) -> None:
    partitions = Partitions(pool)
    await partitions.add("events", 3600.0)
    await pool.execute(EVENT, "r@x.example")
    # a window of minus two hours: every partition that ends within two hours is past it
    assert await partitions.drop_older("events", -7200.0) >= 1
    assert await pool.fetchval("SELECT count(*) FROM events") == 0
    remaining = await pool.fetchval("SELECT count(*) FROM partitions WHERE parent = 'events'")
    tables = await pool.fetchval(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass"
    )
    assert tables == remaining + 1  # the registry follows the tables; the default stays
