"""What `relay status` reads: the server it talks to, and one consistent snapshot (a
read-only repeatable-read transaction) of the queue, destinations, rates, suspensions,
campaigns and sites, as rows for the command to present."""

from collections.abc import Mapping
from typing import Any

import asyncpg

from relay.queue.sql import QUERIES

Row = dict[str, Any]

COUNTED_UP_TO = 10_000
"""Up to this many waiting deliveries, the queue's sections are counted row by row."""
SAMPLE_ROWS = 100_000
"""Beyond that, they come from a sample of the table's pages of about this many rows."""
_COUNTS = ("deliveries", "messages", "due", "scheduled", "in_flight", "held")


class StatusReader:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def server(self) -> Mapping[str, Any]:
        """version, database and in_recovery of the server (one round trip)."""
        return dict(await self._pool.fetchrow(QUERIES["status_database"]))

    async def snapshot(self, top: int, sample_rows: int = SAMPLE_ROWS) -> dict[str, Any]:
        """Every section's rows, read at one instant: `now`, `rates_since`, `queue` (by
        state), `oldest`, `destinations` (the `top` busiest), `held`, `rates`,
        `suspensions`, `campaigns`, `sites`, `throttles`; `waiting` as the kept counts
        say, and `sample_percent`, the share of the table the queue's sections were
        estimated from (None: counted, the queue being short)."""
        async with self._pool.acquire() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):

                async def rows(name: str, *args: object) -> list[Row]:
                    return [dict(r) for r in await conn.fetch(QUERIES[name], *args)]

                clock = await conn.fetchrow(QUERIES["status_clock"])
                oldest = await conn.fetchrow(QUERIES["status_oldest"])
                kept = await conn.fetchrow(QUERIES["status_kept_counts"], sample_rows)
                sample = kept["sample_percent"] if kept["waiting"] > COUNTED_UP_TO else None
                if sample is None:
                    queue = await rows("status_queue")
                    destinations = await rows("status_destinations", top)
                    held = await rows("status_held")
                else:
                    queue = _scaled(await rows("status_queue_sampled", sample), sample)
                    destinations = _scaled(
                        await rows("status_destinations_sampled", sample, top), sample
                    )
                    held = _scaled(await rows("status_held_sampled", sample), sample)
                return {
                    "now": clock["now"],
                    "rates_since": clock["rates_since"],
                    "waiting": kept["waiting"],
                    "sample_percent": sample,
                    "queue": queue,
                    "oldest": dict(oldest) if oldest else None,
                    "destinations": destinations,
                    "held": held,
                    "rates": await rows("status_rates", clock["rates_since"]),
                    "suspensions": await rows("status_suspensions"),
                    "campaigns": await rows("status_campaigns"),
                    "sites": await rows("status_sites"),
                    "throttles": await rows("status_throttles"),
                }


def _scaled(rows: list[Row], percent: float) -> list[Row]:
    """The counts of rows read from a `percent` sample, scaled to the whole table."""
    return [
        {k: round(v * 100 / percent) if k in _COUNTS else v for k, v in row.items()} for row in rows
    ]
