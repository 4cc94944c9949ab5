"""Storing accepted messages: group commit, and `250` only after the commit.

Every session's message goes into one shared batch; a committer writes the batch in one
statement (two `unnest` inserts and a NOTIFY, `store_messages`) and then wakes every
waiting session. One fsync serves many messages, which is how durability
(`synchronous_commit` on, always) stays cheap. Up to `_PARALLEL_COMMITS` batches are in
flight, so the next batch fills while one commits.

A COMMIT interrupted by a lost connection has an unknown outcome. Message ids are chosen
here, so the batch is retried once on a fresh connection with `ON CONFLICT DO NOTHING`:
if the first commit did land, the retry stores nothing twice. If the retry fails too the
sessions get `451`, never `250`.
"""

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass, field

import asyncpg

from relay import metrics
from relay.queue.errors import DATABASE_ERRORS
from relay.queue.sql import QUERIES

log = logging.getLogger(__name__)
_PARALLEL_COMMITS = 3


class QueueUnavailable(Exception):
    """The message could not be committed; the client must retry (451 4.3.0)."""


@dataclass(frozen=True)
class NewMessage:
    tenant: str
    mail_from: str
    recipients: tuple[str, ...]
    content: bytes
    header_message_id: str | None = None
    client_address: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    audit: tuple[tuple[str, str, str], ...] = ()
    """(rule, outcome, reason) of every policy verdict, stored with the message."""
    campaign: str | None = None
    """Feedback-ID or List-Id: the campaign its rates are counted under."""
    bulk: bool = False
    """Bulk mail (POLICY.md): what reputation suspensions and canaries hold."""


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


class Enqueuer:
    """Collects messages from concurrent sessions and commits them in batches."""

    def __init__(self, pool: asyncpg.Pool, *, lifetime: float, batch_max: int) -> None:
        self.pool = pool
        self.lifetime = lifetime
        self._batch_max = batch_max
        self._pending: asyncio.Queue[tuple[NewMessage, asyncio.Future[None]]] = asyncio.Queue()
        self._slots = asyncio.Semaphore(_PARALLEL_COMMITS)
        self._flushes: set[asyncio.Task[None]] = set()

    async def enqueue(self, message: NewMessage) -> None:
        """Return once `message` is committed; raise QueueUnavailable otherwise."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._pending.put((message, done))
        await done

    async def run(self) -> None:
        """The committer loop; runs until cancelled."""
        while True:
            batch = [await self._pending.get()]
            await self._slots.acquire()
            while len(batch) < self._batch_max and not self._pending.empty():
                batch.append(self._pending.get_nowait())
            task = asyncio.create_task(self._flush(batch), name="group-commit")
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[tuple[NewMessage, asyncio.Future[None]]]) -> None:
        """Commit the batch, retried once; then answer every waiting session, whatever
        happened: `250` only after the commit, and a session never left waiting (it would
        hold its client until the data timeout)."""
        committed = False
        error: BaseException | None = None
        try:
            messages = [m for m, _ in batch]
            for attempt in (1, 2):
                try:
                    async with asyncio.timeout(30):  # no extra task, unlike wait_for
                        await self._store(messages)
                    metrics.GROUP_COMMIT_MESSAGES.observe(len(messages))
                    committed = True
                    break
                except DATABASE_ERRORS as exc:
                    log.warning(
                        "group commit attempt %d of %d messages failed: %r",
                        attempt,
                        len(messages),
                        exc,
                    )
                    error = exc
        except Exception as exc:  # a bug: these sessions get 451, the next batch a new try
            log.exception("group commit of %d messages failed unexpectedly", len(batch))
            error = exc
        finally:
            self._slots.release()
            for _, done in batch:
                if done.done():
                    continue
                if committed:
                    done.set_result(None)
                else:
                    done.set_exception(QueueUnavailable(str(error or "commit interrupted")))

    async def _store(self, messages: list[NewMessage]) -> None:
        async with self.pool.acquire() as conn:
            await insert_messages(conn, messages, self.lifetime)


async def insert_messages(
    conn: asyncpg.Connection, messages: list[NewMessage], lifetime: float
) -> None:
    """Store messages and their deliveries and NOTIFY the workers, in one statement: its
    own transaction, or part of the caller's. Messages already stored (a retried commit)
    are skipped with their deliveries.

    One round trip, not one per statement: under load every round trip waits for a turn of
    the busy event loop, and the wait for a 250 was mostly that."""
    deliveries = [(m, r) for m in messages for r in m.recipients]
    await conn.fetchrow(
        QUERIES["store_messages"],
        [m.id for m in messages],
        [m.tenant for m in messages],
        [m.mail_from for m in messages],
        [m.content for m in messages],
        [len(m.content) for m in messages],
        [m.header_message_id for m in messages],
        [m.client_address for m in messages],
        [m.campaign for m in messages],
        [m.bulk for m in messages],
        [_audit_json(m.audit) for m in messages],
        lifetime,
        [m.id for m, _ in deliveries],
        [r for _, r in deliveries],
        [domain_of(r) for _, r in deliveries],
        [m.tenant for m, _ in deliveries],
    )


def _audit_json(audit: tuple[tuple[str, str, str], ...]) -> str:
    """The verdicts as stored in `messages.policy`, in check order."""
    return json.dumps([{"rule": r, "outcome": o, "reason": why} for r, o, why in audit])
