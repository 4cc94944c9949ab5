"""P-RETENTION on a real PostgreSQL: bodies go once their deliveries have ended plus the
window, envelopes, events and dealt-with reports after the longer window; nothing queued
or younger is touched, and the hourly rates stay."""

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
import tomli_w

from relay.config.schema import FeedbackSection
from relay.feedback.privacy.retention import Purged, purge_once
from relay.queue.migrate import migrate
from tests.support.peers import ROOT

pytestmark = pytest.mark.queue

WINDOWS = FeedbackSection(retention_bodies="7d", retention_events="90d")
BODY = b"Subject: hello\r\nTo: alice@inbox.example\r\n\r\nsee you\r\n"


async def _message(
    pool: asyncpg.Pool, received_days: float, *deliveries: tuple[str, float]
) -> uuid.UUID:
    """A message received `received_days` ago with deliveries (state, days since their
    last update), each with one attempt, and an audit-trail row."""
    mid = uuid.uuid4()
    await pool.execute(
        "INSERT INTO messages (id, tenant, mail_from, content, size, received_at)"
        " VALUES ($1, 'acme', 'app@acme.example', $2, $3, now() - $4 * interval '1 day')",
        mid, BODY, len(BODY), received_days,
    )  # fmt: skip
    for n, (state, days) in enumerate(deliveries):
        delivery = await pool.fetchval(
            "INSERT INTO deliveries (message_id, recipient, domain, state, expires_at, updated_at,"
            " tenant) VALUES ($1, $2, 'inbox.example', $3, now() + interval '1 day',"
            "         now() - $4 * interval '1 day', 'acme') RETURNING id",
            mid, f"r{n}@inbox.example", state, days,
        )  # fmt: skip
        outcome = "deferred" if state == "queued" else state.replace("deleted", "bounced")
        await pool.execute(
            "INSERT INTO attempts (delivery_id, at, outcome, reply)"
            " VALUES ($1, now() - $2 * interval '1 day', $3, '250 OK')",
            delivery, days, outcome,
        )  # fmt: skip
    await pool.execute(
        'UPDATE messages SET policy = \'[{"rule": "P-SUPPRESS", "outcome": "pass"}]\''
        " WHERE id = $1",
        mid,
    )
    return mid


async def _body(pool: asyncpg.Pool, mid: uuid.UUID) -> tuple[bytes, bool] | None:
    row = await pool.fetchrow(
        "SELECT content, content_purged_at IS NOT NULL AS purged FROM messages WHERE id = $1", mid
    )
    return None if row is None else (bytes(row["content"]), row["purged"])


@pytest.mark.asyncio
async def test_bodies_go_after_the_last_delivery_plus_the_window(pool: asyncpg.Pool) -> None:
    done = await _message(pool, 8, ("delivered", 8))
    failed = await _message(pool, 12, ("bounced", 10), ("deleted", 9))
    recent = await _message(pool, 2, ("delivered", 1))
    mixed = await _message(pool, 8, ("delivered", 8), ("queued", 8))
    queued = await _message(pool, 20, ("queued", 20))  # retried, or held for a suspended tenant
    late = await _message(pool, 10, ("delivered", 10), ("bounced", 6))  # last attempt 6 days ago

    assert await purge_once(pool, WINDOWS) == Purged(bodies=2)

    for mid in (done, failed):
        assert await _body(pool, mid) == (b"", True)
        # the envelope stays: sender, recipients, attempts, audit trail
        assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE message_id = $1", mid)
        policy = await pool.fetchval("SELECT policy FROM messages WHERE id = $1", mid)
        assert "P-SUPPRESS" in policy
    for mid in (recent, mixed, queued, late):
        assert await _body(pool, mid) == (BODY, False)
    assert await purge_once(pool, WINDOWS) == Purged()


@pytest.mark.asyncio
async def test_envelopes_events_and_reports_go_after_the_longer_window(pool: asyncpg.Pool) -> None:
    ancient = await _message(pool, 100, ("delivered", 100))
    held = await _message(pool, 100, ("queued", 100))
    month = await _message(pool, 30, ("delivered", 30))
    await pool.execute(
        "INSERT INTO rates (tenant, bucket, delivered) VALUES"
        " ('acme', date_trunc('hour', now() - interval '100 days'), 1)"
    )
    await pool.execute(
        "INSERT INTO events (tenant, kind, at, recipient) VALUES"
        " ('acme', 'delivered', now() - interval '100 days', 'old@inbox.example'),"
        " ('acme', 'complained', now() - interval '91 days', 'old@inbox.example'),"
        " ('acme', 'delivered', now() - interval '1 day', 'new@inbox.example')"
    )
    await pool.execute(
        "INSERT INTO feedback_reports (channel, raw, state, received_at) VALUES"
        " ('fbl', 'a', 'processed', now() - interval '100 days'),"
        " ('fbl', 'b', 'unmatched', now() - interval '100 days'),"
        " ('abuse', 'c', 'malformed', now() - interval '100 days'),"
        " ('fbl', 'd', 'new', now() - interval '100 days'),"
        " ('fbl', 'e', 'processed', now() - interval '1 day')"
    )

    counted = await pool.fetchval("SELECT sum(delivered) FROM rates")
    purged = await purge_once(pool, WINDOWS, batch=2)  # several batches

    assert purged == Purged(bodies=1, envelopes=1, events=2, reports=3)
    assert await _body(pool, ancient) is None
    assert not await pool.fetchval("SELECT count(*) FROM deliveries WHERE message_id = $1", ancient)
    assert await pool.fetchval("SELECT count(*) FROM attempts") == 2  # held's and month's
    assert await _body(pool, held) == (BODY, False)
    assert await _body(pool, month) == (b"", True)
    events = await pool.fetch("SELECT recipient FROM events")
    assert [r["recipient"] for r in events] == ["new@inbox.example"]
    reports = await pool.fetch(
        "SELECT convert_from(raw, 'UTF8') AS raw FROM feedback_reports ORDER BY id"
    )
    assert [r["raw"] for r in reports] == ["d", "e"]
    assert counted == 3  # the row inserted, and the two delivered events (a trigger)
    assert await pool.fetchval("SELECT sum(delivered) FROM rates") == 3  # the aggregate stays


def test_queue_show_reads_a_purged_message(database: str, tmp_path: Path) -> None:
    """`relay queue show` on a message whose body is gone shows the envelope, no headers."""

    async def setup() -> uuid.UUID:
        pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
            mid = await _message(pool, 8, ("delivered", 8))
            assert (await purge_once(pool, WINDOWS)).bodies == 1
            return mid
        finally:
            await pool.close()

    mid = asyncio.run(setup())
    config = tmp_path / "relay.toml"
    document = {
        "relay": {"hostname": "relay.test", "data_dir": str(tmp_path / "data")},
        "queue": {"dsn": database},
        "listeners": [{"name": "submission", "address": "127.0.0.1:2587"}],
    }
    config.write_text(tomli_w.dumps(document))
    shown = subprocess.run(
        [sys.executable, "-m", "relay", "queue", "show", str(mid)[:8], "--config", str(config)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert (
        f"message   {mid}" in shown.stdout and "rcpt <r0@inbox.example> delivered" in shown.stdout
    )
