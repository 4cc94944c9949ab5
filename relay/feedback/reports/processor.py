"""The feedback processor: turns stored reports into suppressions, events and rates.

Reports wait in `feedback_reports` (state `new`), written by the feedback listener and the
abuse form; the processor takes them with `FOR UPDATE SKIP LOCKED` (several relay
processes share the work), parses them off the event loop, and in one transaction per
report records what it found:
- a bounce (RFC 3464 DSN, or a provider's text bounce): the delivery is found by the
  return-path (VERP) address it was sent to, else by the relay's queue id or the
  Message-ID of the quoted original; a hard bounce (`classify`) suppresses the recipient
  (reason `hard-bounce`), and every bounce is an event;
- a complaint (ARF, RFC 5965): the delivery is found the same ways (the report's
  Original-Mail-From is our VERP address when the provider kept it); the complainant (the
  report's Original-Rcpt-To, else the delivery's recipient, as providers redact it) is
  suppressed with reason `complaint` and counted (P-COMPLAINT); a `not-spam` report is
  recorded and changes nothing;
- an abuse report (P-ABUSE-DESK: forwarded as an attachment, inline, or pasted headers, or
  sent through the form): the message is found by its trace headers; the reporter (and the
  recipient of the matched delivery) is suppressed with reason `abuse-report`, a complaint
  is counted, and the report is kept for the abuse team (`relay abuse ls|show`).
A report that no parser can read ends `malformed`, one that matches nothing `unmatched`;
both are kept with the reason and counted in `relay_feedback_reports_total`.

Nothing from the internet is believed until it is authenticated, and nothing counts twice:
- a complaint counts only when a `[feedback] providers` entry vouches for it (its network,
  or a verified DKIM signature of its domain, `relay.feedback.reports.authentic`); others end
  `unverified`, kept and visible, changing nothing;
- one complaint per (message, complainant), one bounce of each kind per delivery and one
  abuse report per (message, reporter): a replay ends `duplicate` and changes nothing;
- an abuse report suppresses only addresses the matched message was sent to: the delivery's
  recipient, and the reporter when the message went to them too (a reporter cannot have a
  stranger's address suppressed by naming it); an unmatched report waits for a person.
"""

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Counter

from relay.config.schema import Config
from relay.feedback.reports import verp
from relay.feedback.reports.arf import FeedbackReport, parse_arf, parse_forwarded
from relay.feedback.reports.authentic import vouching_provider
from relay.feedback.reports.bounce import parse_bounce
from relay.feedback.reports.classify import classify
from relay.mail.address import AddressError, parse_path
from relay.queue.database import Pool
from relay.queue.errors import DATABASE_ERRORS
from relay.queue.events import Event, Kind
from relay.queue.outage import every, sleeping
from relay.queue.reports import Delivery, NewReport, ReportInbox, ReportWork

log = logging.getLogger(__name__)
_BATCH = 20

REPORTS = Counter(
    "relay_feedback_reports_total",
    "Reports received by the feedback listener and the abuse form, by channel (return-path, "
    "fbl, abuse, abuse-form), kind (bounce, complaint, abuse) and state after processing "
    "(processed, unmatched: no message of ours found, malformed: no parser could read it).",
    ["channel", "kind", "state"],
)


@dataclass(frozen=True)
class Result:
    state: str  # processed | unmatched | malformed
    kind: str | None = None
    problem: str | None = None
    tenant: str | None = None
    message_id: uuid.UUID | None = None
    reporter: str | None = None


def _about(
    delivery: Delivery, state: str, kind: str, problem: str | None, reporter: str | None
) -> Result:
    """What a report about `delivery` came to."""
    return Result(state, kind, problem, delivery.tenant, delivery.message_id, reporter)


def _address(value: str | None) -> str | None:
    """A valid mailbox address, lower-cased, or None (reports carry all sorts)."""
    if not value:
        return None
    try:
        return parse_path(f"TO:<{value.strip().strip('<>')}>", "TO:").address.lower()
    except AddressError:
        return None


def _queue_id(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


class FeedbackProcessor:
    def __init__(
        self, pool: Pool, config: Config, secret: bytes | None, wake: asyncio.Event
    ) -> None:
        self.inbox = ReportInbox(pool)
        self.config = config
        self.secret = secret
        self.wake = wake

    def reload(self, config: Config) -> None:
        self.config = config

    async def run(self) -> None:
        """Process reports until cancelled, as they arrive (`wake`) or every
        `process_every`; an outage is logged and the next round tries again
        (`relay.queue.outage`)."""
        pause = sleeping(lambda: self.config.feedback.process_every, self.wake)
        await every("feedback processing", self.process_all, pause)

    async def process_all(self) -> None:
        while await self.process_pending():
            pass

    async def process_pending(self) -> int:
        """Process up to one batch of new reports; the number processed."""
        async with self.inbox.claim_new(_BATCH) as (reports, work):
            for report in reports:
                try:
                    async with work.savepoint():
                        result = await self._process(work, report)
                except DATABASE_ERRORS:
                    raise
                except Exception as exc:  # a parser or matching bug must not lose the report
                    log.exception("feedback report %d could not be processed", report.id)
                    result = Result("malformed", problem=f"processing failed: {exc!r}")
                await work.done(report.id, result.state, result.kind, result.problem,
                                result.tenant, result.message_id, result.reporter)  # fmt: skip
                REPORTS.labels(report.channel, result.kind or "", result.state).inc()
                log.info("feedback report %d: %s %s %s", report.id, result.kind, result.state,
                         result.problem or "")  # fmt: skip
        return len(reports)

    async def _process(self, work: ReportWork, report: NewReport) -> Result:
        if report.channel in ("abuse", "abuse-form"):
            return await self._abuse(work, report.raw, report.reporter)
        if b"feedback-report" in report.raw[:65536].lower():
            return await self._complaint(work, report.raw, report.recipients, report.client_address)
        return await self._bounce(work, report.raw, report.recipients)

    # -- finding the delivery ------------------------------------------------------------------

    async def _by_verp(self, work: ReportWork, addresses: Sequence[str | None]) -> Delivery | None:
        if self.secret is None:
            return None
        for address in addresses:
            delivery_id = verp.delivery_of(
                self.secret, address or "", int(self.config.feedback.return_path_lifetime // 86400)
            )
            if delivery_id is not None:
                delivery = await work.delivery(delivery_id)
                if delivery is not None:
                    return delivery
        return None

    async def _by_trace(
        self,
        work: ReportWork,
        queue_id: str | None,
        message_id: str | None,
        recipient: str | None,
    ) -> Delivery | None:
        """By the relay's queue id (its Received: field) or the Message-ID, and the
        recipient when the report names one; a message with one recipient needs none."""
        if _queue_id(queue_id) is None and not message_id:
            return None
        found = await work.deliveries_of(_queue_id(queue_id), message_id, recipient)
        if recipient is None and len({d.message_id for d in found}) == 1 and len(found) > 1:
            return None  # several recipients and none named: do not guess
        return found[0] if found else None

    # -- the three kinds of report -------------------------------------------------------------

    async def _bounce(self, work: ReportWork, raw: bytes, recipients: Sequence[str]) -> Result:
        parsed = await asyncio.to_thread(parse_bounce, raw)
        if not parsed.reports:
            return Result("malformed", "bounce", parsed.problem or "no recipient in the report")
        delivery = await self._by_verp(work, recipients)
        report = parsed.reports[0]
        if delivery is not None:
            named = [
                r for r in parsed.reports if _address(r.recipient) == delivery.recipient.lower()
            ]
            report = named[0] if named else report
        else:
            delivery = await self._by_trace(
                work, parsed.queue_id, parsed.message_id, _address(report.recipient)
            )
        if delivery is None:
            return Result("unmatched", "bounce", "no delivery of ours matches the bounce")
        verdict = classify(report.status, report.diagnostic)
        detail = {
            "status": report.status,
            "action": report.action,
            "category": verdict.category.value,
            "hard": verdict.hard,
            "diagnostic": report.diagnostic,
            "remote_mta": report.remote_mta,
            "source": "dsn",
        }
        kind: Kind = "bounced" if report.failed else "deferred"
        if await work.recorded(delivery.message_id, delivery.recipient, [kind]):
            return Result(
                "duplicate",
                "bounce",
                f"a {kind} report of this delivery is recorded already",
                delivery.tenant,
                delivery.message_id,
            )
        if report.failed and verdict.hard:
            await work.suppress(
                delivery.tenant, delivery.recipient, "hard-bounce", f"dsn {report.status}"
            )
        await work.record([self._event(delivery, kind, delivery.recipient, detail)])
        return Result("processed", "bounce", None, delivery.tenant, delivery.message_id)

    async def _complaint(
        self,
        work: ReportWork,
        raw: bytes,
        recipients: Sequence[str],
        client_address: str | None,
    ) -> Result:
        parsed = await asyncio.to_thread(parse_arf, raw)
        report = parsed.report
        if report is None:
            return Result("malformed", "complaint", parsed.problem or "not an ARF report")
        return_path = report.original.get("Return-Path") if report.original else None
        delivery = await self._by_verp(
            work, [*recipients, report.original_mail_from, _address(return_path)]
        )
        complainant = _address(report.complainant)
        if delivery is None:
            delivery = await self._by_trace(work, report.queue_id, report.message_id, complainant)
        if delivery is None:
            return Result(
                "unmatched",
                "complaint",
                "no delivery of ours matches the report",
                reporter=complainant,
            )
        complainant = complainant or delivery.recipient.lower()
        voucher = await vouching_provider(
            raw,
            client_address,
            self.config.feedback.providers,
            self.config.delivery.nameservers,
        )
        if voucher is None:
            why = "no [feedback] provider vouches for it (network or DKIM signature)"
            return _about(delivery, "unverified", "complaint", why, complainant)
        return await self._complained(work, delivery, report, complainant, voucher)

    async def _complained(
        self,
        work: ReportWork,
        delivery: Delivery,
        report: FeedbackReport,
        complainant: str,
        voucher: str,
    ) -> Result:
        """An authentic complaint about one of our deliveries: counted once (P-COMPLAINT)
        and the complainant suppressed, unless it says the message was not spam."""
        if (report.feedback_type or "abuse").lower() == "not-spam":
            why = "not-spam: nothing to do"
            return _about(delivery, "processed", "complaint", why, complainant)
        if await work.recorded(delivery.message_id, complainant, ["complained"]):
            why = "this complaint is recorded already"
            return _about(delivery, "duplicate", "complaint", why, complainant)
        source = f"arf {report.user_agent or ''}".strip()
        await work.suppress(delivery.tenant, complainant, "complaint", source)
        detail = {
            "feedback_type": report.feedback_type,
            "user_agent": report.user_agent,
            "source_ip": report.source_ip,
            "provider": voucher,
        }
        await work.record([self._event(delivery, "complained", complainant, detail)])
        return _about(delivery, "processed", "complaint", None, complainant)

    async def _abuse(self, work: ReportWork, raw: bytes, form_reporter: str | None) -> Result:
        parsed = await asyncio.to_thread(parse_forwarded, raw)
        reporter = _address(form_reporter) or _address(parsed.reporter)
        if parsed.original is None:
            return Result(
                "malformed",
                "abuse",
                parsed.problem or "no forwarded message found",
                reporter=reporter,
            )
        original_to = [a for a in (_address(t) for t in parsed.original.to) if a]
        named = (
            reporter
            if reporter in original_to
            else (original_to[0] if len(original_to) == 1 else None)
        )
        delivery = await self._by_trace(work, parsed.queue_id, parsed.message_id, named)
        if delivery is None:
            delivery = await self._by_trace(work, parsed.queue_id, parsed.message_id, None)
        if delivery is None:
            return Result(
                "unmatched", "abuse", "no message of ours matches the report", reporter=reporter
            )
        addressed = reporter is not None and (
            reporter == delivery.recipient.lower()
            or await self._by_trace(work, str(delivery.message_id), None, reporter) is not None
        )
        counted = reporter if addressed else delivery.recipient.lower()
        if await work.recorded(delivery.message_id, counted, ["abuse-report"]):
            return Result(
                "duplicate",
                "abuse",
                "an abuse report of this message by this address is recorded already",
                delivery.tenant,
                delivery.message_id,
                reporter,
            )
        suppressed = {delivery.recipient.lower(), *([reporter] if addressed else [])}
        for address in sorted(a for a in suppressed if a):
            await work.suppress(delivery.tenant, address, "abuse-report", "abuse desk")
        detail = {
            "reporter": reporter,
            "how": parsed.how,
            "subject": parsed.subject,
            "reporter_was_a_recipient": addressed,
        }
        await work.record([self._event(delivery, "abuse-report", counted, detail)])
        return Result("processed", "abuse", None, delivery.tenant, delivery.message_id, reporter)

    @staticmethod
    def _event(
        delivery: Delivery, kind: Kind, recipient: str | None, detail: dict[str, object]
    ) -> Event:
        return Event(
            delivery.tenant,
            kind,
            recipient,
            delivery.message_id,
            delivery.site,
            delivery.campaign,
            detail,
        )
