"""The time partitions of `events` and `attempts` (0020_partitions.sql): added ahead of
the rows that will fill them, dropped whole by P-RETENTION once every row in them is past
its window, so the tables keep the size of what is kept instead of growing with dead rows.

A partition spans a twelfth of the window it serves (at least a minute, at most a week):
about thirteen partitions of each table exist at a time, few enough that a query without a
time bound (an erasure, a delivery's attempts) reads each one's index cheaply.
"""

import asyncpg

from relay.queue.sql import QUERIES

MIN_WIDTH = 60.0
MAX_WIDTH = 7 * 86400.0
AHEAD_SECONDS = 3600.0
"""Partitions exist at least this far ahead (and three widths), so that a relay whose
retention rounds stop for a while still writes into partitions, not the default one."""


def width(window: float) -> float:
    """Seconds a partition spans, for rows kept `window` seconds."""
    return min(MAX_WIDTH, max(MIN_WIDTH, window / 12))


class Partitions:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(self, table: str, window: float) -> int:
        """Add the partitions `table` needs ahead of now; how many were added."""
        seconds = width(window)
        ahead = max(AHEAD_SECONDS, 3 * seconds)
        added: int = await self._pool.fetchval(QUERIES["partitions_add"], table, seconds, ahead)
        return added

    async def drop_older(self, table: str, seconds: float) -> int:
        """Drop the partitions of `table` whose rows are all older than `seconds`."""
        dropped: int = await self._pool.fetchval(QUERIES["partitions_drop"], table, seconds)
        return dropped
