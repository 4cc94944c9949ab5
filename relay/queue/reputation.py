"""The state P-COMPLAINT and P-BOUNCE act on: the hourly rates per tenant and site,
each pair's throttle factor, the suspensions of bulk sending, and the holds they put on
queued bulk deliveries. A round and an admin's change each run in one transaction
(`ReputationStore.transaction`), serialised by the single row of `reputation_rounds`."""

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from relay.queue.events import Event, record
from relay.queue.sql import QUERIES

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Suspension:
    tenant: str
    rule: str  # P-COMPLAINT | P-BOUNCE | manual
    reason: str
    since: datetime
    suspended_by: str | None = None


class _Reads:
    def __init__(self, conn: asyncpg.Connection | asyncpg.Pool) -> None:
        self._conn = conn

    async def counts(self, window_seconds: float, tenant: str | None) -> list[Row]:
        """Per tenant and site: delivered, hard_bounced, complained over the window
        (buckets that began after the tenant's last resume); one tenant, or all if None."""
        return list(await self._conn.fetch(QUERIES["reputation_counts"], window_seconds, tenant))

    async def throttles(self, tenant: str | None) -> list[Row]:
        return list(await self._conn.fetch(QUERIES["reputation_throttles"], tenant))

    async def open_suspensions(self, tenant: str | None = None) -> list[Suspension]:
        rows = await self._conn.fetch(QUERIES["reputation_suspensions_open"], tenant)
        return [Suspension(**dict(r)) for r in rows]


class ReputationWork(_Reads):
    """One transaction of a round or of an admin's change."""

    async def claim_round(self, min_gap_seconds: float) -> bool:
        """Claim this round; False when another process ran one less than the gap ago."""
        return (
            await self._conn.fetchval(QUERIES["reputation_round_start"], min_gap_seconds)
            is not None
        )

    async def wait_for_round(self) -> None:
        """Wait for a round in progress, so an admin's change does not cross it."""
        await self._conn.execute(QUERIES["reputation_round_lock"])

    async def set_throttle(
        self, tenant: str, site: str, factor: float, rule: str, reason: str
    ) -> None:
        if factor >= 1.0:
            await self._conn.execute(QUERIES["reputation_throttle_clear"], tenant, site)
        else:
            await self._conn.execute(
                QUERIES["reputation_throttle_set"], tenant, site, factor, rule, reason
            )

    async def suspend(self, tenant: str, rule: str, reason: str, by: str | None) -> datetime | None:
        """Open a suspension unless one of the tenant and rule is open; its start, or None."""
        row = await self._conn.fetchrow(QUERIES["reputation_suspend"], tenant, rule, reason, by)
        return None if row is None else row["since"]

    async def hold(self, tenant: str, hold: str) -> int:
        """Hold the tenant's queued bulk deliveries that nothing holds yet; how many."""
        return int(await self._conn.fetchval(QUERIES["reputation_hold"], tenant, hold))

    async def resume(self, tenant: str, by: str) -> list[Suspension]:
        """Close every open suspension of the tenant; those closed."""
        rows = await self._conn.fetch(QUERIES["reputation_resume"], tenant, by)
        return [Suspension(tenant, r["rule"], r["reason"], r["since"]) for r in rows]

    async def release(self, tenant: str, holds: Sequence[str], since: datetime | None) -> int:
        """Release the tenant's deliveries held under `holds`, due now, the time held since
        `since` added to their lifetime; how many, and the dispatchers are woken."""
        released = await self._conn.fetch(QUERIES["reputation_release"], tenant, list(holds), since)
        if released:
            await self._conn.execute(QUERIES["notify_queue"])
        return len(released)

    async def record(self, events: Sequence[Event]) -> None:
        await record(self._conn, events)


class ReputationStore(_Reads):
    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self._pool = pool

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[ReputationWork]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield ReputationWork(conn)

    async def history(self, tenant: str, limit: int) -> list[Row]:
        """The tenant's last suspensions, open or resumed, newest first."""
        return list(await self._pool.fetch(QUERIES["reputation_suspensions_of"], tenant, limit))

    async def held(self, holds: Sequence[str], tenant: str | None) -> list[Row]:
        """Queued deliveries per tenant and hold."""
        return list(await self._pool.fetch(QUERIES["reputation_held"], list(holds), tenant))
