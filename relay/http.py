"""The HTTP listener: `/metrics` (Prometheus text format) and `/healthz` for operations, and
the tenants' API (`relay.api`).

Queue gauges are read from PostgreSQL at scrape time, so they are as fresh as the scrape
and cost nothing between scrapes. `/healthz` answers 200 only when the database answers.
"""

import asyncio
import logging

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from relay import api, metrics
from relay.config.schema import split_host_port
from relay.queue.sql import QUERIES
from relay.smtp.auth import Authenticator

log = logging.getLogger(__name__)


def make_app(pool: asyncpg.Pool, authenticator: Authenticator) -> web.Application:
    async def metrics_view(_: web.Request) -> web.Response:
        await _refresh_queue_gauges(pool)
        body = generate_latest()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health_view(_: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(2):
                await pool.fetchval("SELECT 1")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            metrics.DATABASE_UP.set(0)
            return web.json_response({"status": "unhealthy", "database": repr(exc)}, status=503)
        metrics.DATABASE_UP.set(1)
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", health_view)
    api.add_routes(app, pool, authenticator)
    return app


async def _refresh_queue_gauges(pool: asyncpg.Pool) -> None:
    try:
        async with asyncio.timeout(2):
            row = await pool.fetchrow(QUERIES["queue_depth"])
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        metrics.DATABASE_UP.set(0)
        log.warning("cannot read queue depth: %r", exc)
        return
    metrics.DATABASE_UP.set(1)
    metrics.QUEUE_DEPTH.labels("due").set(row["due"])
    metrics.QUEUE_DEPTH.labels("scheduled").set(row["queued"] - row["due"])
    metrics.QUEUE_OLDEST.set(row["oldest_seconds"])


async def start_http(
    address: str, pool: asyncpg.Pool, authenticator: Authenticator
) -> web.AppRunner:
    runner = web.AppRunner(make_app(pool, authenticator), access_log=None)
    await runner.setup()
    host, port = split_host_port(address)
    await web.TCPSite(runner, host, port).start()
    return runner
