"""Deliveries as the delivery workers take them: leased in batches (`FOR UPDATE SKIP
LOCKED` with an expiry, so several processes and hosts share the queue), kept while in
flight, given back on a clean stop, and the stored messages they carry.

A lease that is neither renewed nor released expires by itself: after a crash, any relay
host delivers what the dead one held (at least once, never lost).
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from relay.queue.events import Event, columns
from relay.queue.sql import QUERIES
from relay.queue.store import NewMessage, insert_messages
from relay.queue.suppressions import Reason, suppress

log = logging.getLogger(__name__)
CHANNEL = "relay_queue"
"""Notified when messages are queued (`notify_queue`): wakes the dispatchers."""
_PING_SECONDS = 5.0
_RETRY_SECONDS = 2.0
LANE_HEAD = 1000
"""Most rows a lease reads from the head of one lane of one tenant: the lease's cost stays
bounded when the head is a destination that cannot take more (until it is deferred)."""
DEFER_BATCH = 5000
"""Most deliveries one deferral statement moves: a backlog of a million moves in steps that
each hold their row locks briefly."""


@dataclass(frozen=True)
class Lease:
    """One leased delivery (a recipient of a message) and what is needed to finish it."""

    id: int
    token: uuid.UUID
    message_id: uuid.UUID
    recipient: str
    domain: str
    attempts: int
    expires_at: datetime
    tenant: str
    mail_from: str
    received_at: datetime
    campaign: str | None


@dataclass(frozen=True)
class Attempt:
    """What one attempt of a leased delivery came to, as the queue records it."""

    lease: Lease
    state: str
    """queued (to be retried), delivered or bounced."""
    retry_at: datetime | None
    reply: str
    host: str | None
    kind: str
    """The outcome as `attempts` and the metrics name it."""


class Recorder:
    """Writes the outcomes of attempts: through the pool, or in one transaction with the
    suppressions and bounce messages they cause."""

    def __init__(self, conn: asyncpg.Connection | asyncpg.Pool) -> None:
        self._conn = conn

    async def finish(
        self, attempts: Sequence[Attempt], site: str | None, events: Mapping[int, Event]
    ) -> set[int]:
        """Record the attempts of one connection and their events (by delivery id) in one
        statement, each only while its lease is still held; the ids recorded."""
        rows = await self._conn.fetch(
            QUERIES["finish_attempts"],
            [a.lease.id for a in attempts],
            [a.lease.token for a in attempts],
            [a.state for a in attempts],
            [a.retry_at for a in attempts],
            [a.reply for a in attempts],
            [a.host for a in attempts],
            [a.kind for a in attempts],
            site,
            list(events),
            *columns(list(events.values())),
        )
        return {r["delivery_id"] for r in rows}

    async def original(self, message_id: uuid.UUID) -> bytes:
        """The stored message, for the copy a bounce carries."""
        return bytes(await self._conn.fetchval(QUERIES["message_content"], message_id))

    async def suppress(self, tenant: str, address: str, reason: Reason, source: str) -> None:
        assert isinstance(self._conn, asyncpg.Connection), "suppress inside a transaction"
        await suppress(self._conn, tenant, address, reason, source)

    async def enqueue(self, messages: list[NewMessage], lifetime: float) -> None:
        assert isinstance(self._conn, asyncpg.Connection), "enqueue inside a transaction"
        await insert_messages(self._conn, messages, lifetime)


class DeliveryQueue:
    """The leasing side of `deliveries` for one relay process (`owner`)."""

    def __init__(self, pool: asyncpg.Pool, owner: str) -> None:
        self._pool = pool
        self.owner = owner

    async def lease_due(
        self,
        lease_seconds: float,
        capacity: int,
        tenants: Sequence[str],
        saturated: Sequence[str],
        per_tenant: int,
        head: int = LANE_HEAD,
    ) -> list[Lease]:
        """Up to `capacity` due deliveries of `tenants`, taken in turns between them and
        their lanes (never answered, retried), at most `per_tenant` of each lane, leaving
        out the `tenant/domain` pairs in `saturated`, reading at most `head` rows of a
        lane; one token for the batch."""
        token = uuid.uuid4()
        rows = await self._pool.fetch(
            QUERIES["lease_due"], self.owner, token, lease_seconds, capacity,
            list(tenants), list(saturated), per_tenant, head,
        )  # fmt: skip
        return [Lease(token=token, **dict(r)) for r in rows]

    async def defer(
        self,
        destination: tuple[str, str],
        start: datetime,
        seconds: float,
        *,
        reply: str | None = None,
        site: str | None = None,
        keep: int = 0,
        limit: int = DEFER_BATCH,
    ) -> int:
        """Move up to `limit` due deliveries of a (tenant, domain) past its first `keep` to
        later times: one every `seconds` from `start`, or, with a `reply` (why they wait,
        kept as their last reply), at random within `seconds` after it. No attempt is
        recorded. The number moved."""
        tenant, domain = destination
        moved: int = await self._pool.fetchval(
            QUERIES["defer_destination"], tenant, domain, start, seconds, limit, reply, keep,
            site,
        )  # fmt: skip
        return moved

    async def renew(self, tokens: Sequence[uuid.UUID], lease_seconds: float) -> None:
        await self._pool.execute(QUERIES["renew_leases"], list(tokens), lease_seconds)

    async def postpone(
        self, leases: Sequence[Lease], until: Sequence[datetime], reply: str, site: str
    ) -> None:
        """Give the leases back with each delivery due at its time in `until`, recording no
        attempt: a paused site was not tried."""
        await self._pool.execute(
            QUERIES["postpone_deliveries"], [x.id for x in leases], [x.token for x in leases],
            list(until), reply, site,
        )  # fmt: skip

    async def release_all(self) -> None:
        """Give back every lease of this process (a clean stop)."""
        await self._pool.execute(QUERIES["release_leases"], self.owner)

    def recorder(self) -> Recorder:
        """Outcomes recorded through the pool, each statement its own transaction."""
        return Recorder(self._pool)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Recorder]:
        """Outcomes, suppressions and bounces committed together, or not at all."""
        async with self._pool.acquire() as conn, conn.transaction():
            yield Recorder(conn)

    async def contents(self, message_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, bytes]:
        """The stored messages; one erased meanwhile (P-ERASURE) is absent."""
        rows = await self._pool.fetch(QUERIES["message_contents"], list(message_ids))
        return {r["id"]: bytes(r["content"]) for r in rows}


async def follow_new_mail(dsn: str, on_new: Callable[[], None]) -> None:
    """Call `on_new` whenever messages are queued, on a connection of its own, until
    cancelled; reconnect whenever it is lost (the dispatchers poll meanwhile)."""
    while True:
        try:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.add_listener(CHANNEL, lambda *_: on_new())
                while not conn.is_closed():
                    await asyncio.sleep(_PING_SECONDS)
                    await conn.execute("SELECT 1")
            finally:
                await conn.close(timeout=2)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure: wait, reconnect; polling covers the gap
            log.debug("queue listener reconnecting: %r", exc)
            await asyncio.sleep(_RETRY_SECONDS)
