"""The feedback listener: inbound SMTP for what comes back (bounces, complaint reports,
abuse reports), the MX of the tenants' return-path domains.

It authenticates no one and relays nothing: RCPT is accepted only for
- a return-path address the relay signed (`b-TOKEN@return_path_domain`, see `verp`), or
  `postmaster@`/`abuse@` of a return-path domain (RFC 5321 4.5.1, RFC 2142);
- a feedback-loop address (`[feedback] fbl_addresses`) or the abuse desk
  (`[feedback] abuse_address`);
and everything else gets `550 5.7.1`. It runs on the same hardened protocol as the
submission listener (connection caps, size limit, chunked DATA, no smuggling).

A report is stored as it came (`feedback_reports`) and committed before the `250`, then
the processor parses it: a report no parser can read is kept and counted, never lost.
Anyone can connect, so each client address may send `[feedback] reports_per_client`
reports and `report_bytes_per_client` bytes per hour; more get `450 4.7.1` at MAIL.
"""

import asyncio
import logging
import time
from collections import defaultdict, deque

from aiosmtpd.smtp import SMTP, Envelope, Session

from relay import metrics
from relay.config.schema import Config
from relay.feedback.reports import verp
from relay.mail.address import Path
from relay.queue.database import Pool
from relay.queue.errors import DATABASE_ERRORS
from relay.queue.reports import ReportInbox
from relay.smtp import replies
from relay.smtp.session import RelaySession

log = logging.getLogger(__name__)
MAX_REPORT_SIZE = 10 * 1024 * 1024  # a report quotes one message; providers cap far lower

NOT_OURS = "550 5.7.1 Relaying denied: this server takes reports for its own addresses only"
UNKNOWN_RETURN_PATH = "550 5.1.1 No such return-path address"
STORED = "250 2.0.0 Report received as {report_id}"
TOO_MANY_REPORTS = "450 4.7.1 Too many reports from your address this hour; try again later"
_HOUR = 3600.0


class FeedbackHandler:
    """aiosmtpd handler of `role = "feedback"` listeners."""

    def __init__(self, pool: Pool, config: Config, secret: bytes | None) -> None:
        self.inbox = ReportInbox(pool)
        self.secret = secret
        self.received = asyncio.Event()  # set when a report is stored: wakes the processor
        self._recent: defaultdict[str, deque[tuple[float, int]]] = defaultdict(deque)
        self.reload(config)

    def reload(self, config: Config) -> None:
        self.config = config
        self.return_path_domains = {t.return_path_domain for t in config.tenants} - {""}
        self.fbl_addresses = {a.lower() for a in config.feedback.fbl_addresses}
        self.abuse_address = config.feedback.abuse_address.lower()
        self.return_path_days = int(config.feedback.return_path_lifetime // 86400)

    # -- what RelaySMTP asks of a handler ----------------------------------------------------

    def session_opened(self, listener: str) -> None:
        metrics.OPEN_SESSIONS.labels(listener).inc()

    def session_closed(self, listener: str) -> None:
        metrics.OPEN_SESSIONS.labels(listener).dec()

    def size_limit(self, session: Session) -> int:
        return min(MAX_REPORT_SIZE, self.config.smtp.max_message_size)

    async def handle_exception(self, error: Exception) -> str:
        log.exception("unexpected error in a feedback session", exc_info=error)
        return replies.INTERNAL_ERROR

    # -- the transaction ---------------------------------------------------------------------

    def channel_of(self, address: str) -> str | None:
        """Which kind of report an address takes, or None when it is not ours."""
        address = address.lower()
        local, _, domain = address.rpartition("@")
        if address == self.abuse_address:
            return "abuse"
        if address in self.fbl_addresses:
            return "fbl"
        if domain in self.return_path_domains:
            if local in ("postmaster", "abuse"):
                return "abuse" if local == "abuse" else "return-path"
            days = self.return_path_days
            if self.secret and verp.delivery_of(self.secret, address, days) is not None:
                return "return-path"
            return ""  # our domain, but no address of ours
        return None

    def _over_limit(self, client: str) -> bool:
        """Whether `client` sent its hour's worth of reports (or bytes of them) already."""
        now = time.monotonic()
        recent = self._recent[client]
        while recent and recent[0][0] < now - _HOUR:
            recent.popleft()
        if len(self._recent) > 10_000:  # forget clients idle for an hour
            for key in [k for k, v in self._recent.items() if not v or v[-1][0] < now - _HOUR]:
                del self._recent[key]
        settings = self.config.feedback
        return (
            len(recent) >= settings.reports_per_client
            or sum(size for _, size in recent) >= settings.report_bytes_per_client
        )

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, path: Path
    ) -> str:
        assert isinstance(session, RelaySession)
        if self._over_limit(session.client_ip):
            return TOO_MANY_REPORTS
        envelope.mail_from = path.address  # bounces come from the null sender <>
        envelope.mail_options = []
        return replies.SENDER_OK

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, path: Path
    ) -> str:
        channel = self.channel_of(path.address)
        if channel is None:
            return NOT_OURS
        if not channel:
            return UNKNOWN_RETURN_PATH
        if len(envelope.rcpt_tos) >= 50:
            return replies.TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(path.address)
        return replies.RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(session, RelaySession)
        channels = [self.channel_of(r) for r in envelope.rcpt_tos]
        channel = next((c for c in ("abuse", "fbl", "return-path") if c in channels), "fbl")
        content = envelope.content
        assert isinstance(content, bytes)
        try:
            report_id = await self.inbox.store(
                channel, envelope.mail_from or "", envelope.rcpt_tos, session.client_ip, content
            )
        except DATABASE_ERRORS as exc:
            log.error("cannot store a feedback report: %r", exc)
            return replies.QUEUE_UNAVAILABLE
        self._recent[session.client_ip].append((time.monotonic(), len(content)))
        self.received.set()
        log.info("feedback report %d stored channel=%s size=%d", report_id, channel, len(content))
        return STORED.format(report_id=report_id)
