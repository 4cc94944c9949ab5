"""The PostgreSQL queue on a real server: migrations, group commit, leases."""

import asyncio
import uuid

import asyncpg
import pytest

from relay.feedback.reputation.standing import Standing
from relay.queue.events import Event, Kind, columns, record
from relay.queue.migrate import migrate
from relay.queue.sql import QUERIES, migrations
from relay.queue.store import Enqueuer, NewMessage, QueueUnavailable

pytestmark = [pytest.mark.queue, pytest.mark.asyncio]


def _message(n: int, recipients: tuple[str, ...] = ("a@x.example", "b@y.example")) -> NewMessage:
    return NewMessage(
        tenant="acme",
        mail_from="app@acme.example",
        recipients=recipients,
        content=f"Subject: {n}\r\n\r\nbody {n}\r\n".encode(),
        header_message_id=f"<{n}@acme.example>",
    )


async def test_migrations_apply_once(empty_database: str) -> None:
    """Every migration is recorded; running again applies nothing."""
    conn = await asyncpg.connect(empty_database)
    try:
        await migrate(conn)  # on a database without the schema, as a relay's first start does
        assert await migrate(conn) == []
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
    finally:
        await conn.close()
    assert versions == [v for v, _, _ in migrations()]


async def test_group_commit_stores_concurrent_messages(pool: asyncpg.Pool) -> None:
    """Concurrent sessions' messages are committed (in shared batches) before enqueue returns;
    each recipient becomes a delivery row keyed by its domain."""
    enqueuer = Enqueuer(pool, lifetime=3600, batch_max=16)
    committer = asyncio.create_task(enqueuer.run())
    try:
        messages = [_message(n) for n in range(50)]
        await asyncio.gather(*(enqueuer.enqueue(m) for m in messages))
    finally:
        committer.cancel()
    assert await pool.fetchval("SELECT count(*) FROM messages") == 50
    rows = await pool.fetch("SELECT domain, count(*) AS n FROM deliveries GROUP BY 1 ORDER BY 1")
    assert [(r["domain"], r["n"]) for r in rows] == [("x.example", 50), ("y.example", 50)]


async def test_retried_commit_stores_nothing_twice(pool: asyncpg.Pool) -> None:
    """A batch re-sent after a commit of unknown outcome is harmless (same message ids)."""
    from relay.queue.store import insert_messages

    message = _message(1)
    for _ in range(2):
        async with pool.acquire() as conn, conn.transaction():
            await insert_messages(conn, [message], 3600)
    assert await pool.fetchval("SELECT count(*) FROM deliveries") == 2


async def test_content_is_not_compressed_with_pglz(pool: asyncpg.Pool) -> None:
    """A large body is stored with lz4 or uncompressed, never with pglz, whose CPU cost in the
    accepting transaction was several times the rest of the insert's."""
    from relay.queue.store import insert_messages

    text = b"".join(
        b"line %d of a plain text body that compresses well\r\n" % n for n in range(2000)
    )
    message = NewMessage(
        tenant="acme",
        mail_from="app@acme.example",
        recipients=("a@x.example",),
        content=b"Subject: big\r\n\r\n" + text,
        header_message_id="<big@acme.example>",
    )
    async with pool.acquire() as conn:
        await insert_messages(conn, [message], 3600)
    method = await pool.fetchval(
        "SELECT pg_column_compression(content) FROM messages WHERE id = $1", message.id
    )
    assert method in (None, "lz4")


async def test_enqueue_fails_with_queue_unavailable_when_the_database_is_gone(
    database: str,
) -> None:
    """No database: the caller gets QueueUnavailable (451), never a silent success."""
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    async with pool.acquire() as conn:
        await migrate(conn)
    enqueuer = Enqueuer(pool, lifetime=3600, batch_max=4)
    await pool.close()
    committer = asyncio.create_task(enqueuer.run())
    try:
        with pytest.raises(QueueUnavailable):
            await enqueuer.enqueue(_message(1))
    finally:
        committer.cancel()


class _FailingFirst(Enqueuer):
    """An enqueuer whose first store raises `error` before anything is written; the rest
    go to the real database."""

    def __init__(self, pool: asyncpg.Pool, error: Exception) -> None:
        super().__init__(pool, lifetime=3600, batch_max=4)
        self.error: Exception | None = error

    async def _store(self, messages: list[NewMessage]) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        await super()._store(messages)


async def test_a_connection_caught_mid_error_is_retried_like_any_outage(
    pool: asyncpg.Pool,
) -> None:
    """asyncpg's InternalClientError ("another operation is in progress", seen when the
    server stopped under load) is a database error: the batch is retried and committed."""
    enqueuer = _FailingFirst(
        pool, asyncpg.InternalClientError("cannot switch to state 12; another operation (2)")
    )
    committer = asyncio.create_task(enqueuer.run())
    try:
        await asyncio.wait_for(enqueuer.enqueue(_message(1)), 10)
    finally:
        committer.cancel()
    assert await pool.fetchval("SELECT count(*) FROM messages") == 1


async def test_an_unexpected_commit_failure_answers_the_sessions(pool: asyncpg.Pool) -> None:
    """Whatever a commit raises, its sessions get QueueUnavailable (451) at once instead of
    waiting for ever, and the next batch commits."""
    enqueuer = _FailingFirst(pool, RuntimeError("a bug"))
    committer = asyncio.create_task(enqueuer.run())
    try:
        with pytest.raises(QueueUnavailable):
            await asyncio.wait_for(enqueuer.enqueue(_message(1)), 10)
        await asyncio.wait_for(enqueuer.enqueue(_message(2)), 10)
    finally:
        committer.cancel()
    assert await pool.fetchval("SELECT count(*) FROM messages") == 1


async def _lease(
    pool: asyncpg.Pool, owner: str, seconds: float, limit: int
) -> tuple[uuid.UUID, list[int]]:
    token = uuid.uuid4()
    rows = await pool.fetch(
        QUERIES["lease_due"], owner, token, seconds, limit, ["acme"], [], 100, 1000
    )
    return token, [r["id"] for r in rows]


async def test_leases_are_disjoint_and_expire(pool: asyncpg.Pool) -> None:
    """FOR UPDATE SKIP LOCKED: concurrent workers get disjoint deliveries; an expired lease
    is taken over, and the stale worker can no longer record an outcome."""
    enqueuer = Enqueuer(pool, lifetime=3600, batch_max=16)
    committer = asyncio.create_task(enqueuer.run())
    await asyncio.gather(*(enqueuer.enqueue(_message(n, ("a@x.example",))) for n in range(10)))
    committer.cancel()

    (t1, first), (t2, second) = await asyncio.gather(
        _lease(pool, "w1", 1, 6), _lease(pool, "w2", 1, 6)
    )
    assert len(first) + len(second) == 10 and not set(first) & set(second)
    assert (await _lease(pool, "w3", 1, 10))[1] == []  # all held

    await asyncio.sleep(1.2)
    t3, taken_over = await _lease(pool, "w3", 30, 10)
    assert sorted(taken_over) == sorted(first + second)

    def finish(delivery: int, token: uuid.UUID) -> list[object]:
        event = Event("acme", "delivered", "a@x.example", None, "example", "", {"reply": "250"})
        return [[delivery], [token], ["delivered"], [None], ["250 ok"], ["mx"], ["delivered"],
                "example", [delivery], *columns([event])]  # fmt: skip

    async def recorded() -> tuple[int, int]:
        events = await pool.fetchval("SELECT count(*) FROM events WHERE kind = 'delivered'")
        rates = await pool.fetchval("SELECT coalesce(sum(delivered), 0) FROM rates")
        return events, rates

    stale = await pool.fetch(QUERIES["finish_attempts"], *finish(first[0], t1))
    assert stale == [] and await recorded() == (0, 0)  # the event goes with its attempt
    fresh = await pool.fetch(QUERIES["finish_attempts"], *finish(first[0], t3))
    assert [r["delivery_id"] for r in fresh] == [first[0]] and await recorded() == (1, 1)
    await pool.execute(QUERIES["release_leases"], "w3")
    _, again = await _lease(pool, "w4", 30, 10)
    assert sorted(again) == sorted(set(first + second) - {first[0]})
    assert t2 != t3


async def test_suspended_tenants_mail_is_held(pool: asyncpg.Pool) -> None:
    """P-SUSPEND: a held tenant's deliveries are not leased; they stay queued, not lost."""
    enqueuer = Enqueuer(pool, lifetime=3600, batch_max=16)
    committer = asyncio.create_task(enqueuer.run())
    held = NewMessage("frozen", "a@frozen.example", ("x@y.example",), b"Subject: x\r\n\r\nx\r\n")
    await asyncio.gather(enqueuer.enqueue(held), enqueuer.enqueue(_message(1, ("a@x.example",))))
    committer.cancel()
    token = uuid.uuid4()
    rows = await pool.fetch(QUERIES["lease_due"], "w1", token, 30, 10, ["acme"], [], 100, 1000)
    assert [r["tenant"] for r in rows] == ["acme"]
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE state = 'queued'") == 2
    released = await pool.fetch(
        QUERIES["lease_due"], "w2", uuid.uuid4(), 30, 10, ["frozen"], [], 100, 1000
    )
    assert [r["tenant"] for r in released] == ["frozen"]


async def test_tenants_take_turns_and_busy_domains_wait(pool: asyncpg.Pool) -> None:
    """Fair share: with tenant A's backlog queued first, tenant B's mail is in the first
    batch; a tenant's domain that is saturated in this process is left for later."""
    enqueuer = Enqueuer(pool, lifetime=3600, batch_max=500)
    committer = asyncio.create_task(enqueuer.run())
    backlog = [_message(n, (f"r{n}@x.example",)) for n in range(300)]
    await asyncio.gather(*(enqueuer.enqueue(m) for m in backlog))
    other = NewMessage("beta", "b@beta.example", ("y@x.example",), b"Subject: b\r\n\r\nb\r\n")
    await enqueuer.enqueue(other)
    other_domain = NewMessage("beta", "b@beta.example", ("z@z.example",), b"Subject: c\r\n\r\n")
    await enqueuer.enqueue(other_domain)
    committer.cancel()
    rows = await pool.fetch(
        QUERIES["lease_due"], "w1", uuid.uuid4(), 30, 10, ["acme", "beta"], [], 100, 1000
    )
    tenants = [r["tenant"] for r in rows]
    assert len(rows) == 10 and tenants.count("beta") == 2, tenants
    rows = await pool.fetch(
        QUERIES["lease_due"],
        "w2",
        uuid.uuid4(),
        30,
        10,
        ["acme", "beta"],
        ["acme/x.example"],
        100,
        1000,
    )
    assert rows == []  # every due delivery left is acme's to the saturated domain


async def test_consent_checks_at_rcpt_for_bulk_tenants(pool: asyncpg.Pool) -> None:
    """P-CONSENT-RECORD at RCPT: a bulk tenant's recipient without a record is refused."""
    from datetime import UTC, datetime

    from relay.config.schema import TenantSection
    from relay.policy.checks.consent import ConsentAtRcpt
    from relay.policy.context import PolicyContext
    from relay.policy.lookups import DatabaseLookups
    from relay.policy.verdict import Outcome

    tenant = TenantSection(name="news", domains=["news.example"], networks=["10.0.0.0/8"],
                           stream="bulk", verified=True)  # fmt: skip
    await pool.execute(
        QUERIES["consent_upsert"], "news", ["ok@x.example"], [datetime(2026, 1, 1, tzinfo=UTC)],
        ["198.51.100.1"], ["v1"], ["Yes please"], ["double-opt-in"],
    )  # fmt: skip

    async def verdict(recipient: str, tenant: TenantSection = tenant) -> Outcome:
        ctx = PolicyContext(
            tenant, "a@news.example", [recipient], lookups=DatabaseLookups(pool, Standing(pool))
        )
        return (await ConsentAtRcpt().check(ctx)).outcome

    assert await verdict("OK@x.example") is Outcome.PASS
    assert await verdict("other@x.example") is Outcome.REJECT
    relaxed = tenant.model_copy(update={"require_consent": False})
    assert await verdict("other@x.example", relaxed) is Outcome.SKIP


async def test_events_are_counted_in_rates_by_the_database(pool: asyncpg.Pool) -> None:
    """P-COMPLAINT and P-BOUNCE act on `rates`, which a trigger fills from every insert
    into `events`: a bounce is hard or soft by its detail, an abuse report counts as a
    complaint, and events that are not sending outcomes count nothing."""

    def event(kind: Kind, provider: str = "gmail.com", **detail: object) -> Event:
        return Event("acme", kind, "a@x.example", None, provider, "news", detail)

    await record(pool, [
        event("delivered"), event("delivered"), event("delivered", "yahoo.com"),
        event("deferred"), event("bounced", hard=True), event("bounced", hard=False),
        event("bounced"), event("complained"), event("abuse-report"), event("unsubscribed"),
        event("suppressed"),
    ])  # fmt: skip
    await record(pool, [event("delivered"), event("suppressed")])
    await record(pool, [event("suppressed")])
    rows = await pool.fetch(
        "SELECT site, campaign, delivered, deferred, hard_bounced, soft_bounced, "
        "complained, unsubscribed, bucket = date_trunc('hour', now()) AS this_hour "
        "FROM rates ORDER BY site"
    )
    assert [tuple(r) for r in rows] == [
        ("gmail.com", "news", 3, 1, 1, 2, 2, 1, True),
        ("yahoo.com", "news", 1, 0, 0, 0, 0, 0, True),
    ]
    assert await pool.fetchval("SELECT count(*) FROM events") == 14
