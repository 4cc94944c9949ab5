"""What operations ask of the queue: does the database answer, and how deep is the queue
(`/healthz`, the queue gauges of `/metrics`). Both are bounded in time, for a scrape or a
probe never hangs on a database that stopped answering, and neither grows with the queue:
the waiting and held counts are kept by triggers as deliveries change (migration 0017),
the oldest waiting delivery is the head of an index, and the due ones are counted only
while the queue is short (`DUE_COUNTED_UP_TO`), estimated by the planner beyond."""

import asyncio
import json
from dataclasses import dataclass

import asyncpg

from relay.queue.sql import QUERIES

TIMEOUT_SECONDS = 2.0
DUE_COUNTED_UP_TO = 10_000
"""Up to this many waiting deliveries, the due ones are counted exactly (a few ms)."""


@dataclass(frozen=True)
class QueueDepth:
    queued: int
    """Deliveries waiting, due or not, that are not held."""
    due: int
    """Exact while `queued` is at most `DUE_COUNTED_UP_TO`, the planner's estimate beyond."""
    held: int
    oldest_seconds: float
    """Age of the oldest message with a delivery waiting (0 when none)."""


class QueueHealth:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def ping(self) -> None:
        """A round trip; raises `DATABASE_ERRORS` when the database does not answer."""
        async with asyncio.timeout(TIMEOUT_SECONDS):
            await self._pool.fetchval("SELECT 1")

    async def depth(self) -> QueueDepth:
        async with asyncio.timeout(TIMEOUT_SECONDS), self._pool.acquire() as conn:
            counts = await conn.fetchrow(QUERIES["queue_counts"])
            queued = counts["queued"]
            if queued <= DUE_COUNTED_UP_TO:
                due = await conn.fetchval(QUERIES["queue_due"])
            else:
                (plan,) = json.loads(await conn.fetchval(QUERIES["queue_due_estimate"]))
                due = min(queued, int(plan["Plan"]["Plan Rows"]))
            oldest = await conn.fetchval(QUERIES["queue_oldest"])
        return QueueDepth(queued, due, counts["held"], oldest or 0.0)
