"""Accepting a submitted message, whatever protocol brought it: the DATA policy checks, the
headers the relay adds, the DKIM signature and the commit to the queue, in that order.

The SMTP handler (`relay.smtp.handler`) calls `Acceptance.accept` at the end of DATA and
turns the outcome into its reply; nothing here knows of sessions, replies or aiosmtpd. Steps:
- a Message-ID is added if the message has none (RFC 5322 3.6.4; P-HDR-SANE allows adding
  one, never a false one);
- the policy pipeline's DATA checks run; a refusal cites its P-rule and nothing is queued;
- the one-click unsubscribe headers are added when P-UNSUB says so, before signing so DKIM
  covers them; then the trace header (RFC 5321 4.4) the caller gives;
- the message is DKIM-signed with the tenant domain's keys (P-DKIM) and committed; only
  after the commit is it accepted (a `250` is never given for mail that could be lost).
"""

import asyncio
import functools
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from relay import metrics
from relay.config.schema import Config, TenantSection
from relay.dkim.service import DkimSigner
from relay.feedback.privacy.unsubscribe import Unsubscribe
from relay.feedback.privacy.unsubscribe import headers as unsubscribe_headers
from relay.mail.wire import LARGE_MESSAGE
from relay.policy.context import Lookups, PolicyContext
from relay.policy.domain_status import DomainStatus
from relay.policy.pipeline import Pipeline, refusal
from relay.policy.verdict import Verdict
from relay.queue.store import Enqueuer, NewMessage, QueueUnavailable

log = logging.getLogger(__name__)
_POLICY_SECONDS = metrics.ACCEPT_STAGE_SECONDS.labels("policy")
_SIGNING_SECONDS = metrics.ACCEPT_STAGE_SECONDS.labels("signing")
_STORAGE_SECONDS = metrics.ACCEPT_STAGE_SECONDS.labels("storage")

_MESSAGE_ID = re.compile(rb"^message-id[ \t]*:[ \t]*([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", re.I | re.M)


@dataclass(frozen=True)
class Submission:
    """One message as the client handed it over, with what was decided before its content."""

    tenant: TenantSection
    mail_from: str
    recipients: Sequence[str]
    body: bytes
    client_address: str
    earlier_verdicts: Sequence[Verdict] = ()
    """The MAIL and RCPT checks' verdicts, stored with the message as its audit trail."""
    trace: Callable[[uuid.UUID], bytes] = lambda queue_id: b""
    """The trace header for the queue id the message gets (`Received:`, RFC 5321 4.4)."""


QUEUE_UNAVAILABLE = "queue"
"""Refused because the queue did not commit: the client should try again later."""
NO_UNSUBSCRIBE_SECRET = "internal"
"""Refused because P-UNSUB wants a link and the relay has no secret to sign it with."""


@dataclass(frozen=True)
class Outcome:
    """Queued (`queue_id`), or refused: `refused` names the P-rule, `QUEUE_UNAVAILABLE` or
    `NO_UNSUBSCRIBE_SECRET`; a policy refusal brings the reply its rule gives."""

    queue_id: uuid.UUID | None = None
    refused: str | None = None
    policy_reply: str = ""


class Acceptance:
    """What accepting a message needs of the process: its settings, checks, signer, shared
    state and queue. One per process, shared by every session; `config` is replaced on
    reload."""

    def __init__(
        self,
        config: Config,
        enqueuer: Enqueuer,
        signer: DkimSigner,
        pipeline: Pipeline,
        lookups: Lookups | None,
        domains: DomainStatus | None,
        unsubscribe_secret: bytes | None,
    ) -> None:
        self.config = config
        self.enqueuer = enqueuer
        self.signer = signer
        self.pipeline = pipeline
        self.lookups = lookups
        self.domains = domains
        self.unsubscribe_secret = unsubscribe_secret

    async def accept(self, submission: Submission) -> Outcome:
        started = time.perf_counter()
        tenant, body = submission.tenant, submission.body
        queue_id = uuid.uuid4()
        header_id = message_id(body)
        if header_id is None:
            header_id = f"<{queue_id}@{self.config.relay.hostname}>"
            body = b"Message-ID: " + header_id.encode() + b"\r\n" + body
        ctx = self._context(submission, body)
        verdicts = await self.pipeline.run("data", ctx)
        checked = time.perf_counter()
        refused = refusal(verdicts)
        if refused is not None:
            return Outcome(refused=refused.rule, policy_reply=refused.reply())
        if ctx.add_unsubscribe:
            if self.unsubscribe_secret is None:
                return Outcome(refused=NO_UNSUBSCRIBE_SECRET)
            request = Unsubscribe(tenant.name, submission.recipients[0], header_id)
            url = self.config.policy.unsubscribe_url
            body = unsubscribe_headers(url, self.unsubscribe_secret, request) + body
        # the listener has refused or normalised every bare CR and LF, and the lines added
        # here end in CRLF. On the event loop: a thread (OpenSSL releases the GIL) measured
        # slower with one process per core, its hand-offs costing more than the RSA
        # signature itself; but a large message's body hash would hold the loop too long
        sign = functools.partial(
            self.signer.sign,
            tenant,
            submission.trace(queue_id) + body,
            ctx.from_domain,
            crlf_checked=True,
        )
        content = await asyncio.to_thread(sign) if len(body) >= LARGE_MESSAGE else sign()
        signed = time.perf_counter()
        audit = [*submission.earlier_verdicts, *verdicts]
        message = NewMessage(
            id=queue_id,
            tenant=tenant.name,
            mail_from=submission.mail_from,
            recipients=tuple(submission.recipients),
            content=content,
            header_message_id=header_id,
            client_address=submission.client_address,
            audit=tuple((v.rule, v.outcome.value, v.reason) for v in audit),
            campaign=ctx.campaign,
            bulk=ctx.is_bulk,
        )
        try:
            await self.enqueuer.enqueue(message)
        except QueueUnavailable as exc:
            log.error("queue unavailable tenant=%s: %s", tenant.name, exc)
            return Outcome(refused=QUEUE_UNAVAILABLE)
        _observe(message, started, checked, signed, time.perf_counter())
        return Outcome(queue_id=queue_id)

    def _context(self, submission: Submission, body: bytes) -> PolicyContext:
        """What the DATA checks look at, with this process's settings and shared state."""
        return PolicyContext(
            submission.tenant,
            submission.mail_from,
            list(submission.recipients),
            body,
            self.lookups,
            self.domains.for_policy() if self.domains else None,
            tuple(self.config.policy.service_contacts),
            signing_domains=self.signer.domains,
            allow_unsigned=self.config.dkim.allow_unsigned,
            content_categories=frozenset(self.config.policy.content_categories),
            max_mime_parts=self.config.smtp.max_mime_parts,
            max_mime_depth=self.config.smtp.max_mime_depth,
        )


def message_id(content: bytes) -> str | None:
    """The Message-ID field's value, from the header section only."""
    end = content.find(b"\r\n\r\n")
    head = content if end < 0 else content[: end + 2]
    if not head.startswith(b"\r\n"):
        head = b"\r\n" + head
    match = _MESSAGE_ID.search(head)
    if not match:
        return None
    value = match.group(1).decode("utf-8", "replace").strip()
    return value or None


def _observe(
    message: NewMessage, started: float, checked: float, signed: float, stored: float
) -> None:
    """Count and log an accepted message, with the time each step of its acceptance took."""
    metrics.MESSAGES_RECEIVED.labels(message.tenant).inc()
    metrics.TIME_TO_250.observe(stored - started)
    _POLICY_SECONDS.observe(checked - started)
    _SIGNING_SECONDS.observe(signed - checked)
    _STORAGE_SECONDS.observe(stored - signed)
    log.info(
        "accepted queue_id=%s tenant=%s recipients=%d size=%d message_id=%s",
        message.id,
        message.tenant,
        len(message.recipients),
        len(message.content),
        message.header_message_id,
    )
