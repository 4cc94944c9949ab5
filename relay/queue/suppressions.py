"""The suppression list as the policy reads it (P-SUPPRESS): one look-up per recipient."""

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from relay.queue.sql import QUERIES


@dataclass(frozen=True)
class Suppression:
    reason: str
    source: str
    since: datetime


class SuppressionLookup:
    """Reads the list through a pool; raises `DATABASE_ERRORS` when the database is out of
    reach, for the caller to answer 451."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def find(self, tenant: str, address: str, key: str | None) -> Suppression | None:
        """The entry of `address` for `tenant`, by the address or by its keyed hash `key` (an
        erased address, P-ERASURE): one primary-key look-up for both."""
        row = await self._pool.fetchrow(QUERIES["suppression_of"], tenant, address, key)
        if row is None:
            return None
        return Suppression(row["reason"], row["source"], row["created_at"])
