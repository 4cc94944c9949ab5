"""The suppression list (P-SUPPRESS): entries added from what came back (a hard bounce, a
complaint, a one-click unsubscribe, an abuse report), one look-up per recipient as the
policy reads it, and the whole list with its additions for the process's filter of it."""

import hashlib
import hmac
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from relay.queue.events import Event, record
from relay.queue.sql import QUERIES

CHANNEL = "relay_suppressions"
REMOVED_CHANNEL = "relay_suppressions_removed"
APPLICATION = "relay suppression filter"
"""The feed's connection's application_name, as pg_stat_activity shows it."""
_ASCII_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
HASH_PREFIX = "hmac:"


def suppression_key(secret: bytes, address: str) -> str:
    """The keyed hash an erased address is suppressed under (P-ERASURE): "hmac:" + hex
    HMAC-SHA256 of the lower-cased address. Without the secret nobody can test an address
    against it."""
    digest = hmac.new(secret, address.lower().encode("utf-8"), hashlib.sha256).hexdigest()
    return HASH_PREFIX + digest


Reason = str  # unsubscribe | complaint | hard-bounce | abuse-report | manual


async def suppress(
    conn: asyncpg.Connection, tenant: str, address: str, reason: Reason, source: str
) -> bool:
    """Suppress `address` for `tenant` in the caller's transaction, with a `suppressed`
    event; True if it was not on the list before. An address already on the list keeps
    its first reason and time (the first cause is the one to show)."""
    added = await conn.fetch(QUERIES["suppression_add"], tenant, [address], reason, source)
    if added:
        detail = {"reason": reason, "source": source}
        await record(conn, [Event(tenant, "suppressed", address.lower(), detail=detail)])
    return bool(added)


@dataclass(frozen=True)
class Suppression:
    reason: str
    source: str
    since: datetime


class SuppressionList:
    """The list through a pool; raises `DATABASE_ERRORS` when the database is out of
    reach, for the caller to answer 451 or 503."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def find(self, tenant: str, address: str, key: str | None) -> Suppression | None:
        """The entry of `address` for `tenant`, by the address or by its keyed hash `key` (an
        erased address, P-ERASURE): one primary-key look-up for both."""
        row = await self._pool.fetchrow(QUERIES["suppression_of"], tenant, address, key)
        if row is None:
            return None
        return Suppression(row["reason"], row["source"], row["created_at"])

    async def add(self, tenant: str, addresses: Sequence[str], reason: Reason, source: str) -> int:
        """Suppress `addresses` by an admin's hand (CLI add and import); how many were not on
        the list before."""
        added = await self._pool.fetch(
            QUERIES["suppression_add"], tenant, list(addresses), reason, source
        )
        return len(added)

    async def remove(self, tenant: str, address: str, key: str | None) -> bool:
        """Take `address` (and its keyed hash `key`) off the list; False if it was not on."""
        return bool(await self._pool.fetch(QUERIES["suppression_remove"], tenant, address, key))

    async def entries(self, tenant: str | None, limit: int) -> list[Mapping[str, Any]]:
        """Entries with reason, source and time; every tenant's if None."""
        return list(await self._pool.fetch(QUERIES["suppression_list"], tenant, limit))

    async def unsubscribe(
        self, tenant: str, address: str, key: str | None, message_id: str | None
    ) -> bool:
        """Suppress `address` for `tenant` as a one-click unsubscribe (RFC 8058) with its
        `unsubscribed` event, in one transaction; False when it was already suppressed, by
        the address or by its keyed hash `key` after an erasure."""
        address = address.lower()
        async with self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchrow(QUERIES["suppression_of"], tenant, address, key):
                return False
            if not await suppress(conn, tenant, address, "unsubscribe", "one-click"):
                return False  # added by someone else meanwhile
            detail = {"message_id": message_id}
            await record(conn, [Event(tenant, "unsubscribed", address, detail=detail)])
            return True


class SuppressionFeed:
    """The whole list and its additions as they commit, on a connection of its own: a
    trigger (migration 0013) notifies `CHANNEL` with the tenant and address of every row
    inserted or updated. Used by the policy's filter of the list (`SuppressionFilter`)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @classmethod
    async def connect(cls, dsn: str, on_lost: Callable[[], None]) -> "SuppressionFeed":
        conn = await asyncpg.connect(dsn, server_settings={"application_name": APPLICATION})
        conn.add_termination_listener(lambda _: on_lost())
        return cls(conn)

    async def lowers_ascii_as_python(self) -> bool:
        """Whether the database lower-cases ASCII as `str.lower` does (a Turkish locale
        does not), so an address the filter lowers matches the one stored."""
        lowered = await self._conn.fetchval("SELECT lower($1::text)", _ASCII_UPPER)
        return bool(lowered == _ASCII_UPPER.lower())

    async def listen(
        self, on_entry: Callable[[str, str], None], on_removed: Callable[[], None]
    ) -> None:
        """Call `on_entry(tenant, address)` for every entry added from now on, and
        `on_removed()` after every statement that removed entries (0021)."""

        def notified(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            tenant, _, address = str(payload).partition("\n")
            on_entry(tenant, address)

        await self._conn.add_listener(CHANNEL, notified)
        await self._conn.add_listener(REMOVED_CHANNEL, lambda *_: on_removed())

    async def count(self) -> int:
        return int(await self._conn.fetchval(QUERIES["suppression_count"]))

    async def entries(self) -> AsyncIterator[tuple[str, str]]:
        """Every (tenant, address) on the list, read in one snapshot."""
        async with self._conn.transaction(isolation="repeatable_read", readonly=True):
            async for row in self._conn.cursor(QUERIES["suppression_entries"], prefetch=10_000):
                yield row[0], row[1]

    async def ping(self) -> None:
        """A round trip: a dead peer shows here, not only at a read."""
        await self._conn.execute("SELECT 1")

    def is_closed(self) -> bool:
        return bool(self._conn.is_closed())

    async def close(self) -> None:
        await self._conn.close(timeout=2)
