"""Bounces per RFC 3464 (DSN), RFC 6522 (multipart/report), RFC 3834 and RFC 3463.

Every test parses the built bytes back with the standard library, as a receiving MUA would.
"""

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.parser import HeaderParser

import pytest

from relay.delivery.dsn import RecipientStatus, build_dsn

ARRIVED = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
TRIED = datetime(2026, 11, 23, 11, 59, 30, tzinfo=UTC)
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ORIGINAL = (
    b"From: App <app@acme.example>\r\n"
    b"To: bob@x.example\r\n"
    b"Subject: Order 42\r\n"
    b"Message-ID: <order-42@acme.example>\r\n"
    b"\r\n"
    b"Secret body text\r\n"
)
BOB = RecipientStatus(
    recipient="bob@x.example",
    action="failed",
    status="5.1.1",
    diagnostic="550 5.1.1 <bob@x.example>: no such user",
    remote_mta="mx.x.example",
    last_attempt=TRIED,
)
CAROL = RecipientStatus(
    recipient="carol@y.example",
    action="failed",
    status="4.4.7",
    diagnostic="queue lifetime of 5 days expired",
)


def _raw(
    *recipients: RecipientStatus, original: bytes = ORIGINAL, sender: str = "app@acme.example"
) -> bytes:
    return build_dsn(
        reporting_mta="relay.example.net",
        original_sender=sender,
        original_message=original,
        recipients=recipients,
        queue_id="Q7F3A9",
        arrival_date=ARRIVED,
        now=NOW,
    )


def _parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _parts(raw: bytes) -> list[EmailMessage]:
    return list(_parse(raw).iter_parts())  # type: ignore[arg-type]


def _status_blocks(raw: bytes) -> list[str]:
    """The delivery-status body exactly as sent, split at its blank lines (RFC 3464 2.1)."""
    body = raw.split(b"Content-Type: message/delivery-status\r\n\r\n", 1)[1]
    return body.split(b"\r\n--", 1)[0].decode("ascii").split("\r\n\r\n")


def _blocks(raw: bytes) -> list[Message]:
    """Each field block parsed on its own as RFC 822-style header fields."""
    blocks = [HeaderParser().parsestr(text + "\r\n") for text in _status_blocks(raw)]
    assert len(blocks) == len(_parts(raw)[1].get_payload()), "same blocks the MIME parser sees"
    return blocks


def test_top_level_headers() -> None:
    """RFC 3464 2 and RFC 3834 5.: a fresh message from MAILER-DAEMON to the original sender,
    marked Auto-Submitted: auto-replied so that no autoresponder answers it."""
    dsn = _parse(_raw(BOB))
    assert dsn["From"] == "Mail Delivery System <MAILER-DAEMON@relay.example.net>"
    assert dsn["To"] == "app@acme.example"
    assert dsn["Subject"] == "Undelivered Mail Returned to Sender"
    assert dsn["Date"] == "Mon, 23 Nov 2026 12:00:00 +0000"
    assert dsn["Message-ID"].startswith("<") and dsn["Message-ID"].endswith("@relay.example.net>")
    assert dsn["Message-ID"] != _parse(_raw(BOB))["Message-ID"], "a fresh Message-ID each time"
    assert dsn["Auto-Submitted"] == "auto-replied"
    assert dsn["MIME-Version"] == "1.0"


def test_multipart_report_with_three_parts_in_order() -> None:
    """RFC 6522 3. and RFC 3464 2: multipart/report; report-type=delivery-status holding the
    human-readable part, the message/delivery-status part, then the returned headers."""
    raw = _raw(BOB)
    dsn = _parse(raw)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert [p.get_content_type() for p in _parts(raw)] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]


def test_human_readable_part_names_queue_id_recipients_and_retry() -> None:
    """RFC 6522 3.: the first part explains the report to a person."""
    text = _parts(_raw(BOB, CAROL))[0].get_content()
    assert "Q7F3A9" in text and "could not be delivered" in text
    assert "<bob@x.example>: 550 5.1.1 <bob@x.example>: no such user" in text
    assert "<carol@y.example>: queue lifetime of 5 days expired" in text
    assert "will not retry" in text and "keep retrying" not in text


def test_per_message_fields() -> None:
    """RFC 3464 2.2: Reporting-MTA (2.2.2) and Arrival-Date (2.2.5) come first."""
    per_message = _blocks(_raw(BOB, CAROL))[0]
    assert per_message["Reporting-MTA"] == "dns; relay.example.net"
    assert per_message["Arrival-Date"] == "Fri, 20 Nov 2026 09:30:00 +0000"
    assert per_message["Final-Recipient"] is None


def test_per_recipient_fields() -> None:
    """RFC 3464 2.3: one block per recipient, Remote-MTA (2.3.5) and Last-Attempt-Date (2.3.7)
    only when known; Status is the RFC 3463 code."""
    bob, carol = _blocks(_raw(BOB, CAROL))[1:]
    assert bob.items() == [
        ("Final-Recipient", "rfc822; bob@x.example"),
        ("Action", "failed"),
        ("Status", "5.1.1"),
        ("Remote-MTA", "dns; mx.x.example"),
        ("Diagnostic-Code", "smtp; 550 5.1.1 <bob@x.example>: no such user"),
        ("Last-Attempt-Date", "Mon, 23 Nov 2026 11:59:30 +0000"),
    ]
    assert carol.items() == [
        ("Final-Recipient", "rfc822; carol@y.example"),
        ("Action", "failed"),
        ("Status", "4.4.7"),
        ("Diagnostic-Code", "smtp; queue lifetime of 5 days expired"),
    ]


def test_field_blocks_are_separated_by_blank_lines() -> None:
    """RFC 3464 2.1: per-message fields, then each per-recipient group after a blank line;
    every block parses on its own as header fields with no leftover text."""
    blocks = _status_blocks(_raw(BOB, CAROL))
    assert len(blocks) == 3
    for block in blocks:
        parsed = HeaderParser().parsestr(block + "\r\n")
        assert parsed.get_payload() == "" and not parsed.defects
    assert [b.splitlines()[0] for b in blocks] == [
        "Reporting-MTA: dns; relay.example.net",
        "Final-Recipient: rfc822; bob@x.example",
        "Final-Recipient: rfc822; carol@y.example",
    ]


def test_all_delayed_changes_the_subject_and_says_we_retry() -> None:
    """RFC 3464 2.3.3: Action delayed; the sender is told the message is still being tried."""
    late = RecipientStatus("bob@x.example", "delayed", "4.4.1", "connection timed out")
    raw = _raw(late)
    assert _parse(raw)["Subject"] == "Delayed Mail (still being retried)"
    assert "keep retrying" in _parts(raw)[0].get_content()
    assert _blocks(raw)[1]["Action"] == "delayed"


def test_mixed_failed_and_delayed_says_which_will_be_retried() -> None:
    """RFC 3464 2.3.3: Action is per recipient; the human part tells the two groups apart."""
    late = RecipientStatus("carol@y.example", "delayed", "4.4.1", "connection timed out")
    raw = _raw(BOB, late)
    text = _parts(raw)[0].get_content()
    assert _parse(raw)["Subject"] == "Undelivered Mail Returned to Sender"
    failed, delayed = text.split("keep retrying")
    assert "bob@x.example" in failed and "will not retry" in failed
    assert "carol@y.example" in delayed and "bob@x.example" not in delayed
    assert [b["Action"] for b in _blocks(raw)[1:]] == ["failed", "delayed"]


def test_returns_the_original_headers_not_the_body() -> None:
    """RFC 6522 4.: text/rfc822-headers carries only the original's header section."""
    returned = _parts(_raw(BOB))[2].get_payload()
    assert returned == (
        "From: App <app@acme.example>\r\nTo: bob@x.example\r\nSubject: Order 42\r\n"
        "Message-ID: <order-42@acme.example>\r\n"
    )
    assert "Secret body text" not in returned


def test_original_without_separator_is_all_headers() -> None:
    """RFC 5322 2.1: the body is optional; with no empty line the whole message is headers."""
    returned = _parts(_raw(BOB, original=b"Subject: only headers\r\nX-A: 1\r\n"))[2].get_payload()
    assert returned == "Subject: only headers\r\nX-A: 1\r\n"


def test_original_with_bare_lf_still_returns_no_body() -> None:
    """The header section ends at the first empty line whatever the line ending."""
    raw = _raw(BOB, original=b"Subject: lf\nX-A: 1\n\nSecret body text\n")
    assert b"Secret body text" not in raw
    assert _parts(raw)[2].get_payload() == "Subject: lf\r\nX-A: 1\r\n"


def test_non_ascii_original_headers_are_returned_unchanged() -> None:
    """RFC 6532 / RFC 6152: 8-bit header bytes are returned as they were, marked 8bit."""
    raw = _raw(BOB, original="Subject: Grüße\r\n\r\nbody\r\n".encode())
    assert b"\r\nSubject: Gr\xc3\xbc\xc3\x9fe\r\n" in raw
    assert _parts(raw)[2]["Content-Transfer-Encoding"] == "8bit"


def test_only_crlf_line_endings() -> None:
    """RFC 5322 2.1 / RFC 5321 2.3.8: lines end in CRLF, never a bare LF or CR."""
    raw = _raw(BOB, CAROL, original=b"Subject: lf\nX-A: 1\n\nbody\n")
    assert raw.endswith(b"\r\n")
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")


def test_long_diagnostic_is_not_mime_encoded() -> None:
    """RFC 3464 2.1: DSN fields are plain text; a long reply stays readable, not an encoded-word."""
    url = "https://postmaster.x.example/" + "a" * 150
    raw = _raw(RecipientStatus("bob@x.example", "failed", "5.7.1", f"550 5.7.1 see {url}"))
    assert b"=?" not in raw
    assert _blocks(raw)[1]["Diagnostic-Code"] == f"smtp; 550 5.7.1 see {url}"


def test_diagnostic_cannot_inject_a_header() -> None:
    """RFC 5322 2.2: a remote reply with CR LF in it stays inside its own field."""
    evil = RecipientStatus("bob@x.example", "failed", "5.0.0", "550 no\r\nX-Evil: 1\r\n\r\nBody")
    raw = _raw(evil)
    assert b"\r\nX-Evil:" not in raw
    bob = _blocks(raw)[1]
    assert bob["X-Evil"] is None
    assert bob["Diagnostic-Code"] == "smtp; 550 no X-Evil: 1 Body"


@pytest.mark.parametrize("bad", ["app@acme.example\r\nBcc: x@y.example", "a@b.example\n", "a\0@b"])
def test_sender_with_cr_lf_or_nul_is_refused(bad: str) -> None:
    """RFC 5322 2.2: header values cannot contain CR or LF; refuse rather than guess."""
    with pytest.raises(ValueError):
        _raw(BOB, sender=bad)


def test_recipient_with_newline_is_refused() -> None:
    with pytest.raises(ValueError):
        _raw(RecipientStatus("bob@x.example\r\nX-Evil: 1", "failed", "5.1.1", "550 no"))


def test_status_must_be_an_rfc3463_code() -> None:
    """RFC 3463 2.: status-code = class "." subject "." detail."""
    with pytest.raises(ValueError):
        _raw(RecipientStatus("bob@x.example", "failed", "550", "550 no"))
