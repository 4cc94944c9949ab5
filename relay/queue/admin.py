"""What an admin asks of the queue (`relay queue ls|show|retry|delete`): deliveries by
state and tenant, one message with everything recorded about it, and the two changes an
admin may make to a message's queued deliveries."""

import uuid
from collections.abc import Mapping
from typing import Any, Literal

import asyncpg

from relay.queue.sql import QUERIES

Change = Literal["retry", "delete"]
_CHANGES: dict[Change, str] = {"retry": "retry_message", "delete": "delete_message"}


class QueueAdmin:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def deliveries(
        self, state: str | None, tenant: str | None, limit: int
    ) -> list[Mapping[str, Any]]:
        """Deliveries (one per recipient), newest first, filtered when given."""
        return list(await self._pool.fetch(QUERIES["list_deliveries"], state, tenant, limit))

    async def messages_starting(self, prefix: str) -> list[uuid.UUID]:
        """Ids of the messages whose id starts with `prefix`."""
        rows = await self._pool.fetch(QUERIES["find_messages"], prefix.lower())
        return [r["id"] for r in rows]

    async def message(self, message_id: uuid.UUID) -> dict[str, Any]:
        """The envelope with its deliveries, attempts and policy results."""
        found = dict(await self._pool.fetchrow(QUERIES["show_message"], message_id))
        for key, query in (("deliveries", "show_deliveries"), ("attempts", "show_attempts"),
                           ("policy", "show_policy_results")):  # fmt: skip
            found[key] = [dict(r) for r in await self._pool.fetch(QUERIES[query], message_id)]
        return found

    async def change(self, change: Change, message_id: uuid.UUID) -> int:
        """Retry the message's queued deliveries now, or stop them (kept, marked deleted),
        and wake the dispatchers; how many deliveries changed."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(QUERIES[_CHANGES[change]], message_id)
            await conn.execute(QUERIES["notify_queue"])
        return len(rows)
