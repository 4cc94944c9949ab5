"""Bounces: delivery status notifications per RFC 3464 in an RFC 6522 multipart/report.

When a delivery fails for good (a 5xx, or the queue lifetime ran out) the sender must be
told in a form both people and programs read: a human explanation, a
`message/delivery-status` part with per-recipient Status (RFC 3463) and Diagnostic-Code, and
the original message's header block (`text/rfc822-headers`: enough to identify it, without
sending a possibly forged sender the whole body). `Auto-Submitted: auto-replied` (RFC 3834)
keeps autoresponders from answering it; the caller sends it with a null reverse-path.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import Literal

_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class RecipientStatus:
    recipient: str
    action: Literal["failed", "delayed"]
    status: str
    diagnostic: str
    remote_mta: str | None = None
    last_attempt: datetime | None = None


def _clean(text: str) -> str:
    """One line of text: no CR, LF, NUL or other controls (no header injection)."""
    return " ".join(_UNSAFE.sub(" ", text).split())


def _address(value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"address contains CR, LF or NUL: {value!r}")
    return value


def _fields(pairs: list[tuple[str, str]]) -> Message:
    """One RFC 3464 field block (the email package models them as header-only messages)."""
    block = Message(policy=SMTP)
    for name, value in pairs:
        block[name] = value
    return block


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
    now = now or datetime.now(UTC)
    sender = _address(original_sender)
    delayed = all(r.action == "delayed" for r in recipients)

    report = EmailMessage(policy=SMTP)
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    report["To"] = sender
    report["Subject"] = (
        "Delayed Mail (still being retried)" if delayed else "Undelivered Mail Returned to Sender"
    )
    report["Date"] = format_datetime(now)
    report["Message-ID"] = make_msgid(idstring=f"dsn.{queue_id}", domain=reporting_mta)
    report["Auto-Submitted"] = "auto-replied"

    lines = [
        f"This is the mail system at {reporting_mta}.",
        "",
        f"Your message (queue id {queue_id}) could not be delivered "
        + ("yet; delivery will be retried." if delayed else "to these recipients:"),
        "",
    ]
    for r in recipients:
        lines.append(f"<{_address(r.recipient)}>: {_clean(r.diagnostic)}")
    human = EmailMessage(policy=SMTP)
    human.set_content("\r\n".join(lines) + "\r\n")

    blocks = [
        _fields(
            [
                ("Reporting-MTA", f"dns; {reporting_mta}"),
                ("Arrival-Date", format_datetime(arrival_date)),
            ]
        )
    ]
    for r in recipients:
        pairs = [
            ("Final-Recipient", f"rfc822; {_address(r.recipient)}"),
            ("Action", r.action),
            ("Status", _clean(r.status)),
        ]
        if r.remote_mta:
            pairs.append(("Remote-MTA", f"dns; {_clean(r.remote_mta)}"))
        pairs.append(("Diagnostic-Code", f"smtp; {_clean(r.diagnostic)}"))
        if r.last_attempt:
            pairs.append(("Last-Attempt-Date", format_datetime(r.last_attempt)))
        blocks.append(_fields(pairs))
    status_part = Message(policy=SMTP)
    status_part["Content-Type"] = "message/delivery-status"
    status_part.set_payload(blocks)

    head = original_message.split(b"\r\n\r\n", 1)[0]
    headers_part = Message(policy=SMTP)
    headers_part["Content-Type"] = "text/rfc822-headers"
    headers_part["Content-Transfer-Encoding"] = "8bit"
    headers_part.set_payload(head.decode("utf-8", "surrogateescape") + "\r\n")

    report.set_type("multipart/report")
    report.set_param("report-type", "delivery-status")
    report.set_payload([human, status_part, headers_part])
    if "MIME-Version" not in report:
        report["MIME-Version"] = "1.0"
    return report.as_bytes(policy=SMTP.clone(cte_type="8bit"))
