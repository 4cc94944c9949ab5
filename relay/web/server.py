"""The HTTP listener: `/metrics` (Prometheus text format) and `/healthz` for operations, the
tenants' API (`relay.web.api`), the one-click unsubscribe endpoint (`relay.web.oneclick`)
and the abuse report form (`relay.web.abuse_form`).

Queue gauges are read from PostgreSQL at scrape time, so they are as fresh as the scrape
and cost nothing between scrapes. With SMTP worker processes (`[relay] processes`),
`/metrics` adds their counters to this process's at scrape time too (`relay.serve.processes`), so
one scrape of the main process sees the whole relay. `/healthz` answers 200 only when the
database answers.
"""

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from relay import metrics
from relay.auth import Authenticator
from relay.config.schema import PolicySection, split_host_port
from relay.queue.database import Pool
from relay.queue.errors import DATABASE_ERRORS
from relay.queue.health import QueueHealth
from relay.serve.processes import MergedMetrics, Snapshot
from relay.web import abuse_form, api, oneclick
from relay.web.forwarded import TRUSTED_PROXIES

WorkerMetrics = Callable[[], Awaitable[list[Snapshot]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger(__name__)


def make_app(
    pool: Pool,
    authenticator: Authenticator,
    policy: PolicySection | None = None,
    abuse_reports: asyncio.Event | None = None,
    worker_metrics: WorkerMetrics | None = None,
    trusted_proxies: Sequence[str] = (),
) -> web.Application:
    """The routes; `policy` mounts the one-click endpoint, `abuse_reports` (set when a
    report is stored, to wake the feedback processor) the abuse form; `worker_metrics`
    reads the SMTP workers' metrics for `/metrics`; `trusted_proxies` are the networks
    whose `X-Forwarded-For` names the client (`relay.web.forwarded`)."""

    health = QueueHealth(pool)

    async def metrics_view(_: web.Request) -> web.Response:
        await _refresh_queue_gauges(health)
        if worker_metrics is None:
            body = generate_latest()
        else:
            body = generate_latest(MergedMetrics(REGISTRY, await worker_metrics()))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health_view(_: web.Request) -> web.Response:
        try:
            await health.ping()
        except DATABASE_ERRORS as exc:
            metrics.DATABASE_UP.set(0)
            return web.json_response({"status": "unhealthy", "database": repr(exc)}, status=503)
        metrics.DATABASE_UP.set(1)
        return web.json_response({"status": "ok"})

    app = web.Application(middlewares=[_database_outage])
    app[TRUSTED_PROXIES] = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_proxies)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", health_view)
    api.add_routes(app, pool, authenticator)
    if policy is not None:  # the one-click unsubscribe endpoint (RFC 8058)
        oneclick.add_routes(app, pool, policy)
    if abuse_reports is not None:  # P-ABUSE-DESK's report form
        abuse_form.add_routes(app, pool, abuse_reports)
    return app


@web.middleware
async def _database_outage(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every endpoint the same way while the database is down: `503` with `Retry-After`
    (RFC 9110 15.6.4, 10.2.3), so a tenant's client or a mail client posting a one-click
    unsubscribe tries again, instead of a `500` that reads like a bug. Nothing was stored."""
    try:
        return await handler(request)
    except DATABASE_ERRORS as exc:
        log.error("%s %s not served, the database did not answer: %r",
                  request.method, request.path, exc)  # fmt: skip
        return web.json_response(
            {"error": "the database is unavailable; nothing was stored, try again"},
            status=503,
            headers={"Retry-After": "60"},
        )


async def _refresh_queue_gauges(health: QueueHealth) -> None:
    try:
        depth = await health.depth()
    except DATABASE_ERRORS as exc:
        metrics.DATABASE_UP.set(0)
        log.warning("cannot read queue depth: %r", exc)
        return
    metrics.DATABASE_UP.set(1)
    metrics.QUEUE_DEPTH.labels("due").set(depth.due)
    metrics.QUEUE_DEPTH.labels("scheduled").set(depth.queued - depth.due)
    metrics.QUEUE_DEPTH.labels("held").set(depth.held)
    metrics.QUEUE_OLDEST.set(depth.oldest_seconds)


async def start_http(
    address: str,
    pool: Pool,
    authenticator: Authenticator,
    policy: PolicySection | None = None,
    abuse_reports: asyncio.Event | None = None,
    worker_metrics: WorkerMetrics | None = None,
    trusted_proxies: Sequence[str] = (),
) -> web.AppRunner:
    app = make_app(pool, authenticator, policy, abuse_reports, worker_metrics, trusted_proxies)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = split_host_port(address)
    await web.TCPSite(runner, host, port).start()
    return runner
