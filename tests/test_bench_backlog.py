"""The backlog bench writes rows shaped like the relay's own: a message stored by the
relay's store and refused twice through its lease and recording, against one written by
`bench.backlog.fill_backlog`, column by column (which are set, and to what where it
matters)."""

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from bench.backlog import BACKLOG_DOMAIN, fill_backlog
from relay.queue.deliveries import Attempt, DeliveryQueue
from relay.queue.store import NewMessage, insert_messages

pytestmark = [pytest.mark.queue, pytest.mark.asyncio]

COMPARED = {
    "messages": "SELECT * FROM messages WHERE tenant = $1",
    "deliveries": "SELECT * FROM deliveries WHERE tenant = $1",
    "attempts": "SELECT a.* FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
    " WHERE d.tenant = $1",
}
SAME_VALUE = {"state", "attempts", "domain", "outcome", "lease_owner", "hold", "bulk"}


async def _refused_twice_by_the_relay(pool: asyncpg.Pool) -> None:
    message = NewMessage("relay", "load@bench.example", (f"rcpt@{BACKLOG_DOMAIN}",),
                         b"Subject: x\r\n\r\nx\r\n", "<m@bench.example>", "127.0.0.1")  # fmt: skip
    async with pool.acquire() as conn:
        await insert_messages(conn, [message], 3600)
    queue = DeliveryQueue(pool, "bench")
    for _ in range(2):
        (lease,) = await queue.lease_due(20, 10, ["relay"], [], 100)
        refused = Attempt(lease, "queued", datetime.now(UTC) - timedelta(seconds=1),
                          "451 4.7.0 Try again later", "127.0.0.1", "deferred")  # fmt: skip
        assert await queue.recorder().finish([refused], BACKLOG_DOMAIN, {}) == {lease.id}


def _shape(row: Any) -> dict[str, object]:
    return {k: (v if k in SAME_VALUE else v is None) for k, v in dict(row).items()}


async def test_the_benchs_backlog_rows_match_the_relays(pool: asyncpg.Pool) -> None:
    await _refused_twice_by_the_relay(pool)
    async with pool.acquire() as conn:
        await fill_backlog(conn, 1, datetime.now(UTC))
    await pool.execute("UPDATE messages SET tenant = 'bench-rows' WHERE tenant = 'bench'")
    await pool.execute("UPDATE deliveries SET tenant = 'bench-rows' WHERE tenant = 'bench'")
    for table, query in COMPARED.items():
        relay = [_shape(r) for r in await pool.fetch(query, "relay")]
        bench = [_shape(r) for r in await pool.fetch(query, "bench-rows")]
        assert relay and bench == relay, table
