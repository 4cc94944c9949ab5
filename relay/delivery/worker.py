"""Delivery workers: lease due deliveries, send them per destination, record the outcome.

The loop (after procrastinate's worker): a dispatcher leases up to the free capacity of due
deliveries (`FOR UPDATE SKIP LOCKED`, with a lease that expires), groups them by destination
domain and starts one task per connection's worth; a semaphore per site (the operator of
the destination's MX hosts, `relay.delivery.shaping`) bounds its parallel connections.
Side tasks keep the leases alive while work is in flight and wake the dispatcher on
`NOTIFY relay_queue`; polling every second covers a lost notification.

A worker that dies loses its leases when they expire and another takes the work over
(at-least-once: a crash between the remote 250 and our commit may deliver twice, never
zero times). A worker whose lease has expired cannot record an outcome: `finish_attempts`
matches the lease token.
"""

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

import aiosmtplib

from relay import metrics
from relay.config.schema import Config, split_host_port
from relay.delivery.backlog import BacklogScheduler
from relay.delivery.mx import (
    DnsPermanentError,
    DnsTemporaryError,
    MxResolver,
    NullMx,
)
from relay.delivery.outcome import Reply
from relay.delivery.recording import OutcomeRecording
from relay.delivery.reuse import IdleConnections, Target
from relay.delivery.shaping import MAX_WAIT, SiteLimits, SiteShaper
from relay.delivery.targets import MailHosts
from relay.delivery.transaction import Connection, Envelope, TlsPolicy, unreachable
from relay.feedback.reports import verp
from relay.feedback.reputation.standing import Standing
from relay.psl import site_of
from relay.queue.database import Pool
from relay.queue.deliveries import DeliveryQueue, Lease, follow_new_mail
from relay.queue.errors import DATABASE_ERRORS
from relay.queue.sites import SiteStore

log = logging.getLogger(__name__)
_POLL_SECONDS = 1.0
_GATHER_SECONDS = 0.01
"""How long the dispatcher lets a wake-up (NOTIFY, a finished delivery) gather company
before it leases: every lease is a few statements whatever its size (lease, contents, the
attempts, the events), so under a steady stream of single commits one lease per message
cost more than the message. Below saturation, gathering cut the CPU per message of both
PostgreSQL and the relay and shortened the time from the final dot to the 250; a longer
wait gained no more and slowed a saturated run's deliveries (see bench/README.md)."""
LEASE_AHEAD = 5.0  # seconds of a site's rate leased ahead per tenant
LEASE_BATCH = 100  # most deliveries of one tenant's lane leased at a time, so the dispatcher
# sees a backlog's domain saturate before it has taken all the capacity
_RATE_USED_UP = Reply(451, "4.4.5 the site's rate is used up; rescheduled")
"""Our own reply for a delivery the site's rate could not take within MAX_WAIT: it waits
(postponed), with no attempt recorded."""


class DeliveryWorker:
    """All outbound delivery of one relay process."""

    def __init__(
        self,
        pool: Pool,
        dsn: str,
        config: Config,
        standing: Standing,
        secret: bytes | None = None,
    ) -> None:
        self.standing = standing  # the pace factors (P-COMPLAINT, P-BOUNCE)
        self.secret = secret  # signs return-path (VERP) addresses
        self.dsn = dsn
        self.queue = DeliveryQueue(
            pool, f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: dict[uuid.UUID, int] = defaultdict(int)  # lease token -> deliveries
        self._in_flight = 0
        self._pair_in_flight: dict[tuple[str, str], int] = defaultdict(int)  # (tenant, domain)
        self._site_of: dict[str, str] = {}  # destination domain -> site, as last resolved
        self.shaper = SiteShaper(SiteStore(pool), config)
        self.recording = OutcomeRecording(self.queue, config)
        self.backlog = BacklogScheduler(self.queue)
        self.idle = IdleConnections()
        self.resolver = MxResolver(
            [split_host_port(ns) for ns in config.delivery.nameservers],
            timeout=config.delivery.connect_timeout,
        )
        self.reload(config)

    def reload(self, config: Config) -> None:
        """Take new routes and delivery settings (SIGHUP)."""
        self.config = config
        self.settings = config.delivery
        routes = {r.domain: (r.host, r.port) for r in config.routes}
        self.hosts = MailHosts(self.resolver, routes, self.settings.port, self.settings.private_mx)
        self.tls = TlsPolicy(self.settings.tls, self.settings.verify_certificates)
        self.active_tenants = [t.name for t in config.tenants if not t.suspended]
        self.shaper.reload(config)
        self.recording.reload(config)
        self.return_paths = {
            t.name: t.return_path_domain for t in config.tenants if t.return_path_domain
        }

    # -- the loops -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Dispatch until cancelled; side tasks live and die with it."""
        side = [
            asyncio.create_task(follow_new_mail(self.dsn, self._wake.set), name="queue-listen"),
            asyncio.create_task(self._renew_leases(), name="lease-renew"),
        ]
        try:
            while True:
                await self._dispatch_once()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), _POLL_SECONDS)
                await asyncio.sleep(_GATHER_SECONDS)
                self._wake.clear()
        finally:
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)

    async def drain(self, grace: float) -> None:
        """Let deliveries in flight finish for up to `grace` seconds, cancel the rest, and
        give every lease of this process back to the queue (a clean SIGTERM)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.idle.close()
        await self.backlog.close()
        try:
            async with asyncio.timeout(5):
                await self.queue.release_all()
        except DATABASE_ERRORS as exc:
            log.warning("could not release leases (they expire by themselves): %r", exc)

    async def _dispatch_once(self) -> None:
        capacity = self.settings.concurrency - self._in_flight
        if capacity <= 0:
            return
        try:
            leases = await self.queue.lease_due(
                self.settings.lease, capacity, self.active_tenants, self._saturated(), LEASE_BATCH
            )
            metrics.DATABASE_UP.set(1)
        except DATABASE_ERRORS as exc:
            metrics.DATABASE_UP.set(0)
            log.warning("cannot lease deliveries: %r", exc)
            return
        if not leases:
            return
        self._held[leases[0].token] += len(leases)
        self._in_flight += len(leases)
        # one connection carries one tenant's mail to one domain, so a tenant's message never
        # waits behind another tenant's backlog on the same connection
        by_pair: dict[tuple[str, str], list[Lease]] = defaultdict(list)
        for lease in leases:
            by_pair[lease.tenant, lease.domain].append(lease)
            self._pair_in_flight[lease.tenant, lease.domain] += 1
        for (_, domain), group in by_pair.items():
            per_connection = self._limits(domain).messages_per_connection
            for chunk in _per_connection(group, per_connection):
                task = asyncio.create_task(self._deliver(domain, chunk), name=f"deliver:{domain}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.settings.lease / 3))
            tokens = [t for t, n in self._held.items() if n > 0]
            if not tokens:
                continue
            try:
                await self.queue.renew(tokens, self.settings.lease)
            except DATABASE_ERRORS as exc:
                log.warning("cannot renew leases: %r", exc)

    # -- one connection's worth ---------------------------------------------------------------

    def _limits(self, domain: str) -> SiteLimits:
        return self.shaper.limits(self._site_of.get(domain, domain))

    def _saturated(self) -> list[str]:
        """`tenant/domain` pairs with as many deliveries in flight here as the site can take
        soon (its connections' worth, and at most LEASE_AHEAD seconds of its rate): the
        dispatcher leases no more of them. So a slow or rate-limited site keeps a short
        ready queue and never takes the capacity other sites need, and one tenant's backlog
        leaves room for another tenant's mail to the same site. A pair full at its site's
        rate has the rest of its due backlog scheduled at that rate (relay.delivery.backlog),
        so leases do not read it again meanwhile."""
        full = []
        for (tenant, domain), count in self._pair_in_flight.items():
            site = self._site_of.get(domain, domain)
            limits = self._limits(domain)
            # P-COMPLAINT, P-BOUNCE: a tenant over the warning level at a site gets a
            # share of its usual pace there
            factor = self.standing.throttle_factor(tenant, site)
            cap = max(1, int(limits.connections * limits.messages_per_connection * factor))
            rate = self.shaper.rate(site) * factor
            if rate and rate / 60 * LEASE_AHEAD < cap:
                cap = max(1, int(rate / 60 * LEASE_AHEAD))
                if count >= cap:
                    self.backlog.rate_limited((tenant, domain), rate, cap, LEASE_AHEAD)
            if count >= cap:
                full.append(f"{tenant}/{domain}")
        return full

    async def _deliver(self, domain: str, leases: list[Lease]) -> None:
        try:
            replies, site, paused = await self._send(domain, leases)
            if paused is not None and site is not None:
                reply = Reply(451, f"4.4.5 site {site} is paused after failed connections")
                spread = self.settings.site_pause / 2
                await self.recording.postpone(leases, reply, site, paused, spread)
                for pair in {(x.tenant, x.domain) for x in leases}:
                    self.backlog.paused(pair, site, paused, spread, str(reply))
                return
            # not sent for the site's rate: not an attempt, none recorded
            waiting = [x for x in leases if replies[x.id] is _RATE_USED_UP]
            if waiting and site is not None:
                await self.recording.postpone(
                    waiting, _RATE_USED_UP, site, datetime.now(UTC), MAX_WAIT
                )
            tried = [x for x in leases if replies[x.id] is not _RATE_USED_UP]
            if tried:
                await self.recording.record_while_leased(tried, replies, site)
        except Exception:
            log.exception("delivery to %s failed unexpectedly; leases will expire", domain)
        finally:
            for lease in leases:
                pair = (lease.tenant, lease.domain)
                self._pair_in_flight[pair] -= 1
                if self._pair_in_flight[pair] <= 0:
                    del self._pair_in_flight[pair]
            self._in_flight -= len(leases)
            self._held[leases[0].token] -= len(leases)
            if self._held[leases[0].token] <= 0:
                del self._held[leases[0].token]
            self._wake.set()

    async def _send(
        self, domain: str, leases: list[Lease]
    ) -> tuple[dict[int, Reply], str | None, datetime | None]:
        """A Reply for every lease (from the remote server, or our own for DNS, network or
        shaping), the destination's site when its MX hosts are known, and the end of the
        site's pause if it is paused (then nothing was tried, and there are no replies)."""
        try:
            hosts = await self.hosts.targets(domain)
        except DnsPermanentError as exc:
            status = "5.1.10" if isinstance(exc, NullMx) else "5.1.2"
            reply = Reply(550, f"{status} {domain}: {exc or type(exc).__name__}")
            return self._all(leases, reply), None, None
        except DnsTemporaryError as exc:
            reply = Reply(451, f"4.4.3 DNS lookup for {domain} failed: {exc}")
            return self._all(leases, reply), None, None
        site = site_of(hosts[0][0], domain)
        self._site_of[domain] = site
        paused = await self.shaper.paused_until(site)
        if paused is not None:
            return {}, site, paused
        async with self.shaper.slots(site):
            return await self._send_to_site(site, hosts, leases), site, None

    async def _send_to_site(
        self, site: str, hosts: list[tuple[str, str, int]], leases: list[Lease]
    ) -> dict[int, Reply]:
        envelopes = await self._envelopes(leases)
        limit = self._limits(leases[0].domain).messages_per_connection
        reused = await self.idle.take(hosts, len(envelopes), limit)
        if reused is not None:
            connection, target, sent = reused
        else:
            opened, error = await self._connect(hosts)
            if opened is None:
                assert error is not None
                reply = unreachable([h for h, _, _ in hosts], error)
                await self.shaper.record(site, [reply], connected=False)
                return self._all(leases, reply)
            (connection, target), sent = opened, 0
        replies: dict[int, Reply] = {}
        completed = False
        try:
            for envelope, group in envelopes:
                if not await self.shaper.take(site):
                    break  # the site's rate is used up: the rest waits for a later attempt
                by_rcpt = await connection.send(envelope)
                sent += 1
                for lease in group:
                    replies[lease.id] = by_rcpt[lease.recipient]
            completed = True
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            lost = Reply(451, f"4.4.2 Connection to {connection.host} lost: {exc!r}")
            replies.update({x.id: lost for x in leases if x.id not in replies})
        finally:
            if completed and sent < limit and connection.is_connected:
                self.idle.give_back(connection, target, sent)
            else:
                await connection.close()
        await self.shaper.record(site, list(replies.values()), connected=True)
        # not sent: over the site's rate, or erased meanwhile (its rows are gone too)
        replies.update({x.id: _RATE_USED_UP for x in leases if x.id not in replies})
        return replies

    async def _connect(
        self, targets: list[tuple[str, str, int]]
    ) -> tuple[tuple[Connection, Target] | None, BaseException | None]:
        error: BaseException | None = None
        for host, address, port in targets:
            try:
                connection = await Connection.open(
                    host,
                    address,
                    port,
                    helo=self.config.relay.hostname,
                    tls=self.tls,
                    connect_timeout=self.settings.connect_timeout,
                    command_timeout=self.settings.command_timeout,
                )
                return (connection, (host, address, port)), None
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                log.info("cannot use %s [%s]:%d: %r", host, address, port, exc)
                error = exc
        return None, error

    async def _envelopes(self, leases: list[Lease]) -> list[tuple[Envelope, list[Lease]]]:
        """One envelope per message with all its leased recipients of this domain; one per
        recipient where the tenant has a return-path domain, whose envelope sender (VERP)
        names the delivery."""
        by_message: dict[uuid.UUID, list[Lease]] = defaultdict(list)
        for lease in leases:
            by_message[lease.message_id].append(lease)
        contents = await self.queue.contents(list(by_message))
        envelopes = []
        for message_id, group in by_message.items():
            content = contents.get(message_id)
            if content is None:  # erased (P-ERASURE) while leased: nothing left to send
                continue
            return_path = self.return_paths.get(group[0].tenant)
            if return_path and self.secret and group[0].mail_from:
                for x in group:
                    sender = verp.address(self.secret, x.id, return_path)
                    envelopes.append((Envelope(sender, (x.recipient,), content), [x]))
                continue
            recipients = tuple(dict.fromkeys(x.recipient for x in group))
            envelopes.append((Envelope(group[0].mail_from, recipients, content), group))
        return envelopes

    @staticmethod
    def _all(leases: Iterable[Lease], reply: Reply) -> dict[int, Reply]:
        return {lease.id: reply for lease in leases}


def _per_connection(leases: list[Lease], per_connection: int) -> Iterable[list[Lease]]:
    """Split a domain's leases into connection-sized chunks, keeping a message's recipients
    together so they share one transaction."""
    chunk: list[Lease] = []
    messages: set[uuid.UUID] = set()
    for lease in sorted(leases, key=lambda x: x.message_id):
        if lease.message_id not in messages and len(messages) >= per_connection:
            yield chunk
            chunk, messages = [], set()
        chunk.append(lease)
        messages.add(lease.message_id)
    if chunk:
        yield chunk
