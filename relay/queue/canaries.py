"""P-CANARY's state: campaigns (`campaigns`), the holds on their deliveries while a canary
runs, and the settings the holding trigger reads. A settle, a judgement or an admin's
decision runs in one transaction (`CanaryStore.transaction`) on the campaign's locked row."""

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from relay.queue.sql import QUERIES

Row = Mapping[str, Any]


class _Reads:
    def __init__(self, conn: asyncpg.Connection | asyncpg.Pool) -> None:
        self._conn = conn

    async def count_held(self, tenant: str, campaign: str, holds: Sequence[str]) -> int:
        return int(
            await self._conn.fetchval(QUERIES["canary_count_held"], tenant, campaign, list(holds))
        )

    async def rates(self, tenant: str, campaign: str, started_at: datetime) -> Row:
        """The campaign's counts since its current run started."""
        return dict(
            await self._conn.fetchrow(QUERIES["canary_rates"], tenant, campaign, started_at)
        )


class CanaryWork(_Reads):
    """One transaction on one campaign."""

    async def ensure(self, tenant: str, campaign: str) -> None:
        await self._conn.execute(QUERIES["canary_ensure"], tenant, campaign)

    async def locked(self, tenant: str, campaign: str) -> Row | None:
        """The campaign's row, locked until the transaction ends; None if there is none."""
        return await self._conn.fetchrow(QUERIES["canary_lock"], tenant, campaign)

    async def event(self, tenant: str, kind: str, campaign: str, detail: str) -> None:
        await self._conn.execute(QUERIES["canary_event"], tenant, kind, campaign, detail)

    async def release(self, tenant: str, campaign: str, holds: Sequence[str]) -> int:
        """Make the deliveries under `holds` due now and wake the workers; how many."""
        count = int(
            await self._conn.fetchval(QUERIES["canary_release"], tenant, campaign, list(holds))
        )
        if count:
            await self._conn.execute(QUERIES["notify_queue"])  # now, not at their poll
        return count

    async def decline(
        self, tenant: str, campaign: str, holds: Sequence[str], reply: str, detail: str
    ) -> int:
        """End the deliveries under `holds` with `reply`, an event each; how many."""
        return int(
            await self._conn.fetchval(
                QUERIES["canary_decline"], tenant, campaign, list(holds), reply, detail
            )
        )

    async def decide(
        self, row: Row, state: str, recipients: int, held: int, by: str, reason: str
    ) -> None:
        await self._conn.execute(
            QUERIES["canary_decide"], row["tenant"], row["campaign"], state, recipients,
            row["canary_size"], held, row["window_ends"], by, reason,
        )  # fmt: skip

    async def move(self, tenant: str, campaign: str, from_hold: str, to_hold: str) -> int:
        """Late arrivals join the held rest: move them from one hold to the other."""
        moved = int(
            await self._conn.fetchval(QUERIES["canary_move"], tenant, campaign, from_hold, to_hold)
        )
        await self._conn.execute(QUERIES["canary_add_held"], tenant, campaign, moved)
        return moved

    async def collecting(self, tenant: str, campaign: str, count: int) -> None:
        await self._conn.execute(QUERIES["canary_collecting"], tenant, campaign, count)

    async def start(
        self, tenant: str, campaign: str, pending: str, size: int, rest: str
    ) -> tuple[int, int]:
        """Release a canary of `size` of the pending deliveries, hold the rest under `rest`;
        (released, held)."""
        split = await self._conn.fetchrow(
            QUERIES["canary_start"], tenant, campaign, pending, size, rest
        )
        return int(split["released"]), int(split["held"])

    async def begin(
        self, tenant: str, campaign: str, recipients: int, released: int, held: int,
        window_seconds: float, reason: str,
    ) -> datetime:  # fmt: skip
        """Record the canary's start; the end of its window."""
        ends: datetime = await self._conn.fetchval(
            QUERIES["canary_begin"], tenant, campaign, recipients, released, held,
            window_seconds, reason,
        )  # fmt: skip
        return ends


class CanaryStore(_Reads):
    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self._pool = pool

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[CanaryWork]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield CanaryWork(conn)

    async def write_settings(self, min_size: int, remember: float, exempt: Sequence[str]) -> None:
        """What the trigger reads to hold new campaign deliveries (min_size 0: it does not)."""
        await self._pool.execute(QUERIES["canary_settings_write"], min_size, remember, list(exempt))

    async def pending(self) -> list[Row]:
        """Campaigns with deliveries held while they grow: tenant, campaign, quiet."""
        return list(await self._pool.fetch(QUERIES["canary_pending"]))

    async def windows_due(self) -> list[Row]:
        """Campaigns whose canary window has ended: tenant, campaign."""
        return list(await self._pool.fetch(QUERIES["canary_windows_due"]))

    async def states(self) -> dict[str, int]:
        """How many campaigns are in each state."""
        return {r["state"]: r["n"] for r in await self._pool.fetch(QUERIES["canary_gauges_states"])}

    async def held_per_tenant(self) -> dict[str, int]:
        return {
            r["tenant"]: r["held"] for r in await self._pool.fetch(QUERIES["canary_gauges_held"])
        }

    async def campaigns(self, tenant: str | None, state: str | None, limit: int) -> list[Row]:
        """Campaigns, newest first (`relay campaign ls`)."""
        return list(await self._pool.fetch(QUERIES["canary_list"], tenant, state, limit))

    async def campaign(self, tenant: str, name: str) -> Row | None:
        return await self._pool.fetchrow(QUERIES["canary_get"], tenant, name)
