"""The shared state of destination sites (`sites`): each site's token bucket and adaptive
rate, its run of failed connections and its pause. Every process and host delivering to a
site reads and writes the same row; its lock serialises them."""

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from relay.queue.sql import QUERIES


@dataclass(frozen=True)
class Taken:
    granted: bool
    rate: float
    """Messages per minute the site is allowed now."""
    tokens: float
    """What is left in the bucket after this take."""


@dataclass(frozen=True)
class Adapted:
    rate: float
    paused_until: datetime | None


class SiteStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def ensure(self, site: str, ceiling: float) -> None:
        """The site's row, created at its ceiling if it has none."""
        await self._pool.execute(QUERIES["site_ensure"], site, ceiling)

    async def paused_until(self, site: str) -> datetime | None:
        until: datetime | None = await self._pool.fetchval(QUERIES["site_paused_until"], site)
        return until

    async def take(self, site: str, ceiling: float, burst: float) -> Taken:
        """Refill the bucket for the time passed (rate held under `ceiling`, at most
        `burst` tokens), then take one token if a whole one is there."""
        row = await self._pool.fetchrow(QUERIES["site_take"], site, ceiling, burst)
        return Taken(bool(row["granted"]), float(row["rate"]), float(row["tokens"]))

    async def adapt(
        self,
        site: str,
        ceiling: float,
        factor: float,
        increase: float,
        floor: float,
        connected: bool,
        pause_after: int,
        pause_seconds: float,
    ) -> Adapted | None:
        """AIMD: rate * factor + increase, between `floor` and `ceiling`; a failed
        connection counts toward `pause_after` in a row, which pause the site for
        `pause_seconds`. None when the site has no row."""
        row = await self._pool.fetchrow(
            QUERIES["site_adapt"], site, ceiling, factor, increase, floor, connected,
            pause_after, pause_seconds,
        )  # fmt: skip
        return None if row is None else Adapted(float(row["rate"]), row["paused_until"])
