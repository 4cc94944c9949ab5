"""A mailbox provider's side of feedback: the multipart/report messages (RFC 6522) its MTA
and its feedback loop send back about delivered mail, and an SMTP session to hand one to the
relay's feedback listener. The end-to-end feedback and reputation tests share them."""

import smtplib

SECRET = "s3cret-for-return-paths-and-tokens-0123456789"
"""The relay's `unsubscribe_secret_file` content in these tests: it also signs the VERP
return paths (relay.feedback.reports.verp) that reports are addressed to."""


def multipart_report(headers: str, report_type: str, parts: list[tuple[str, bytes]]) -> bytes:
    """A multipart/report (RFC 6522) written out by hand, as providers' MTAs send them."""
    boundary = "=_report_boundary_42"
    lines = [
        headers.replace("\n", "\r\n").encode(),
        b"MIME-Version: 1.0\r\n",
        f'Content-Type: multipart/report; report-type={report_type}; boundary="{boundary}"'
        "\r\n\r\n".encode(),
    ]
    for content_type, body in parts:
        lines.append(f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode())
        lines.append(body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n")
    lines.append(f"--{boundary}--\r\n".encode())
    return b"".join(lines)


def dsn_report(return_path: str, recipient: str, original: bytes) -> bytes:
    """An RFC 3464 DSN as a provider's MTA writes one, days after accepting the message."""
    status = (
        "Reporting-MTA: dns; mx.inbox.example\n\n"
        f"Final-Recipient: rfc822; {recipient}\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 mailbox disabled after the message was accepted\n"
    )
    return multipart_report(
        "From: Mail Delivery Subsystem <mailer-daemon@mx.inbox.example>\n"
        f"To: {return_path}\nSubject: Undelivered Mail Returned to Sender\n",
        "delivery-status",
        [
            ("text/plain", b"Your message could not be delivered to its recipient's mailbox."),
            ("message/delivery-status", status.encode()),
            ("text/rfc822-headers", original.split(b"\r\n\r\n", 1)[0]),
        ],
    )


def arf_report(return_path: str, complainant: str, original: bytes) -> bytes:
    """An ARF report (RFC 5965) as a provider's feedback loop sends one."""
    fields = (
        "Feedback-Type: abuse\nUser-Agent: InboxFBL/1.0\nVersion: 1\n"
        f"Original-Mail-From: <{return_path}>\nOriginal-Rcpt-To: <{complainant}>\n"
        "Arrival-Date: Mon, 30 Nov 2026 05:00:00 +0000\nSource-IP: 192.0.2.1\n"
    )
    return multipart_report(
        "From: Feedback Loop <fbl@inbox.example>\nTo: fbl@relay.test\n"
        "Subject: Complaint about a message from your network\n",
        "feedback-report",
        [
            ("text/plain", b"This is an email abuse report for a message from your IP."),
            ("message/feedback-report", fields.encode()),
            ("message/rfc822", original),
        ],
    )


def send_report(port: int, mail_from: str, rcpt: str, raw: bytes) -> tuple[int, bytes]:
    """Hand `raw` to the listener on `port` as a provider does; the first refusal, at RCPT
    or DATA, or the reply to DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("mx.inbox.example")
        client.mail(mail_from)
        code, reply = client.rcpt(rcpt)
        if code != 250:
            return code, reply
        return client.data(raw)
