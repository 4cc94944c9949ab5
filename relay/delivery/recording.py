"""What a connection's attempts came to, recorded while their leases are held: each
delivery's outcome (delivered, retried at its next time, or bounced), its event, and for a
bounce the suppression of a hard-bounced address (P-SUPPRESS) and the DSN to the sender,
all in one transaction with the bounce.
"""

import asyncio
import logging
import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from relay import metrics
from relay.config.schema import Config
from relay.delivery.dsn import RecipientStatus, build_dsn
from relay.delivery.outcome import Bounce, Delivered, Outcome, Reply, Retry, RetryPolicy, decide
from relay.feedback.reports.classify import classify
from relay.queue.deliveries import Attempt, DeliveryQueue, Lease, Recorder
from relay.queue.errors import DATABASE_ERRORS
from relay.queue.events import Event, counted
from relay.queue.store import NewMessage

log = logging.getLogger(__name__)
_RECORD_RETRY_SECONDS = 1.0
"""How often an outcome that could not be recorded is tried again (see record_while_leased)."""


class OutcomeRecording:
    def __init__(self, queue: DeliveryQueue, config: Config) -> None:
        self.queue = queue
        self.reload(config)

    def reload(self, config: Config) -> None:
        """Take new retry and bounce settings (SIGHUP)."""
        self.config = config
        self.settings = config.delivery
        self.policy = RetryPolicy(self.settings.retry_initial, self.settings.retry_max)
        self.return_paths = {
            t.name: t.return_path_domain for t in config.tenants if t.return_path_domain
        }

    async def record_while_leased(
        self,
        leases: list[Lease],
        replies: dict[int, Reply],
        site: str | None,
    ) -> None:
        """Record the outcome, again and again while the database cannot be reached, for as
        long as the leases last: the destination has answered, and an outcome recorded late
        is better than the same message sent again once the lease has expired (a duplicate
        the recipient sees). A retry is harmless if a recording whose commit went unanswered
        did land: `finish_attempts` completes only deliveries still leased with our token.
        Past the lease the error stands, and the deliveries go again (at-least-once)."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.settings.lease
        while True:
            try:
                await self.record(leases, replies, site)
                return
            except DATABASE_ERRORS as exc:
                if loop.time() + _RECORD_RETRY_SECONDS >= give_up_at:
                    raise
                log.warning(
                    "cannot record the outcome of %d deliveries to %s yet, retrying: %r",
                    len(leases),
                    leases[0].domain,
                    exc,
                )
                await asyncio.sleep(_RECORD_RETRY_SECONDS)

    async def postpone(
        self, leases: list[Lease], reply: Reply, site: str, until: datetime, spread: float
    ) -> None:
        """Deliveries not tried (a paused site, or a site's rate used up) wait, with no
        attempt recorded and none counted (none was made, and a pause must not use up a
        message's retries), each due at its own time within `spread` seconds after
        `until`, so that a large backlog does not fall due at one instant. A delivery whose
        lifetime has run out is recorded as usual (it bounces)."""
        now = datetime.now(UTC)
        expired = [x for x in leases if x.expires_at <= now]
        waiting = [x for x in leases if x.expires_at > now]
        if expired:
            await self.record(expired, dict.fromkeys((x.id for x in expired), reply), site)
        if waiting:
            times = [
                min(until + timedelta(seconds=random.uniform(0, spread)), x.expires_at)
                for x in waiting
            ]
            await self.queue.postpone(waiting, times, str(reply), site)

    async def record(
        self,
        leases: list[Lease],
        replies: dict[int, Reply],
        site: str | None,
    ) -> None:
        now = datetime.now(UTC)
        outcomes: dict[int, Outcome] = {}
        for x in leases:
            outcome = decide(
                replies[x.id],
                attempts=x.attempts + 1,
                expires_at=x.expires_at,
                now=now,
                policy=self.policy,
            )
            outcomes[x.id] = outcome
        events = {}
        for lease in leases:
            event = self._event(lease, outcomes[lease.id], site or "")
            if event is not None:
                events[lease.id] = event
        if not any(isinstance(o, Bounce) for o in outcomes.values()):
            # the usual case: the attempts, their events and counts in one statement
            await self._finish(self.queue.recorder(), leases, outcomes, site, events)
        else:
            bounced: dict[uuid.UUID, list[Lease]] = defaultdict(list)
            async with self.queue.transaction() as recorder:
                for lease in await self._finish(recorder, leases, outcomes, site, events):
                    outcome = outcomes[lease.id]
                    if not isinstance(outcome, Bounce):
                        continue
                    bounced[lease.message_id].append(lease)
                    event = events.get(lease.id)
                    if event is not None and event.detail.get("hard"):  # P-SUPPRESS
                        await recorder.suppress(lease.tenant, lease.recipient, "hard-bounce",
                                                f"smtp {outcome.reply.status}")  # fmt: skip
                for group in bounced.values():
                    # never bounce a bounce (RFC 5321 6.1); with a return-path domain the
                    # tenant reads bounces as events instead of DSNs
                    if group[0].mail_from and group[0].tenant not in self.return_paths:
                        await self._bounce(recorder, group, outcomes)
        for lease in leases:
            self._count(lease, outcomes[lease.id], now)

    async def _finish(
        self,
        recorder: Recorder,
        leases: list[Lease],
        outcomes: dict[int, Outcome],
        site: str | None,
        events: dict[int, Event],
    ) -> list[Lease]:
        """Record every attempt of a connection and its event in one statement (the events
        of attempts whose lease was lost are dropped with them); the leases still held
        (those whose outcome was recorded)."""
        attempts = [
            Attempt(x, o.state, o.at if isinstance(o, Retry) else None, str(o.reply),
                    o.reply.host, o.kind)
            for x, o in ((x, outcomes[x.id]) for x in leases)
        ]  # fmt: skip
        recorded = await recorder.finish(attempts, site, events)
        for lease in leases:
            if lease.id not in recorded:
                log.warning("lease of delivery %d was lost; outcome not recorded", lease.id)
        counted(e for i, e in events.items() if i in recorded)
        return [x for x in leases if x.id in recorded]

    @staticmethod
    def _event(lease: Lease, outcome: Outcome, site: str) -> Event | None:
        """The event of an attempt (with the bounce's classification, whose `hard` decides
        P-SUPPRESS), or None: the relay's own DSNs (null sender) are not the tenant's
        sending, and our own pacing (a site's rate or pause) is not the destination's
        answer."""
        if not lease.mail_from:
            return None
        if outcome.reply.host is None and outcome.reply.status == "4.4.5":
            return None
        detail: dict[str, object] = {"reply": str(outcome.reply), "host": outcome.reply.host}
        if not isinstance(outcome, Delivered):
            verdict = classify(outcome.reply.status, outcome.reply.text)
            detail.update(category=verdict.category.value, hard=verdict.hard,
                          status=outcome.reply.status)  # fmt: skip
        return Event(lease.tenant, outcome.kind, lease.recipient, lease.message_id,
                     site, lease.campaign or "", detail)  # fmt: skip

    async def _bounce(
        self, recorder: Recorder, leases: list[Lease], outcomes: dict[int, Outcome]
    ) -> None:
        """Queue an RFC 3464 DSN to the sender in the same transaction as the bounce."""
        first = leases[0]
        original = await recorder.original(first.message_id)
        statuses = []
        for lease in leases:
            outcome = outcomes[lease.id]
            assert isinstance(outcome, Bounce)
            reply = outcome.reply
            diagnostic = str(reply)
            if outcome.status == "4.4.7":
                diagnostic = f"queue lifetime expired; last reply: {reply}"
            statuses.append(
                RecipientStatus(
                    recipient=lease.recipient,
                    action="failed",
                    status=outcome.status,
                    diagnostic=diagnostic,
                    remote_mta=reply.host,
                    last_attempt=datetime.now(UTC),
                )
            )
        content = build_dsn(
            reporting_mta=self.config.relay.hostname,
            original_sender=first.mail_from,
            original_message=original,
            recipients=statuses,
            queue_id=str(first.message_id),
            arrival_date=first.received_at,
        )
        dsn = NewMessage(
            tenant=first.tenant,
            mail_from="",
            recipients=(first.mail_from,),
            content=content,
            header_message_id=None,
        )
        await recorder.enqueue([dsn], self.settings.queue_lifetime)
        log.info(
            "bounce for message %s sent to %s as %s", first.message_id, first.mail_from, dsn.id
        )

    @staticmethod
    def _count(lease: Lease, outcome: Outcome, now: datetime) -> None:
        metrics.DELIVERIES.labels(lease.tenant, outcome.kind).inc()
        if isinstance(outcome, Delivered):
            metrics.DELIVERY_LATENCY.observe((now - lease.received_at).total_seconds())
        log.info(
            "delivery id=%d message=%s tenant=%s outcome=%s reply=%r",
            lease.id,
            lease.message_id,
            lease.tenant,
            outcome.kind,
            str(outcome.reply),
        )
