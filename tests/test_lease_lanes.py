"""Leasing that a backlog cannot stall, on a real server: a tenant's fresh mail and its
retries are taken in turns, a lease reads only the head of each lane, a leased delivery is
not due while its lease lasts, and a destination's due backlog is moved to the times it
can take it."""

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from relay.queue.deliveries import DeliveryQueue
from relay.queue.sql import QUERIES

pytestmark = [pytest.mark.queue, pytest.mark.asyncio]


async def _backlog(
    pool: asyncpg.Pool, count: int, domain: str, *, answered: bool, minutes: int = 60
) -> None:
    """`count` deliveries of acme to `domain` due for about `minutes`, in the order they
    were made; `answered` ones carry a last reply (retries), the others never had one."""
    await pool.execute(
        "WITH m AS (INSERT INTO messages (id, tenant, mail_from, content, size)"
        " SELECT gen_random_uuid(), 'acme', 'a@acme.example', '\\x00'::bytea, 1"
        " FROM generate_series(1, $2) RETURNING id)"
        " INSERT INTO deliveries (message_id, recipient, domain, tenant, expires_at,"
        " next_attempt_at, last_reply)"
        " SELECT m.id, 'r@' || $3, $3, 'acme', now() + interval '5 days',"
        " now() - make_interval(mins => $1) + row_number() OVER () * interval '1 ms',"
        " CASE WHEN $4 THEN '451 4.7.0 try later' END FROM m",
        minutes,
        count,
        domain,
        answered,
    )


async def _lease(
    pool: asyncpg.Pool, limit: int, saturated: list[str], head: int = 1000
) -> list[asyncpg.Record]:
    return await pool.fetch(
        QUERIES["lease_due"], "w", uuid.uuid4(), 30, limit, ["acme"], saturated, limit, head
    )


async def test_fresh_mail_is_not_behind_the_retried_backlog(pool: asyncpg.Pool) -> None:
    """Retries due for an hour and a message just queued: the first lease of two takes one
    of each, as Postfix alternates its deferred and incoming queues."""
    await _backlog(pool, 300, "slow.example", answered=True)
    await _backlog(pool, 1, "fresh.example", answered=False, minutes=0)
    rows = await _lease(pool, 2, [])
    assert sorted(r["domain"] for r in rows) == ["fresh.example", "slow.example"]


async def test_a_lease_reads_only_the_head_of_a_lane(pool: asyncpg.Pool) -> None:
    """With more saturated deliveries at the head of the lane than a lease reads, the one
    behind them waits (the lease's cost stays bounded) until the backlog is deferred."""
    await _backlog(pool, 50, "busy.example", answered=False)
    await _backlog(pool, 1, "other.example", answered=False, minutes=30)
    assert await _lease(pool, 10, ["acme/busy.example"], head=20) == []
    rows = await _lease(pool, 10, ["acme/busy.example"], head=100)
    assert [r["domain"] for r in rows] == ["other.example"]


async def test_a_leased_delivery_is_not_due_until_its_lease_would_expire(
    pool: asyncpg.Pool,
) -> None:
    await _backlog(pool, 1, "x.example", answered=False)
    (row,) = await _lease(pool, 1, [])
    due = await pool.fetchrow(
        "SELECT next_attempt_at, lease_expires_at FROM deliveries WHERE id = $1", row["id"]
    )
    assert due["next_attempt_at"] == due["lease_expires_at"] > datetime.now(UTC)
    queue = DeliveryQueue(pool, "w")
    await queue.release_all()
    assert [r["id"] for r in await _lease(pool, 1, [])] == [row["id"]]


async def test_a_destinations_backlog_is_scheduled_at_its_rate(pool: asyncpg.Pool) -> None:
    """Past the first `keep`, the oldest due deliveries are moved one per interval from
    the start, oldest first, with no attempt recorded; fresh ones stay fresh."""
    await _backlog(pool, 30, "busy.example", answered=False)
    await _backlog(pool, 5, "other.example", answered=False, minutes=30)
    queue = DeliveryQueue(pool, "w")
    start = datetime.now(UTC) + timedelta(seconds=5)
    moved = await queue.defer(("acme", "busy.example"), start, 0.5, keep=10, limit=15)
    assert moved == 15
    rows = await pool.fetch(
        "SELECT next_attempt_at, last_reply, attempts FROM deliveries"
        " WHERE domain = 'busy.example' ORDER BY id"
    )
    assert all(r["next_attempt_at"] < start for r in rows[:10] + rows[25:])  # kept, not reached
    times = [r["next_attempt_at"] for r in rows[10:25]]
    assert times == [start + timedelta(seconds=0.5 * n) for n in range(1, 16)]
    assert {(r["last_reply"], r["attempts"]) for r in rows} == {(None, 0)}
    assert await pool.fetchval("SELECT count(*) FROM attempts") == 0
    others = await pool.fetchval(
        "SELECT count(*) FROM deliveries WHERE domain = 'other.example' AND next_attempt_at < now()"
    )
    assert others == 5


async def test_a_paused_sites_backlog_waits_spread_after_the_pause(pool: asyncpg.Pool) -> None:
    await _backlog(pool, 200, "down.example", answered=True)
    queue = DeliveryQueue(pool, "w")
    until = datetime.now(UTC) + timedelta(minutes=5)
    reply = "451 4.4.5 site down.example is paused after failed connections"
    assert await queue.defer(("acme", "down.example"), until, 150.0, reply=reply) == 200
    rows = await pool.fetch("SELECT next_attempt_at, last_reply FROM deliveries")
    times = [r["next_attempt_at"] for r in rows]
    assert all(until <= t <= until + timedelta(seconds=150) for t in times)
    assert len(set(times)) > 100  # spread, not one instant
    assert {r["last_reply"] for r in rows} == {reply}
    assert await _lease(pool, 10, []) == []
