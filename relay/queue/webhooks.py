"""Webhook delivery state: the horizon of committed events, and each tenant's cursor
(`webhook_cursors`), claimed for the length of one POST so that of several relay processes
one posts a tenant's events, in order, at a time."""

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from relay.queue.sql import QUERIES


class CommittedHorizon:
    """The highest event id below which every event is committed or rolled back for good.

    An INSERT into `events` locks the table (RowExclusiveLock) before it takes its id and
    keeps the lock until its transaction ends. So: read the sequence's last id H, then the
    transactions holding that lock; once all of them have ended, no id up to H can still
    appear. Under steady traffic this trails the newest event by about one poll.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.settled = 0
        self._pending: tuple[int, list[str]] | None = None

    async def advance(self) -> int:
        """One step: settle the pending id if its writers are gone, start watching the next."""
        if self._pending is not None:
            last, writers = self._pending
            if await self._pool.fetchval(QUERIES["events_writers_left"], writers):
                return self.settled
            self.settled = max(self.settled, last)
            self._pending = None
        last = await self._pool.fetchval(QUERIES["events_last_allocated_id"])  # before the writers
        writers = await self._pool.fetchval(QUERIES["events_writers"])
        if writers:
            self._pending = (last, writers)
        else:
            self.settled = max(self.settled, last)
        return self.settled

    async def settle(self, poll: float = 0.1) -> int:
        """Wait until every event id handed out by now is settled."""
        await self.advance()
        target = self._pending[0] if self._pending is not None else self.settled
        while self.settled < target:
            await asyncio.sleep(poll)
            await self.advance()
        return self.settled


@dataclass(frozen=True)
class Claim:
    lease: datetime
    """The claim's end; results are written only while it still matches."""
    last_event: int
    """The cursor: the last event the receiver acknowledged."""
    failures: int


class WebhookCursors:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def due(self, tenants: Sequence[str], horizon: int) -> list[str]:
        """Those of `tenants` with events up to `horizon` past their cursor, not backing
        off and not being posted for."""
        rows = await self._pool.fetch(QUERIES["webhook_due"], list(tenants), horizon)
        return [r["tenant"] for r in rows]

    async def claim(self, tenant: str, seconds: float) -> Claim | None:
        """Take the tenant's cursor for `seconds`; None if another process holds it or the
        tenant is backing off."""
        row = await self._pool.fetchrow(QUERIES["webhook_claim"], tenant, seconds)
        if row is None:
            return None
        return Claim(row["next_try_at"], row["last_event"], row["failures"])

    async def batch(self, tenant: str, after: int, upto: int, size: int) -> list[Mapping[str, Any]]:
        """The tenant's events with ids in (after, upto], oldest first, at most `size`."""
        return list(await self._pool.fetch(QUERIES["webhook_batch"], tenant, after, upto, size))

    async def advance(self, tenant: str, lease: datetime, last_event: int) -> bool:
        """The receiver acknowledged up to `last_event`; False if the claim had expired."""
        status = await self._pool.execute(QUERIES["webhook_advance"], tenant, lease, last_event)
        return not str(status).endswith(" 0")

    async def failed(self, tenant: str, lease: datetime, error: str, delay: float) -> bool:
        """Keep the cursor, try again in `delay` seconds; False if the claim had expired."""
        status = await self._pool.execute(QUERIES["webhook_failed"], tenant, lease, error, delay)
        return not str(status).endswith(" 0")

    async def release(self, tenant: str, lease: datetime) -> None:
        """Give back a claim without a result: due again at once."""
        await self._pool.execute(QUERIES["webhook_release"], tenant, lease)
