"""The queue's depth as operations read it (`/metrics`), from the counts the triggers keep,
checked against a count of the rows after every kind of change the relay makes: messages
stored in batches, deliveries held and released, delivered, bounced, retried, and a
message deleted with its deliveries."""

import asyncpg
import pytest

from relay.queue import health
from relay.queue.health import QueueDepth, QueueHealth
from relay.queue.store import NewMessage, insert_messages

pytestmark = [pytest.mark.queue, pytest.mark.asyncio]


def _message(n: int, recipients: int) -> NewMessage:
    return NewMessage(
        tenant="acme",
        mail_from="app@acme.example",
        recipients=tuple(f"r{i}@inbox{n}.example" for i in range(recipients)),
        content=f"Subject: {n}\r\n\r\nbody {n}\r\n".encode(),
        header_message_id=f"<{n}@acme.example>",
    )


async def _counted(pool: asyncpg.Pool) -> tuple[int, int, int]:
    """(waiting, due, held) counted row by row: the definition."""
    row = await pool.fetchrow(
        "SELECT count(*) FILTER (WHERE hold IS NULL) AS queued,"
        " count(*) FILTER (WHERE hold IS NULL AND next_attempt_at <= now()) AS due,"
        " count(*) FILTER (WHERE hold IS NOT NULL) AS held"
        " FROM deliveries WHERE state = 'queued'"
    )
    return row["queued"], row["due"], row["held"]


async def _agree(pool: asyncpg.Pool) -> QueueDepth:
    depth = await QueueHealth(pool).depth()
    assert (depth.queued, depth.due, depth.held) == await _counted(pool)
    return depth


async def test_the_kept_counts_follow_every_change(pool: asyncpg.Pool) -> None:
    assert await _agree(pool) == QueueDepth(0, 0, 0, 0.0)
    async with pool.acquire() as conn:
        await insert_messages(conn, [_message(n, 3) for n in range(10)], 3600)
        await insert_messages(conn, [_message(10, 5)], 3600)
    depth = await _agree(pool)
    assert (depth.queued, depth.held) == (35, 0) and depth.oldest_seconds >= 0

    await pool.execute(
        "UPDATE deliveries SET hold = 'manual-suspension' WHERE domain = 'inbox1.example'"
    )
    await pool.execute("UPDATE deliveries SET next_attempt_at = now() + interval '1 hour'"
                       " WHERE domain = 'inbox2.example'")  # fmt: skip
    assert (await _agree(pool)).held == 3
    await pool.execute("UPDATE deliveries SET state = 'delivered' WHERE domain = 'inbox3.example'")
    await pool.execute("UPDATE deliveries SET state = 'bounced', hold = NULL"
                       " WHERE domain = 'inbox1.example' AND recipient LIKE 'r0@%'")  # fmt: skip
    await pool.execute("UPDATE deliveries SET hold = NULL WHERE domain = 'inbox1.example'")
    await pool.execute("DELETE FROM messages WHERE header_message_id = '<10@acme.example>'")
    depth = await _agree(pool)
    assert (depth.queued, depth.held) == (35 - 3 - 1 - 5, 0)
    kept = await pool.fetchval("SELECT count(*) FROM queue_counts")
    assert kept == 16  # spread over the writers' slots, summed by the reader


async def test_a_long_queue_estimates_its_due_deliveries(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past `DUE_COUNTED_UP_TO` waiting deliveries the due ones are the planner's estimate,
    never more than are waiting; the waiting and held counts stay exact."""
    async with pool.acquire() as conn:
        await insert_messages(conn, [_message(n, 4) for n in range(50)], 3600)
    await pool.execute("ANALYZE deliveries")
    monkeypatch.setattr(health, "DUE_COUNTED_UP_TO", 10)
    depth = await QueueHealth(pool).depth()
    assert depth.queued == 200 and depth.held == 0
    assert 0 < depth.due <= 200
