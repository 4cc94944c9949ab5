"""Bounces: delivery status notifications (RFC 3464) in an RFC 6522 multipart/report.

When a delivery fails for good (a 5xx, or the queue lifetime ran out) or is long delayed, the
sender must be told in a form both people and programs read: a human explanation, a
`message/delivery-status` part with per-recipient Action, Status (RFC 3463 enhanced code) and
Diagnostic-Code, and the original message's header block (`text/rfc822-headers`: enough to
identify it, without returning the body to a possibly forged sender). `Auto-Submitted:
auto-replied` (RFC 3834 5.) keeps autoresponders from answering; the caller enqueues the result
with a null reverse-path (RFC 5321 4.5.5) so a bounce can never bounce.

The MIME is built with the standard `email` package, never by hand. Inputs that end up in header
fields are one-line: addresses with CR, LF or NUL are refused, remote replies are flattened.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage, Message, MIMEPart
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import Literal

# 998 is RFC 5322's hard line limit: below it the email package folds at spaces and never turns
# a long word of a remote reply into an RFC 2047 encoded-word, which DSN fields do not allow.
# utf8: an SMTPUTF8 address stays as it is (RFC 6532) instead of becoming an encoded-word; the
# only header that can hold one is To, whose address the DSN is sent to with SMTPUTF8 anyway.
_POLICY = SMTP.clone(cte_type="8bit", max_line_length=998, utf8=True)
_MAX_DIAGNOSTIC = 900  # characters; SMTP reply lines are at most 512 (RFC 5321 4.5.3.1.5)
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")  # RFC 3463 2. status-code
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class RecipientStatus:
    recipient: str  # the original envelope recipient
    action: Literal["failed", "delayed"]
    status: str  # RFC 3463 code such as "5.1.1" or "4.4.1"
    diagnostic: str  # the remote reply, or our own reason
    remote_mta: str | None = None  # host name that gave the reply, if any
    last_attempt: datetime | None = None


def _line(text: str) -> str:
    """One line of text: control characters and runs of white space become one space."""
    return " ".join(_CONTROLS.sub(" ", text).split())


def _field(text: str) -> str:
    """A DSN field value: one line of US-ASCII text (RFC 3464 2.1), of bounded length."""
    return _line(text).encode("ascii", "replace").decode("ascii")[:_MAX_DIAGNOSTIC]


def _checked(value: str, what: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{what} contains CR, LF or NUL: {value!r}")
    return value


def _fields(pairs: list[tuple[str, str]]) -> Message:
    """One RFC 3464 field block (the email package models them as header-only messages)."""
    block = Message(policy=_POLICY)
    for name, value in pairs:
        block[name] = value
    return block


def _header_section(raw: bytes) -> bytes:
    """The lines up to the first empty one (RFC 5322 2.1), or all of them if there is none."""
    head = []
    for line in raw.split(b"\n"):
        line = line.removesuffix(b"\r")
        if not line:
            break
        head.append(line)
    return b"".join(line + b"\r\n" for line in head)


def build_dsn(
    *,
    reporting_mta: str,
    original_sender: str,
    original_message: bytes,
    recipients: Sequence[RecipientStatus],
    queue_id: str,
    arrival_date: datetime,
    now: datetime | None = None,
) -> bytes:
    """The complete DSN message, CRLF line endings, ready to enqueue with MAIL FROM:<>."""
    mta = _checked(reporting_mta, "reporting MTA")
    sender = _checked(original_sender, "sender")
    if not recipients:
        raise ValueError("a DSN needs at least one recipient (RFC 3464 2.1)")
    for r in recipients:
        _checked(r.recipient, "recipient")
        if r.action not in ("failed", "delayed") or not _STATUS.fullmatch(r.status):
            raise ValueError(f"bad action or status for {r.recipient!r}: {r.action} {r.status}")
    failed = [r for r in recipients if r.action == "failed"]
    delayed = [r for r in recipients if r.action == "delayed"]

    report = EmailMessage(policy=_POLICY)
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{mta}>"
    report["To"] = sender
    report["Subject"] = (
        "Undelivered Mail Returned to Sender" if failed else "Delayed Mail (still being retried)"
    )
    report["Date"] = format_datetime(now or datetime.now(UTC))
    local = re.sub(r"[^A-Za-z0-9-]+", "-", queue_id)
    report["Message-ID"] = make_msgid(idstring=f"dsn.{local}", domain=mta)
    report["Auto-Submitted"] = "auto-replied"
    report["MIME-Version"] = "1.0"
    report.add_header("Content-Type", "multipart/report", report_type="delivery-status")

    human = _human_part(mta, queue_id, failed, delayed)
    status = _status_part(mta, arrival_date, recipients)
    headers = _headers_part(original_message)
    report.set_payload([human, status, headers])
    return report.as_bytes()


def _human_part(
    mta: str, queue_id: str, failed: list[RecipientStatus], delayed: list[RecipientStatus]
) -> MIMEPart:
    """The first part (RFC 3464 2.1): what happened, for a person to read."""
    lines = [
        f"This is the mail system at {mta}.",
        "",
        f"Your message (queue id {_line(queue_id)}) could not be delivered"
        + (" to one or more recipients." if failed else " yet."),
    ]
    for group, verdict in (
        (failed, "Delivery to these recipients failed; we will not retry:"),
        (delayed, "Delivery to these recipients is delayed; we will keep retrying:"),
    ):
        if group:
            lines += ["", verdict, *(f"<{r.recipient}>: {_line(r.diagnostic)}" for r in group)]
    human = MIMEPart(policy=_POLICY)
    human.set_content("\n".join(lines) + "\n")
    return human


def _status_part(
    mta: str, arrival_date: datetime, recipients: Sequence[RecipientStatus]
) -> MIMEPart:
    """The message/delivery-status part: one block about the message, one per recipient
    (RFC 3464 2.2, 2.3)."""
    blocks = [
        _fields([("Reporting-MTA", f"dns; {mta}"), ("Arrival-Date", format_datetime(arrival_date))])
    ]
    for r in recipients:
        pairs = [
            ("Final-Recipient", f"rfc822; {r.recipient}"),
            ("Action", r.action),
            ("Status", r.status),
        ]
        if r.remote_mta:
            pairs.append(("Remote-MTA", f"dns; {_field(r.remote_mta)}"))
        pairs.append(("Diagnostic-Code", f"smtp; {_field(r.diagnostic)}"))
        if r.last_attempt:
            pairs.append(("Last-Attempt-Date", format_datetime(r.last_attempt)))
        blocks.append(_fields(pairs))
    status = MIMEPart(policy=_POLICY)
    status["Content-Type"] = "message/delivery-status"
    status.set_payload(blocks)
    return status


def _headers_part(original_message: bytes) -> MIMEPart:
    """The third part: the original message's header section (RFC 6522 text/rfc822-headers)."""
    head = _header_section(original_message)
    headers = MIMEPart(policy=_POLICY)
    headers["Content-Type"] = "text/rfc822-headers"
    headers["Content-Transfer-Encoding"] = "7bit" if head.isascii() else "8bit"
    # surrogateescape: the generator writes non-ASCII header bytes back exactly as they came.
    headers.set_payload(head.decode("ascii", "surrogateescape"))
    return headers
