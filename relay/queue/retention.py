"""P-RETENTION's statements: each purges at most one batch of what is past its window, in
its own short transaction, skipping rows another process is purging."""

from typing import Literal

import asyncpg

from relay.queue.sql import QUERIES

Purgeable = Literal["envelopes", "bodies", "events", "reports"]
_STATEMENTS: dict[Purgeable, str] = {
    "envelopes": "retention_delete_envelopes",
    "bodies": "retention_purge_bodies",
    "events": "retention_delete_events",
    "reports": "retention_delete_reports",
}


class RetentionStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def purge_batch(self, what: Purgeable, window_seconds: float, batch: int) -> int:
        """Purge up to `batch` rows of `what` older than the window; how many went."""
        return int(await self._pool.fetchval(QUERIES[_STATEMENTS[what]], window_seconds, batch))
