"""What `relay status` reads: the server it talks to, and one consistent snapshot (a
read-only repeatable-read transaction) of the queue, destinations, rates, suspensions,
campaigns and sites, as rows for the command to present."""

from collections.abc import Mapping
from typing import Any

import asyncpg

from relay.queue.sql import QUERIES

Row = dict[str, Any]


class StatusReader:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def server(self) -> Mapping[str, Any]:
        """version, database and in_recovery of the server (one round trip)."""
        return dict(await self._pool.fetchrow(QUERIES["status_database"]))

    async def snapshot(self, top: int) -> dict[str, Any]:
        """Every section's rows, read at one instant: `now`, `rates_since`, `queue` (by
        state), `oldest`, `destinations` (the `top` busiest), `held`, `rates`,
        `suspensions`, `campaigns`, `sites`, `throttles`."""
        async with self._pool.acquire() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):

                async def rows(name: str, *args: object) -> list[Row]:
                    return [dict(r) for r in await conn.fetch(QUERIES[name], *args)]

                clock = await conn.fetchrow(QUERIES["status_clock"])
                oldest = await conn.fetchrow(QUERIES["status_oldest"])
                return {
                    "now": clock["now"],
                    "rates_since": clock["rates_since"],
                    "queue": await rows("status_queue"),
                    "oldest": dict(oldest) if oldest else None,
                    "destinations": await rows("status_destinations", top),
                    "held": await rows("status_held"),
                    "rates": await rows("status_rates", clock["rates_since"]),
                    "suspensions": await rows("status_suspensions"),
                    "campaigns": await rows("status_campaigns"),
                    "sites": await rows("status_sites"),
                    "throttles": await rows("status_throttles"),
                }
