"""Storing accepted messages: group commit, and `250` only after the commit.

Every session's message goes into a shared batch; the batch is written in one statement
(two `unnest` inserts, `store_messages`) and then every waiting session is answered. One
fsync serves many messages, which is how durability (`synchronous_commit` on, always)
stays cheap. One commit per process is in flight at a time (`_PARALLEL_COMMITS`) and the
messages that arrive meanwhile go together in the next: against three commits in flight,
batches grew, PostgreSQL's CPU per message fell and more messages were accepted under
saturation, while below it, where batches hold one message either way, the time to the
250 did not grow (see bench/README.md).

The delivery workers learn of new mail by `NOTIFY relay_queue`, sent after the commits and
at most once per `_NOTIFY_SECONDS` (the delivery dispatcher gathers wake-ups for as long),
never inside them: PostgreSQL serialises every transaction that has NOTIFYed on one lock
for the whole database cluster, held from just before its commit until after it, WAL flush
included (`PreCommit_Notify` in `src/backend/commands/async.c`), so commits that each
NOTIFYed, from several relay processes or hosts, would wait for one another's fsync
instead of sharing one. The workers also poll, so a NOTIFY lost with a crash between
commit and notification delays delivery by at most their poll interval.

A COMMIT interrupted by a lost connection has an unknown outcome. Message ids are chosen
here, so the batch is retried once on a fresh connection with `ON CONFLICT DO NOTHING`:
if the first commit did land, the retry stores nothing twice. If the retry fails too the
sessions get `451`, never `250`.
"""

import asyncio
import collections
import json
import logging
import uuid
from dataclasses import dataclass, field

import asyncpg

from relay import metrics
from relay.queue.errors import DATABASE_ERRORS
from relay.queue.sql import QUERIES

log = logging.getLogger(__name__)
_PARALLEL_COMMITS = 1
_NOTIFY_SECONDS = 0.01
BATCH_BYTES = 8 << 20
"""Content one group commit carries at most (a larger message goes alone): asyncpg copies
a statement's parameters into one buffer on the event loop, and four 24 MB messages in one
commit held it far too long."""


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
        self._pending: collections.deque[tuple[NewMessage, asyncio.Future[None]]] = (
            collections.deque()
        )
        self._in_flight = 0
        self._flushes: set[asyncio.Task[None]] = set()
        self._committed = asyncio.Event()

    async def enqueue(self, message: NewMessage) -> None:
        """Return once `message` is committed; raise QueueUnavailable otherwise."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((message, done))
        self._start_flushes()
        await done

    async def run(self) -> None:
        """Notify the delivery workers of new mail; runs until cancelled. (The commits
        themselves need no loop: `enqueue` and each finished commit start them.)"""
        while True:
            await self._committed.wait()
            self._committed.clear()
            try:
                await self.pool.execute(QUERIES["notify_queue"])
            except DATABASE_ERRORS as exc:  # the workers' polling finds the mail
                log.debug("cannot notify the delivery workers: %r", exc)
            await asyncio.sleep(_NOTIFY_SECONDS)

    def _start_flushes(self) -> None:
        """Commit what is pending at once while fewer than `_PARALLEL_COMMITS` commits are
        in flight; otherwise it waits and goes, with whatever arrives meanwhile, in one
        batch when a commit ends. Started here rather than by a committer task, which
        cost each message one more turn of a busy event loop before its commit began. A
        task of its own, not the session's: aiosmtpd cancels a session's task when its
        client hangs up, and that must not cancel a commit that carries other sessions'
        messages."""
        while self._pending and self._in_flight < _PARALLEL_COMMITS:
            batch = [self._pending.popleft()]
            size = len(batch[0][0].content)
            while (
                self._pending
                and len(batch) < self._batch_max
                and size + len(self._pending[0][0].content) <= BATCH_BYTES
            ):
                size += len(self._pending[0][0].content)
                batch.append(self._pending.popleft())
            self._in_flight += 1
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
                    self._committed.set()
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
            self._in_flight -= 1
            self._start_flushes()
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
    """Store messages and their deliveries in one statement: its own transaction, or part
    of the caller's. Messages already stored (a retried commit) are skipped with their
    deliveries.

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
