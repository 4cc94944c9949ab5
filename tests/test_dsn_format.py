"""Bounces in the RFC 3464 / RFC 6522 format that people and programs read."""

import email
import email.policy
from datetime import UTC, datetime
from email.parser import HeaderParser

import pytest

from relay.delivery.dsn import RecipientStatus, build_dsn

ORIGINAL = (
    b"From: app@acme.example\r\nTo: bob@x.example\r\nSubject: Order 42\r\n"
    b"Message-ID: <42@acme.example>\r\n\r\nSecret body text\r\n"
)
WHEN = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _dsn(*recipients: RecipientStatus) -> email.message.EmailMessage:
    raw = build_dsn(
        reporting_mta="relay.test",
        original_sender="app@acme.example",
        original_message=ORIGINAL,
        recipients=recipients,
        queue_id="q-1",
        arrival_date=WHEN,
        now=WHEN,
    )
    assert b"\n" not in raw.replace(b"\r\n", b""), "only CRLF line endings"
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


FAILED = RecipientStatus(
    "bob@x.example", "failed", "5.1.1", "550 5.1.1 no such user", "mx.x.example", WHEN
)
EXPIRED = RecipientStatus("carol@y.example", "failed", "4.4.7", "queue lifetime expired")


def test_top_level_headers() -> None:
    """RFC 3834 5: auto-replied; the DSN goes to the original sender from MAILER-DAEMON."""
    dsn = _dsn(FAILED)
    assert dsn["From"] == "Mail Delivery System <MAILER-DAEMON@relay.test>"
    assert dsn["To"] == "app@acme.example"
    assert dsn["Subject"] == "Undelivered Mail Returned to Sender"
    assert dsn["Auto-Submitted"] == "auto-replied"
    assert dsn["Message-ID"].endswith("@relay.test>")


def test_report_structure_and_fields() -> None:
    """RFC 6522: multipart/report with the human part, the delivery-status, the headers;
    RFC 3464 2.2 per-message and 2.3 per-recipient fields, blocks separated by blank lines."""
    dsn = _dsn(FAILED, EXPIRED)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    human, status, headers = dsn.iter_parts()
    assert human.get_content_type() == "text/plain"
    assert "q-1" in human.get_content() and "no such user" in human.get_content()
    assert status.get_content_type() == "message/delivery-status"
    blocks = [HeaderParser().parsestr(b.as_string()) for b in status.get_payload()]
    assert blocks[0]["Reporting-MTA"] == "dns; relay.test"
    assert blocks[0]["Arrival-Date"] == "Mon, 23 Nov 2026 12:00:00 +0000"
    assert [b["Final-Recipient"] for b in blocks[1:]] == [
        "rfc822; bob@x.example",
        "rfc822; carol@y.example",
    ]
    assert blocks[1]["Status"] == "5.1.1" and blocks[1]["Remote-MTA"] == "dns; mx.x.example"
    assert blocks[1]["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert blocks[2]["Status"] == "4.4.7" and blocks[2]["Remote-MTA"] is None
    assert headers.get_content_type() == "text/rfc822-headers"
    returned = headers.get_payload()
    assert "Subject: Order 42" in returned and "Secret body text" not in returned


def test_delayed_subject() -> None:
    dsn = _dsn(RecipientStatus("bob@x.example", "delayed", "4.4.1", "no answer"))
    assert dsn["Subject"] == "Delayed Mail (still being retried)"


def test_diagnostic_cannot_inject_headers() -> None:
    """A remote reply with CR/LF in it stays inside its field."""
    dsn = _dsn(RecipientStatus("bob@x.example", "failed", "5.0.0", "550 no\r\nX-Evil: 1"))
    blocks = list(dsn.iter_parts())[1].get_payload()
    assert blocks[1]["X-Evil"] is None
    assert blocks[1]["Diagnostic-Code"] == "smtp; 550 no X-Evil: 1"


def test_sender_with_newline_is_refused() -> None:
    with pytest.raises(ValueError):
        build_dsn(
            reporting_mta="relay.test",
            original_sender="a@b.example\r\nBcc: x@y.example",
            original_message=ORIGINAL,
            recipients=[FAILED],
            queue_id="q",
            arrival_date=WHEN,
        )
