"""A backlog falling due must not stop fresh mail.

    python -m bench.backlog [--sizes 0,100000,1000000] [--fresh 3000] [--dsn DSN]

For each backlog size, and for each state of the backlog's site (`paused`: its MX refuses
connections and the site is paused, as after repeated failures; `rate-limited`: the site
answers again but takes 1,200 messages a minute, the shipped Outlook ceiling), the bench
starts a relay (`bench.relay_under_test`, embedded PostgreSQL unless `--dsn`), stores the
backlog while it is not yet due, and lets it fall due all at once. Then fresh mail goes to
a healthy site (Postfix's smtp-sink): `--fresh` messages of 2 KB from the backlog's own
tenant over 20 smtp-source sessions, and a tenth as many from another tenant. It reports:
- the lease's time (the relay's `lease_due` statement, prepared once and run 20 times,
  each rolled back, with the backlog's destination left out as a saturated process leaves
  it), the median, when the backlog falls due and after the fresh mail;
- fresh mail's delay from its 250 to its delivery being recorded (p50, p99, max), as the
  relay's own rows record it, and its end-to-end rate;
- CPU seconds of PostgreSQL (embedded only) and of the relay during the fresh mail;
- the sizes of the queue's tables at the end.

The backlog rows are written by `fill_backlog`, SQL shaped like the relay's own rows after
two refused attempts (tests/test_bench_backlog.py checks that it matches what the relay
writes). Results go to bench/results/backlog-latest.json and a dated copy.
"""

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiosmtplib
import asyncpg

from bench import procs
from bench.load import smtp_source
from bench.ports import free_port
from bench.relay_under_test import DOMAIN, SINK_DOMAIN, RelayServer
from bench.results import write_results
from bench.sinks import SmtpSink
from relay.queue.deliveries import LANE_HEAD
from relay.queue.sql import QUERIES

BACKLOG_DOMAIN = "slow.example"
OTHER_DOMAIN = "other.example"
OTHER_SOURCE = "127.1.0.1"
"""The other tenant is told apart by its source network, as the bench tenant is."""
RATE_LIMIT = 1200
FALL_DUE_SECONDS = 20.0
"""After the backlog is stored, how long until it falls due (the relay is already running)."""

FILL_MESSAGES = """
INSERT INTO messages (id, tenant, mail_from, content, size, header_message_id,
                      client_address, campaign, bulk, policy, received_at)
SELECT gen_random_uuid(), 'bench', 'load@bench.example', $1::bytea, length($1::bytea),
       '<backlog-' || g || '@bench.example>', '127.0.0.1', NULL, false, '{}'::jsonb,
       now() - interval '20 minutes'
FROM generate_series(1, $2) AS g
"""
FILL_DELIVERIES = """
INSERT INTO deliveries (message_id, recipient, domain, tenant, expires_at, attempts,
                        next_attempt_at, last_reply, site, updated_at)
SELECT m.id, 'rcpt@' || $1, $1, m.tenant, m.received_at + interval '5 days', 2,
       $2::timestamptz, '451 4.7.0 Try again later', $1, now() - interval '5 minutes'
FROM messages AS m WHERE m.header_message_id LIKE '<backlog-%'
"""
FILL_ATTEMPTS = """
INSERT INTO attempts (delivery_id, host, outcome, reply)
SELECT d.id, '127.0.0.1', 'deferred', '451 4.7.0 Try again later'
FROM deliveries AS d, generate_series(1, 2) WHERE d.tenant = 'bench' AND d.domain = $1
"""
BACKLOG_CONTENT = b"Subject: backlog\r\n\r\n" + (b"X" * 78 + b"\r\n") * 25


async def fill_backlog(conn: asyncpg.Connection, count: int, due_at: Any) -> None:
    """`count` messages of the bench tenant to BACKLOG_DOMAIN, each with the two refused
    attempts behind it, due at `due_at`."""
    await conn.execute(FILL_MESSAGES, BACKLOG_CONTENT, count)
    await conn.execute(FILL_DELIVERIES, BACKLOG_DOMAIN, due_at)
    await conn.execute(FILL_ATTEMPTS, BACKLOG_DOMAIN)
    await conn.execute("VACUUM ANALYZE messages, deliveries, attempts")


def _extra(slow_port: int) -> str:
    return f"""
[[tenants]]
name = "other"
domains = ["{OTHER_DOMAIN}"]
networks = ["127.1.0.0/16"]
stream = "transactional"

[tenants.limits]
submissions_per_minute = 100000000

[[routes]]
domain = "{BACKLOG_DOMAIN}"
host = "127.0.0.1"
port = {slow_port}

[[sites]]
name = "{BACKLOG_DOMAIN}"
messages_per_minute = {RATE_LIMIT}
"""


def _dsn(relay: RelayServer, configured: str) -> str:
    if configured:
        return configured
    lines = (relay.data_dir / "pg" / "postmaster.pid").read_text().splitlines()
    return f"postgresql://postgres@/relay?host={lines[4]}"


async def _lease_median(dsn: str) -> float:
    """The median time of the relay's lease statement (prepared once, as the relay's pool
    keeps it), each run rolled back so that it takes nothing."""
    conn = await asyncpg.connect(dsn)
    times = []
    try:
        lease = await conn.prepare(QUERIES["lease_due"])
        for _ in range(20):
            transaction = conn.transaction()
            await transaction.start()
            started = time.perf_counter()
            await lease.fetch(
                "bench", uuid.uuid4(), 20, 200, ["bench", "other"], [f"bench/{BACKLOG_DOMAIN}"],
                100, LANE_HEAD,
            )  # fmt: skip
            times.append((time.perf_counter() - started) * 1000)
            await transaction.rollback()
    finally:
        await conn.close()
    return round(statistics.median(times), 2)


async def _other_tenant(port: int, count: int) -> int:
    """`count` messages from the other tenant over 4 sessions; how many got 250."""
    sent = 0

    async def session(share: int) -> None:
        nonlocal sent
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, source_address=(OTHER_SOURCE, 0))
        await client.connect(start_tls=False)
        for n in range(share):
            body = (
                f"From: <app@{OTHER_DOMAIN}>\r\nTo: <rcpt@{SINK_DOMAIN}>\r\n"
                f"Date: {formatdate()}\r\n"
                f"Message-ID: <other-{uuid.uuid4().hex}@{OTHER_DOMAIN}>\r\n"
                f"Subject: fresh {n}\r\n\r\n" + ("X" * 78 + "\r\n") * 25
            )
            await client.sendmail(f"app@{OTHER_DOMAIN}", [f"rcpt@{SINK_DOMAIN}"], body)
            sent += 1
        await client.quit()

    await asyncio.gather(*(session(count // 4) for _ in range(4)))
    return sent


async def _fresh_figures(dsn: str, since: Any) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT m.tenant, extract(epoch FROM d.updated_at - m.received_at)::float8 AS delay,"
            " m.received_at, d.updated_at FROM deliveries d JOIN messages m ON m.id = d.message_id"
            " WHERE d.domain = $1 AND d.state = 'delivered' AND m.received_at >= $2",
            SINK_DOMAIN, since,
        )  # fmt: skip
        sizes = await conn.fetch(
            "SELECT t.name AS relname, coalesce((SELECT sum(pg_total_relation_size(p.relid))"
            " FROM pg_partition_tree(t.name::regclass) AS p),"
            " pg_total_relation_size(t.name::regclass))::bigint AS bytes"
            " FROM unnest($1::text[]) AS t (name)",
            ["messages", "deliveries", "attempts", "events"],
        )
    finally:
        await conn.close()
    figures: dict[str, Any] = {"table_mb": {r["relname"]: round(r["bytes"] / 2**20, 1)
                                            for r in sizes}}  # fmt: skip
    for tenant in ("bench", "other"):
        mine = [r for r in rows if r["tenant"] == tenant]
        if not mine:
            figures[tenant] = {"delivered": 0}
            continue
        delays = sorted(r["delay"] for r in mine)
        span = max(r["updated_at"] for r in mine) - min(r["received_at"] for r in mine)
        figures[tenant] = {
            "delivered": len(mine),
            "delay_p50_s": round(delays[len(delays) // 2], 3),
            "delay_p99_s": round(delays[min(len(delays) - 1, int(len(delays) * 0.99))], 3),
            "delay_max_s": round(delays[-1], 3),
            "end_to_end_per_s": round(len(mine) / span.total_seconds(), 1),
        }
    return figures


async def _wait_delivered(dsn: str, since: Any, count: int, within: float) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + within
        while True:
            done = await conn.fetchval(
                "SELECT count(*) FROM deliveries d JOIN messages m ON m.id = d.message_id"
                " WHERE d.domain = $1 AND d.state = 'delivered' AND m.received_at >= $2",
                SINK_DOMAIN, since,
            )  # fmt: skip
            if done >= count or time.monotonic() > deadline:
                return int(done)
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


def run_one(size: int, state: str, fresh: int, dsn: str) -> dict[str, Any]:
    healthy = SmtpSink()
    slow = SmtpSink() if state == "rate-limited" else None
    root = Path(tempfile.mkdtemp(prefix="relay-backlog-"))
    relay = RelayServer(
        root, free_port(), healthy.port, dsn, extra=_extra(slow.port if slow else free_port()),
        domains=(DOMAIN, OTHER_DOMAIN),
    )  # fmt: skip
    try:
        relay.configure()
        relay.start()
        database = _dsn(relay, dsn)
        result = asyncio.run(_measure(relay, database, size, state, fresh))
    finally:
        relay.stop()
        healthy.stop()
        if slow:
            slow.stop()
    return result


async def _measure(
    relay: RelayServer, dsn: str, size: int, state: str, fresh: int
) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        due_at = await conn.fetchval(
            "SELECT now() + make_interval(secs => $1)", FALL_DUE_SECONDS + size / 20_000
        )
        started = time.monotonic()
        if size:
            await fill_backlog(conn, size, due_at)
        filled = time.monotonic() - started
        if state == "paused":
            await conn.execute(
                "INSERT INTO sites (site, rate, tokens, failures, paused_until)"
                " VALUES ($1, $2, 1, 3, now() + interval '10 minutes')"
                " ON CONFLICT (site) DO UPDATE"
                " SET failures = 3, paused_until = excluded.paused_until",
                BACKLOG_DOMAIN, float(RATE_LIMIT),
            )  # fmt: skip
        await asyncio.sleep(
            max(0.0, (due_at - await conn.fetchval("SELECT now()")).total_seconds())
        )
        since = await conn.fetchval("SELECT now()")
    finally:
        await conn.close()
    lease_before = await _lease_median(dsn)
    pg = [p for p in [relay.postmaster_pid()] if p and not relay.dsn]
    cpu_pg = procs.cpu_seconds(procs.tree(pg))
    cpu_relay = procs.cpu_seconds(procs.tree(relay.own_pids()))
    source_started = time.monotonic()
    other_task = asyncio.create_task(_other_tenant(relay.port, fresh // 10))
    source = await asyncio.to_thread(smtp_source, relay.port, 20, fresh, 2048)
    other = await other_task
    accepted_seconds = time.monotonic() - source_started
    delivered = await _wait_delivered(dsn, since, fresh + other, 600)
    cpu_pg = procs.cpu_seconds(procs.tree(pg)) - cpu_pg
    cpu_relay = procs.cpu_seconds(procs.tree(relay.own_pids())) - cpu_relay
    figures = await _fresh_figures(dsn, since)
    return {
        "backlog": size,
        "site": state,
        "fill_seconds": round(filled, 1),
        "lease_ms_at_fall_due": lease_before,
        "lease_ms_after": await _lease_median(dsn),
        "fresh_sent": {"bench": fresh, "other": other, "smtp_source_rc": source.returncode},
        "fresh_accept_seconds": round(accepted_seconds, 1),
        "fresh_delivered": delivered,
        "cpu_seconds_until_delivered": {
            "postgres": round(cpu_pg, 1) if pg else None,
            "relay": round(cpu_relay, 1),
        },
        **figures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="0,100000,1000000")
    parser.add_argument("--states", default="rate-limited,paused")
    parser.add_argument("--fresh", type=int, default=3000)
    parser.add_argument("--dsn", default="")
    args = parser.parse_args()
    runs = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for state in args.states.split(",") if size else ["none"]:
            print(f"backlog {size:,} ({state}) ...", flush=True)
            result = run_one(size, state, args.fresh, args.dsn)
            print(f"  {result}", flush=True)
            runs.append(result)
    path = write_results("backlog", {"runs": runs})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
