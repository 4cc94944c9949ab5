"""`relay serve`: start the queue, the delivery workers, the listeners and the HTTP endpoint.

Signals (as Postfix admins expect from `postfix reload` and `postfix stop`):
- SIGHUP reloads `relay.toml` and the DKIM keys: tenants, credentials, limits, routes and
  signing keys change for new commands at once, open sessions stay open. An invalid file is
  refused with its errors logged, and the running configuration stays. Listener addresses,
  TLS files and the database need a restart.
- SIGTERM/SIGINT: stop accepting connections, give open sessions and deliveries in flight
  `_GRACE_SECONDS` to finish, release this process's leases, stop the embedded database.

With `[relay] processes` above 1 this process also starts, restarts and signals the SMTP
worker processes (`serve_smtp_worker`, `relay.serve.processes`): SIGHUP is passed on to
them, and SIGTERM stops them, each draining its own sessions, before the database stops.
Both kinds of process are one `Relay`, with the parts their role needs.
"""

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from relay import metrics
from relay.config.load import ConfigError, log_warnings, read_config
from relay.config.schema import Config
from relay.delivery.worker import DeliveryWorker
from relay.dkim.keys import activate_missing_keys
from relay.dkim.service import DkimSigner
from relay.feedback.events.webhooks import WebhookDispatcher
from relay.feedback.privacy.retention import Retention
from relay.feedback.privacy.unsubscribe import SECRET_ENV, load_secret
from relay.feedback.reports.processor import FeedbackProcessor
from relay.feedback.reputation.canary import CanaryTask
from relay.feedback.reputation.judge import ReputationRounds
from relay.feedback.reputation.standing import Standing
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
    """The main process: everything, and the SMTP worker processes if configured."""
    _private_data_dir(config)
    secret = load_secret(config.policy.unsubscribe_secret_file)
    signing = [t.name for t in config.tenants if t.unsubscribe == "relay" or t.return_path_domain]
    if secret is None and signing:
        raise SystemExit(
            f'tenants {", ".join(signing)} (unsubscribe = "relay" or a return_path_domain) '
            f"need the relay's signing secret: {SECRET_ENV} or [policy] unsubscribe_secret_file"
        )
    await Relay(config_path, config).run()


async def serve_smtp_worker(config_path: Path, config: Config, index: int) -> None:
    """SMTP worker `index` of `[relay] processes` (started by `serve`, see
    `relay.serve.processes`)."""
    await Relay(config_path, config, worker=index).run()


def _smtp_only(config: Config) -> Config:
    """An SMTP worker's view of the configuration: the submission listeners only, on the
    main process's database through a small pool."""
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
    return smtp_only


class Relay:
    """The parts of one relay process, built, started, reloaded and stopped together.

    Every process has the submission parts: the database pools, the group commit (so a
    `250` comes only after the commit), the DKIM signer, the domain verdicts, the
    suppression filter, the reputation standing and the submission handler. The main
    process (`worker` None) also has the delivery worker, the feedback listener and its
    processor, webhooks, canaries, retention, reputation rounds, the HTTP listener and the
    SMTP worker processes. A worker process (`worker` = its index) has nothing else: no
    migrations, no delivery, no side tasks, no HTTP; its metrics go to the main process's
    `/metrics` through a Unix socket."""

    def __init__(self, config_path: Path, config: Config, worker: int | None = None) -> None:
        self.config_path = config_path
        self.config = config if worker is None else _smtp_only(config)
        self.worker = worker
        self.secret = load_secret(config.policy.unsubscribe_secret_file)
        processes = config.relay.process_count
        # Checked before anything starts: a metrics socket path too long stops us here.
        self.processes = (
            SmtpWorkers(config_path, config.relay.data_dir, processes - 1)
            if worker is None and processes > 1
            else None
        )
        self.tasks: dict[str, Callable[[], Awaitable[None]]] = {}
        """The side tasks, restarted if they fail (`_supervised`)."""
        self.reloadable: list[Reloadable] = []
        self._pending: set[asyncio.Task[None]] = set()

    async def build(self) -> None:
        """Open the database and make the parts; nothing listens yet."""
        config, main = self.config, self.worker is None
        self.database = await Database.open(config, run_migrations=main)
        pool = self.database.pool
        self.enqueuer = Enqueuer(
            self.database.submission_pool,
            lifetime=config.delivery.queue_lifetime,
            batch_max=config.queue.commit_batch,
        )
        if main:
            _generate_missing_keys(config)
        self.signer = DkimSigner(config.relay.data_dir, config.dkim.expire_after or None)
        self.domains = DomainStatus(DomainRecords(pool), config)
        await self.domains.refresh()
        self.suppressions = SuppressionFilter(self.database.dsn)
        self.standing = Standing(pool)
        self.handler = SubmissionHandler(
            config,
            self.enqueuer,
            self.signer,
            self.domains,
            unsubscribe_secret=self.secret,
            suppressions=self.suppressions,
            standing=self.standing,
        )
        self.handlers: dict[str, object] = {"submission": self.handler}
        self.tasks = {
            # the main process checks the domains; the workers follow its verdicts
            "domain-status": self.domains.run if main else self.domains.follow,
            "suppression-filter": self.suppressions.run,
        }
        if main:
            self._build_main()

    def _build_main(self) -> None:
        config, pool, secret = self.config, self.database.pool, self.secret
        self.delivery = DeliveryWorker(pool, self.database.dsn, config, self.standing, secret)
        self.feedback = FeedbackHandler(pool, config, secret)
        self.handlers["feedback"] = self.feedback
        processor = FeedbackProcessor(pool, config, secret, self.feedback.received)
        webhooks = WebhookDispatcher(pool, config)
        canary = CanaryTask(pool, config)
        retention = Retention(pool, config)
        rounds = ReputationRounds(pool, config, self.standing)
        self.reloadable = [self.delivery, self.feedback, processor, webhooks, canary, retention,
                           rounds]  # fmt: skip
        self.tasks |= {
            "retention": retention.run,
            "feedback": processor.run,
            "webhooks": webhooks.run,
            "canary": canary.run,
            "reputation": rounds.run,
        }

    async def start(self) -> None:
        """Start the tasks, then listen; the SMTP workers start after our own listeners (a
        port already taken stops us first)."""
        config = self.config
        self.vital = [asyncio.create_task(self.enqueuer.run(), name="group-commit")]
        if self.worker is None:
            self.vital.append(asyncio.create_task(self.delivery.run(), name="delivery"))
        self.side = [
            asyncio.create_task(_supervised(name, run), name=name)
            for name, run in self.tasks.items()
        ]
        self.servers, self.sessions = await start_listeners(
            config,
            self.handlers,
            server_context(config),
            reuse_port=self.worker is not None or self.processes is not None,
        )
        if self.worker is not None:
            self.snapshots = await serve_snapshots(socket_path(config.relay.data_dir, self.worker))
            log.info(
                "smtp worker %d ready (pid %d): listeners %s", self.worker, os.getpid(),
                ", ".join(f"{x.name}={x.address}" for x in config.listeners),
            )  # fmt: skip
            return
        expiry = certificate_expiry(config)
        for listener in config.listeners:
            metrics.TLS_CERTIFICATE_EXPIRY.labels(listener.name).set(expiry)
        if self.processes is not None:
            await self.processes.start(self.database.dsn)
        await self._start_http()
        log.info(
            "relay ready: listeners %s, http %s, queue %s, %d process%s",
            ", ".join(f"{x.name}={x.address}" for x in config.listeners),
            config.http.address,
            "embedded PostgreSQL" if not config.queue.dsn else "configured PostgreSQL",
            config.relay.process_count,
            "es" if config.relay.process_count > 1 else "",
        )

    async def _start_http(self) -> None:
        config = self.config
        self.http = await start_http(
            config.http.address,
            self.database.pool,
            self.handler.authenticator,
            config.policy,
            self.feedback.received if config.feedback.abuse_address else None,
            self.processes.snapshots if self.processes else None,
            config.http.trusted_proxies,
        )

    def reload(self, new: Config) -> None:
        """SIGHUP: DKIM keys, tenants, credentials, limits, routes and settings change for
        new commands at once; open sessions stay open. Listener addresses, TLS files and the
        database need a restart."""
        if self.worker is None:
            _generate_missing_keys(new)  # before the SMTP workers are told to load the keys
        self.signer.expire_after = new.dkim.expire_after or None
        self.signer.reload()
        self.handler.reload(new)
        self.domains.config = new
        refresh = asyncio.get_running_loop().create_task(self.domains.refresh())
        self._pending.add(refresh)  # new verdicts at once
        refresh.add_done_callback(self._pending.discard)
        for part in self.reloadable:
            part.reload(new)
        if self.processes is not None:
            self.processes.reload()

    async def stop(self) -> None:
        """Stop listening; give open sessions and deliveries in flight `_GRACE_SECONDS`;
        what sessions accepted is committed before the group commit stops."""
        if self.worker is None:
            log.info("shutting down: no new connections, %.0f s for sessions to finish",
                     _GRACE_SECONDS)  # fmt: skip
        else:
            log.info("smtp worker %d shutting down: %.0f s for sessions to finish",
                     self.worker, _GRACE_SECONDS)  # fmt: skip
        for server in self.servers:
            server.close()
        if self.processes is None:
            await _sessions_end(self.sessions)
        else:  # the workers drain their sessions and group commits meanwhile
            await asyncio.gather(
                _sessions_end(self.sessions), self.processes.stop(_GRACE_SECONDS + 10)
            )
        for task in (*self.side, *self.vital[1:]):  # the group commit stores what was accepted
            task.cancel()
        if self.worker is None:
            await self.delivery.drain(_GRACE_SECONDS)
        self.vital[0].cancel()
        await asyncio.gather(*self.side, *self.vital, return_exceptions=True)
        if self.worker is None:
            await self.http.cleanup()
        else:
            self.snapshots.close()
            socket_path(self.config.relay.data_dir, self.worker).unlink(missing_ok=True)
        await self.database.close()
        log.info("stopped" if self.worker is None else f"smtp worker {self.worker} stopped")

    async def run(self) -> None:
        """Build, start, run until SIGTERM or SIGINT (or a vital task ends), stop."""
        await self.build()
        await self.start()
        stop = _handle_signals(self.config_path, self.reload)
        waiting = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiting, *self.vital], return_when=asyncio.FIRST_COMPLETED)
        for task in done - {waiting}:  # the group commit and delivery loops never end alone
            log.error("the %s task ended: %r", task.get_name(), task.exception())
        waiting.cancel()
        await self.stop()


class Reloadable(Protocol):
    def reload(self, config: Config) -> None: ...


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


async def _sessions_end(sessions: ConnectionCounter) -> None:
    """Wait until the open sessions end, at most `_GRACE_SECONDS`."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_GRACE_SECONDS):
            while sessions.total > 0:  # noqa: ASYNC110 - a counter, polled at shutdown only
                await asyncio.sleep(0.1)
