"""`relay serve`: start the queue, the delivery workers, the listeners and the HTTP endpoint.

Signals (as Postfix admins expect from `postfix reload` and `postfix stop`):
- SIGHUP reloads `relay.toml` and the DKIM keys: tenants, credentials, limits, routes and
  signing keys change for new commands at once, open sessions stay open. An invalid file is
  refused with its errors logged, and the running configuration stays. Listener addresses,
  TLS files and the database need a restart.
- SIGTERM/SIGINT: stop accepting connections, give open sessions and deliveries in flight
  `_GRACE_SECONDS` to finish, release this process's leases, stop the embedded database.

With `[relay] processes` above 1 this process also starts, restarts and signals the SMTP
worker processes (`serve_smtp_worker`, `relay.serve.processes`): SIGHUP is passed on to them, and
SIGTERM stops them, each draining its own sessions, before the database stops.
"""

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from relay import metrics
from relay.config.load import ConfigError, log_warnings, read_config
from relay.config.schema import Config
from relay.delivery.worker import DeliveryWorker
from relay.dkim.keys import activate_missing_keys
from relay.dkim.service import DkimSigner
from relay.feedback.events.webhooks import WebhookDispatcher
from relay.feedback.privacy import retention
from relay.feedback.privacy.unsubscribe import SECRET_ENV, load_secret
from relay.feedback.reports.processor import FeedbackProcessor
from relay.feedback.reputation import judge as reputation
from relay.feedback.reputation.canary import CanaryTask
from relay.policy.domain_status import DomainStatus
from relay.policy.suppression_filter import SuppressionFilter
from relay.queue.database import Database
from relay.queue.domains import DomainRecords
from relay.queue.store import Enqueuer
from relay.serve.processes import DSN_ENV, POOL_SIZE, SmtpWorkers, serve_snapshots, socket_path
from relay.smtp.feedback import FeedbackHandler
from relay.smtp.handler import SubmissionHandler
from relay.smtp.limits import ConnectionCounter
from relay.smtp.listener import start_listeners
from relay.smtp.tls import certificate_expiry, server_context
from relay.web.server import start_http

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


def _private_data_dir(config: Config) -> None:
    """`data_dir` holds DKIM and TLS keys and the embedded database: readable by the relay's
    user only (0700), made so at every start if it was not."""
    path = Path(config.relay.data_dir)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)


async def serve(config_path: Path, config: Config) -> None:
    _private_data_dir(config)
    secret = load_secret(config.policy.unsubscribe_secret_file)
    signing = [t.name for t in config.tenants if t.unsubscribe == "relay" or t.return_path_domain]
    if secret is None and signing:
        raise SystemExit(
            f'tenants {", ".join(signing)} (unsubscribe = "relay" or a return_path_domain) '
            f"need the relay's signing secret: {SECRET_ENV} or [policy] unsubscribe_secret_file"
        )
    processes = config.relay.process_count
    # Checked before anything starts: a metrics socket path too long stops us here.
    workers = (
        SmtpWorkers(config_path, config.relay.data_dir, processes - 1) if processes > 1 else None
    )
    database = await Database.open(config)
    enqueuer = Enqueuer(
        database.submission_pool,
        lifetime=config.delivery.queue_lifetime,
        batch_max=config.queue.commit_batch,
    )
    _generate_missing_keys(config)
    signer = DkimSigner(config.relay.data_dir, config.dkim.expire_after or None)
    domains = DomainStatus(DomainRecords(database.pool), config)
    await domains.refresh()
    suppressions = SuppressionFilter(database.dsn)
    handler = SubmissionHandler(
        config, enqueuer, signer, domains, unsubscribe_secret=secret, suppressions=suppressions
    )
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
                "suppression-filter": suppressions.run,
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
    servers, sessions = await start_listeners(
        config, handlers, server_context(config), reuse_port=processes > 1
    )
    expiry = certificate_expiry(config)
    for listener in config.listeners:
        metrics.TLS_CERTIFICATE_EXPIRY.labels(listener.name).set(expiry)
    if workers is not None:  # after our own listeners: a port already taken stops us first
        await workers.start(database.dsn)
    abuse_reports = feedback.received if config.feedback.abuse_address else None
    http = await start_http(
        config.http.address,
        database.pool,
        handler.authenticator,
        config.policy,
        abuse_reports,
        workers.snapshots if workers else None,
        config.http.trusted_proxies,
    )
    log.info(
        "relay ready: listeners %s, http %s, queue %s, %d process%s",
        ", ".join(f"{x.name}={x.address}" for x in config.listeners),
        config.http.address,
        "embedded PostgreSQL" if not config.queue.dsn else "configured PostgreSQL",
        processes,
        "es" if processes > 1 else "",
    )

    pending: set[asyncio.Task[None]] = set()

    def reload(new: Config) -> None:
        _generate_missing_keys(new)  # before the SMTP workers are told to load the keys
        _reload_submission(new, signer, handler, domains, pending)
        worker.reload(new)
        feedback.reload(new)
        processor.reload(new)
        webhooks.reload(new)
        canary.reload(new)
        if workers is not None:
            workers.reload()

    stop = _handle_signals(config_path, reload)
    watch = [asyncio.create_task(stop.wait()), *tasks]
    done, _ = await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not watch[0]:  # the group commit and delivery loops never end by themselves
            log.error("the %s task ended: %r", task.get_name(), task.exception())

    log.info("shutting down: no new connections, %.0f s for sessions to finish", _GRACE_SECONDS)
    for server in servers:
        server.close()
    if workers is None:
        await _sessions_end(sessions)
    else:  # the workers drain their sessions and group commits meanwhile
        await asyncio.gather(_sessions_end(sessions), workers.stop(_GRACE_SECONDS + 10))
    for task in tasks[1:]:  # all but the group commit, which stores what sessions accepted
        task.cancel()
    await worker.drain(_GRACE_SECONDS)
    tasks[0].cancel()
    watch[0].cancel()
    await asyncio.gather(*tasks, *watch, return_exceptions=True)
    await http.cleanup()
    await database.close()
    log.info("stopped")


def _generate_missing_keys(config: Config) -> None:
    """`[dkim] generate_missing` (the demo, local tests): every tenant domain without an
    active key gets one, as the demo's TLS certificate is made when none is configured.
    Only this process makes keys; the SMTP workers load them."""
    if not config.dkim.generate_missing:
        return
    root = Path(config.relay.data_dir) / "dkim"
    for tenant in config.tenants:
        for domain in activate_missing_keys(root, tenant.domains):
            log.info("DKIM key made and activated for %s ([dkim] generate_missing)", domain)


def _handle_signals(
    config_path: Path, apply: Callable[[Config], None], *, warn: bool = True
) -> asyncio.Event:
    """SIGHUP reads the file again and `apply`s it, or logs why it was refused and keeps the
    running configuration; SIGTERM and SIGINT set the returned event (stop). The file's
    warnings are logged if `warn`: by the main process, not again by each SMTP worker."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def reload() -> None:
        try:
            new, warnings = read_config(config_path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration:\n%s", exc)
            return
        if warn:
            log_warnings(warnings)
        apply(new)
        log.info("configuration reloaded from %s", config_path)

    def stop_on(signum: signal.Signals) -> None:
        log.info("%s received: stopping", signum.name)
        stop.set()

    loop.add_signal_handler(signal.SIGHUP, reload)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_on, signum)
    return stop


def _reload_submission(
    new: Config,
    signer: DkimSigner,
    handler: SubmissionHandler,
    domains: DomainStatus,
    pending: set[asyncio.Task[None]],
) -> None:
    """What a reload changes on the submission path, alike in the main process and in the
    SMTP workers: DKIM keys, tenants, credentials and limits, and the domain verdicts."""
    signer.expire_after = new.dkim.expire_after or None
    signer.reload()
    handler.reload(new)
    domains.config = new
    refresh = asyncio.get_running_loop().create_task(domains.refresh())  # new verdicts at once
    pending.add(refresh)
    refresh.add_done_callback(pending.discard)


async def _sessions_end(sessions: ConnectionCounter) -> None:
    """Wait until the open sessions end, at most `_GRACE_SECONDS`."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_GRACE_SECONDS):
            while sessions.total > 0:  # noqa: ASYNC110 - a counter, polled at shutdown only
                await asyncio.sleep(0.1)


async def serve_smtp_worker(config_path: Path, config: Config, index: int) -> None:
    """Run SMTP worker `index` of `[relay] processes` (started by `serve`, see
    `relay.serve.processes`): the submission listeners on the main process's addresses
    (SO_REUSEPORT), with a submission handler, its own group commit (so its 250, too, comes
    only after the commit), its DKIM signer and domain verdicts, on a small pool of the main
    process's database. Nothing else: no migrations, no delivery, no feedback listener, no
    side tasks, no HTTP; its metrics go to the main process's `/metrics` through a Unix
    socket. SIGHUP reloads the configuration and keys as `serve` does for the same parts;
    SIGTERM stops it as `serve` stops its listeners."""
    secret = load_secret(config.policy.unsubscribe_secret_file)
    smtp_only = config.model_copy(
        update={
            "listeners": [x for x in config.listeners if x.role == "submission"],
            "queue": config.queue.model_copy(
                update={
                    "dsn": os.environ.get(DSN_ENV) or config.queue.dsn,
                    "pool_size": min(POOL_SIZE, config.queue.pool_size),
                }
            ),
        }
    )
    if not smtp_only.queue.dsn:
        raise SystemExit(f"an SMTP worker needs the main process's database: {DSN_ENV}")
    database = await Database.open(smtp_only, run_migrations=False)
    enqueuer = Enqueuer(
        database.submission_pool,
        lifetime=config.delivery.queue_lifetime,
        batch_max=config.queue.commit_batch,
    )
    signer = DkimSigner(config.relay.data_dir, config.dkim.expire_after or None)
    domains = DomainStatus(DomainRecords(database.pool), config)
    await domains.refresh()
    suppressions = SuppressionFilter(database.dsn)
    handler = SubmissionHandler(
        config, enqueuer, signer, domains, unsubscribe_secret=secret, suppressions=suppressions
    )
    tasks = [
        asyncio.create_task(enqueuer.run(), name="group-commit"),
        *(
            asyncio.create_task(_supervised(name, run), name=name)
            for name, run in {
                "domain-status": domains.follow,
                "suppression-filter": suppressions.run,
            }.items()
        ),
    ]
    servers, sessions = await start_listeners(
        smtp_only, {"submission": handler}, server_context(config), reuse_port=True
    )
    snapshots = await serve_snapshots(socket_path(config.relay.data_dir, index))
    log.info(
        "smtp worker %d ready (pid %d): listeners %s", index, os.getpid(),
        ", ".join(f"{x.name}={x.address}" for x in smtp_only.listeners),
    )  # fmt: skip

    pending: set[asyncio.Task[None]] = set()
    stop = _handle_signals(
        config_path,
        lambda new: _reload_submission(new, signer, handler, domains, pending),
        warn=False,
    )
    watch = [asyncio.create_task(stop.wait()), tasks[0]]
    done, _ = await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
    if tasks[0] in done and tasks[0].exception():
        log.error("the group commit died: %r", tasks[0].exception())

    log.info("smtp worker %d shutting down: %.0f s for sessions to finish", index, _GRACE_SECONDS)
    for server in servers:
        server.close()
    await _sessions_end(sessions)
    for task in (*tasks, watch[0]):  # the sessions are over: what they accepted is committed
        task.cancel()
    await asyncio.gather(*tasks, watch[0], return_exceptions=True)
    snapshots.close()
    socket_path(config.relay.data_dir, index).unlink(missing_ok=True)
    await database.close()
    log.info("smtp worker %d stopped", index)
