"""What operations ask of the queue: does the database answer, and how deep is the queue
(`/healthz`, the queue gauges of `/metrics`). Both are bounded in time, for a scrape or a
probe never hangs on a database that stopped answering."""

import asyncio
from dataclasses import dataclass

import asyncpg

from relay.queue.sql import QUERIES

TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class QueueDepth:
    queued: int
    """Deliveries waiting, due or not, that are not held."""
    due: int
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
        async with asyncio.timeout(TIMEOUT_SECONDS):
            row = await self._pool.fetchrow(QUERIES["queue_depth"])
        return QueueDepth(row["queued"], row["due"], row["held"], row["oldest_seconds"])
