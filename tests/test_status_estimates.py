"""`relay status` on a long queue, on a real server: past COUNTED_UP_TO waiting deliveries
its queue sections come from a sample of the table, scaled up, and the oldest message is
the head of an index, so the command does not read every queued row."""

import asyncpg
import pytest

from relay.queue.status import COUNTED_UP_TO, StatusReader

pytestmark = [pytest.mark.queue, pytest.mark.asyncio]


async def _queue(pool: asyncpg.Pool, messages: int) -> None:
    """`messages` messages of 3 deliveries each, stored together as the relay stores them:
    two due to x.example, one held."""
    await pool.execute(
        "INSERT INTO messages (id, tenant, mail_from, content, size, received_at)"
        " SELECT gen_random_uuid(), 'acme', 'a@acme.example', '', 0,"
        " now() - make_interval(secs => $1 - g) FROM generate_series(1, $1) AS g",
        messages,
    )
    await pool.execute(
        "INSERT INTO deliveries (message_id, recipient, domain, tenant, expires_at, hold)"
        " SELECT m.id, 'r' || n || '@x.example', 'x.example', 'acme', now() + interval '1 day',"
        " CASE WHEN n = 3 THEN 'manual-suspension' END"
        " FROM messages AS m, generate_series(1, 3) AS n ORDER BY m.received_at, n"
    )
    await pool.execute("ANALYZE deliveries")


async def test_a_short_queue_is_counted(pool: asyncpg.Pool) -> None:
    await _queue(pool, 100)
    snapshot = await StatusReader(pool).snapshot(10)
    assert snapshot["sample_percent"] is None and snapshot["waiting"] == 300
    due = next(r for r in snapshot["queue"] if r["state"] == "due")
    assert (due["deliveries"], due["messages"]) == (200, 100)


async def test_a_long_queue_is_estimated_from_a_sample(pool: asyncpg.Pool) -> None:
    messages = COUNTED_UP_TO  # 3 deliveries each: past the limit
    await _queue(pool, messages)
    snapshot = await StatusReader(pool).snapshot(10, sample_rows=messages)  # a third
    assert snapshot["waiting"] == 3 * messages
    assert 20 < snapshot["sample_percent"] < 50
    states = {r["state"]: r for r in snapshot["queue"]}
    assert abs(states["due"]["deliveries"] - 2 * messages) < 0.3 * 2 * messages
    assert abs(states["due"]["messages"] - messages) < 0.3 * messages
    assert abs(states["held"]["deliveries"] - messages) < 0.3 * messages
    (domain,) = snapshot["destinations"]
    assert abs(domain["due"] - 2 * messages) < 0.3 * 2 * messages
    (held,) = snapshot["held"]
    assert held["hold"] == "manual-suspension"
    oldest = snapshot["oldest"]
    assert oldest["age_seconds"] >= messages - 2  # the first message stored
