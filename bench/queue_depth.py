"""How long `/metrics` takes to read the queue's depth with millions of deliveries waiting.

    python -m bench.queue_depth [--dsn postgresql://postgres@127.0.0.1:5432/] [--messages N]

Makes a database `queue_depth_bench` on the server (dropped first if there), migrates it,
and stores N messages of 10 deliveries each (default 300,000: 3,000,000 deliveries, a
third due, a tenth held) with SQL shaped like the relay's rows, through the same triggers.
Then times the count the relay used to run at each scrape (one pass over every queued
row) against `QueueHealth.depth()`, which reads the kept counts (migration 0017). Results
go to bench/results/queue-depth-latest.json and a dated copy.
"""

import argparse
import asyncio
import time
from typing import Any

import asyncpg

from bench.results import write_results
from relay.queue.health import QueueHealth
from relay.queue.migrate import migrate

DATABASE = "queue_depth_bench"
FULL_COUNT = """
SELECT count(*) FILTER (WHERE d.hold IS NULL) AS queued,
       count(*) FILTER (WHERE d.hold IS NULL AND next_attempt_at <= now()) AS due,
       count(*) FILTER (WHERE d.hold IS NOT NULL) AS held
FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE d.state = 'queued'
"""


async def _fill(conn: asyncpg.Connection, messages: int) -> None:
    await conn.execute(
        "INSERT INTO messages (id, tenant, mail_from, content, size, received_at)"
        " SELECT gen_random_uuid(), 'acme', 'a@acme.example', '\\x00'::bytea, 1,"
        " now() - interval '1 hour' FROM generate_series(1, $1)",
        messages,
    )
    await conn.execute(
        "INSERT INTO deliveries (message_id, recipient, domain, tenant, expires_at,"
        " next_attempt_at, hold)"
        " SELECT m.id, 'r' || g || '@x.example', 'x.example', 'acme', now() + interval '5 days',"
        " now() - interval '1 minute' + (g % 3) * interval '1 hour',"
        " CASE WHEN g % 10 = 0 THEN 'manual-suspension' END"
        " FROM messages m, generate_series(1, 10) g"
    )
    await conn.execute("VACUUM ANALYZE deliveries")
    await conn.execute("VACUUM ANALYZE messages")


async def _timed(read: Any, times: int) -> tuple[list[float], Any]:
    seconds, result = [], None
    for _ in range(times):
        started = time.perf_counter()
        result = await read()
        seconds.append(round((time.perf_counter() - started) * 1000, 1))
    return seconds, result


async def run(dsn: str, messages: int) -> dict[str, Any]:
    admin = await asyncpg.connect(dsn + "postgres")
    await admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {DATABASE}")
    await admin.close()
    pool = await asyncpg.create_pool(dsn + DATABASE, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            started = time.perf_counter()
            await _fill(conn, messages)
            filled = time.perf_counter() - started
        full_ms, full = await _timed(lambda: pool.fetchrow(FULL_COUNT), 3)
        kept_ms, kept = await _timed(QueueHealth(pool).depth, 5)
    finally:
        await pool.close()
    return {
        "deliveries": messages * 10,
        "fill_seconds": round(filled, 1),
        "full_count_ms": full_ms,
        "full_count": dict(full),
        "depth_ms": kept_ms,
        "depth": {"queued": kept.queued, "due": kept.due, "held": kept.held},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/")
    parser.add_argument("--messages", type=int, default=300_000)
    args = parser.parse_args()
    figures = asyncio.run(run(args.dsn, args.messages))
    print(figures)
    write_results("queue-depth", figures)


if __name__ == "__main__":
    main()
