"""Reports as they came (`feedback_reports`): stored before the reply that promises them,
read by the feedback processor. Anyone on the internet can send one, so nothing here
counts toward anything; the processor decides what a report is worth."""

import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from relay.queue.events import Event, record
from relay.queue.sql import QUERIES
from relay.queue.suppressions import Reason, suppress


@dataclass(frozen=True)
class NewReport:
    """A stored report waiting for the processor."""

    id: int
    channel: str
    mail_from: str
    recipients: tuple[str, ...]
    client_address: str | None
    raw: bytes
    reporter: str | None


@dataclass(frozen=True)
class Delivery:
    """A delivery of ours that a report is about."""

    id: int
    recipient: str
    message_id: uuid.UUID
    site: str
    tenant: str
    campaign: str


class ReportWork:
    """The processor's transaction over a batch of reports: finding the delivery a report
    is about, checking for a replay, and what an authentic report changes, each report in a
    savepoint of its own so one report's failure is its own."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    def savepoint(self) -> "contextlib.AbstractAsyncContextManager[object]":
        return self._conn.transaction()

    async def delivery(self, delivery_id: int) -> Delivery | None:
        row = await self._conn.fetchrow(QUERIES["delivery_by_id"], delivery_id)
        return None if row is None else Delivery(**dict(row))

    async def deliveries_of(
        self, queue_id: uuid.UUID | None, message_id: str | None, recipient: str | None
    ) -> list[Delivery]:
        """The deliveries of a message found by its queue id or else its Message-ID (newest
        first), of `recipient` only when given."""
        rows = await self._conn.fetch(
            QUERIES["deliveries_of_message"], queue_id, message_id, recipient
        )
        return [Delivery(**dict(r)) for r in rows]

    async def recorded(self, message_id: uuid.UUID, address: str, kinds: Sequence[str]) -> bool:
        """Whether such an event is recorded already; holds the pair's lock until the
        transaction ends, so the check and the record that follows are one step."""
        await self._conn.execute(QUERIES["feedback_lock"], str(message_id), address)
        found = await self._conn.fetchval(
            QUERIES["feedback_already_recorded"], message_id, address, list(kinds)
        )
        return bool(found)

    async def suppress(self, tenant: str, address: str, reason: Reason, source: str) -> None:
        await suppress(self._conn, tenant, address, reason, source)

    async def record(self, events: Sequence[Event]) -> None:
        await record(self._conn, events)

    async def done(
        self,
        report_id: int,
        state: str,
        kind: str | None,
        problem: str | None,
        tenant: str | None,
        message_id: uuid.UUID | None,
        reporter: str | None,
    ) -> None:
        """What the report came to (processed, unmatched, unverified, duplicate, malformed)."""
        await self._conn.execute(
            QUERIES["feedback_report_done"], report_id, state, kind, problem, tenant,
            message_id, reporter,
        )  # fmt: skip


class ReportInbox:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def abuse_reports(self, limit: int) -> list[Mapping[str, Any]]:
        """The latest abuse reports, newest first (`relay abuse ls`)."""
        return list(await self._pool.fetch(QUERIES["abuse_list"], limit))

    async def report(self, report_id: int) -> Mapping[str, Any] | None:
        """One report with what it came to and its raw bytes (`relay abuse show`)."""
        return await self._pool.fetchrow(QUERIES["abuse_show"], report_id)

    @contextlib.asynccontextmanager
    async def claim_new(self, limit: int) -> AsyncIterator[tuple[list[NewReport], ReportWork]]:
        """Up to `limit` new reports, locked for this transaction (`SKIP LOCKED`: several
        processes share the work), and the transaction to process them in."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(QUERIES["feedback_reports_new"], limit)
            reports = [
                NewReport(r["id"], r["channel"], r["mail_from"], tuple(r["recipients"] or ()),
                          r["client_address"], bytes(r["raw"]), r["reporter"])
                for r in rows
            ]  # fmt: skip
            yield reports, ReportWork(conn)

    async def store(
        self,
        channel: str,
        mail_from: str,
        recipients: Sequence[str],
        client_address: str,
        raw: bytes,
        reporter: str | None = None,
    ) -> int:
        """Keep a report (`channel`: return-path, fbl, abuse or abuse-form); its id."""
        return int(
            await self._pool.fetchval(
                QUERIES["feedback_report_insert"], channel, mail_from, list(recipients),
                client_address, raw, reporter,
            )
        )  # fmt: skip
