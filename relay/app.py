"""`relay serve`: start the queue, the delivery workers, the listeners and the HTTP endpoint.

Signals (as Postfix admins expect from `postfix reload` and `postfix stop`):
- SIGHUP reloads `relay.toml` and the DKIM keys: tenants, credentials, limits, routes and
  signing keys change for new commands at once, open sessions stay open. An invalid file is
  refused with its errors logged, and the running configuration stays. Listener addresses,
  TLS files and the database need a restart.
- SIGTERM/SIGINT: stop accepting connections, give open sessions and deliveries in flight
  `_GRACE_SECONDS` to finish, release this process's leases, stop the embedded database.
"""

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from relay import metrics
from relay.config.load import ConfigError, load_config
from relay.config.schema import Config
from relay.delivery.worker import DeliveryWorker
from relay.dkim.service import DkimSigner
from relay.feedback import reputation, retention
from relay.feedback.canary import CanaryTask
from relay.feedback.listener import FeedbackHandler
from relay.feedback.processor import FeedbackProcessor
from relay.feedback.unsubscribe import SECRET_ENV, load_secret
from relay.feedback.webhooks import WebhookDispatcher
from relay.http import start_http
from relay.policy.domain_status import DomainStatus
from relay.queue.database import Database
from relay.queue.store import Enqueuer
from relay.smtp.handler import SubmissionHandler
from relay.smtp.listener import start_listeners
from relay.smtp.tls import certificate_expiry, server_context

log = logging.getLogger(__name__)
_GRACE_SECONDS = 10.0
_RESTART_SECONDS = 5.0


async def _supervised(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run a side task (feedback, webhooks, retention, reputation, canaries, domain checks)
    for as long as the relay runs: an error it did not expect (a database outage surfacing
    in a form it does not catch, say) is logged and the task started again, since none of
    them is worth stopping the relay's listeners and deliveries for."""
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the %s task failed; starting it again in %.0f s", name, _RESTART_SECONDS)
            await asyncio.sleep(_RESTART_SECONDS)


async def serve(config_path: Path, config: Config) -> None:
    secret = load_secret(config.policy.unsubscribe_secret_file)
    signing = [t.name for t in config.tenants if t.unsubscribe == "relay" or t.return_path_domain]
    if secret is None and signing:
        raise SystemExit(
            f'tenants {", ".join(signing)} (unsubscribe = "relay" or a return_path_domain) '
            f"need the relay's signing secret: {SECRET_ENV} or [policy] unsubscribe_secret_file"
        )
    database = await Database.open(config)
    enqueuer = Enqueuer(
        database.pool, lifetime=config.delivery.queue_lifetime, batch_max=config.queue.commit_batch
    )
    signer = DkimSigner(config.relay.data_dir, config.dkim.expire_after or None)
    domains = DomainStatus(database.pool, config)
    await domains.refresh()
    handler = SubmissionHandler(config, enqueuer, signer, domains, unsubscribe_secret=secret)
    worker = DeliveryWorker(database.pool, database.dsn, config, secret)
    webhooks = WebhookDispatcher(database.pool, config)
    feedback = FeedbackHandler(database.pool, config, secret)
    processor = FeedbackProcessor(database.pool, config, secret, feedback.received)
    canary = CanaryTask(database.pool, config)
    tasks = [
        asyncio.create_task(enqueuer.run(), name="group-commit"),
        asyncio.create_task(worker.run(), name="delivery"),
        *(
            asyncio.create_task(_supervised(name, run), name=name)
            for name, run in {
                "domain-status": domains.run,
                "retention": lambda: retention.run(database.pool, lambda: handler.config.feedback),
                "feedback": processor.run,
                "webhooks": webhooks.run,
                "canary": canary.run,
                "reputation": lambda: reputation.run(
                    database.pool, lambda: handler.config.reputation
                ),
            }.items()
        ),
    ]
    handlers = {"submission": handler, "feedback": feedback}
    servers, sessions = await start_listeners(config, handlers, server_context(config))
    expiry = certificate_expiry(config)
    for listener in config.listeners:
        metrics.TLS_CERTIFICATE_EXPIRY.labels(listener.name).set(expiry)
    abuse_reports = feedback.received if config.feedback.abuse_address else None
    http = await start_http(
        config.http.address, database.pool, handler.authenticator, config.policy, abuse_reports
    )
    log.info(
        "relay ready: listeners %s, http %s, queue %s",
        ", ".join(f"{x.name}={x.address}" for x in config.listeners),
        config.http.address,
        "embedded PostgreSQL" if not config.queue.dsn else "configured PostgreSQL",
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    pending: set[asyncio.Task[None]] = set()

    def reload() -> None:
        try:
            new = load_config(config_path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration:\n%s", exc)
            return
        signer.expire_after = new.dkim.expire_after or None
        signer.reload()
        handler.reload(new)
        worker.reload(new)
        feedback.reload(new)
        processor.reload(new)
        webhooks.reload(new)
        canary.reload(new)
        domains.config = new
        refresh = loop.create_task(domains.refresh())  # verifications made since, at once
        pending.add(refresh)
        refresh.add_done_callback(pending.discard)
        log.info("configuration reloaded from %s", config_path)

    loop.add_signal_handler(signal.SIGHUP, reload)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    watch = [asyncio.create_task(stop.wait()), *tasks]
    done, _ = await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not watch[0] and task.exception():
            log.error("a core task died: %r", task.exception())

    log.info("shutting down: no new connections, %.0f s for sessions to finish", _GRACE_SECONDS)
    for server in servers:
        server.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_GRACE_SECONDS):
            while sessions.total > 0:  # noqa: ASYNC110 - a counter, polled at shutdown only
                await asyncio.sleep(0.1)
    for task in tasks[1:]:  # all but the group commit, which stores what sessions accepted
        task.cancel()
    await worker.drain(_GRACE_SECONDS)
    tasks[0].cancel()
    watch[0].cancel()
    await asyncio.gather(*tasks, *watch, return_exceptions=True)
    await http.cleanup()
    await database.close()
    log.info("stopped")
