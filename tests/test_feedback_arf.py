"""Feedback-loop reports (ARF, RFC 5965), Microsoft's JMRP form, and forwarded abuse reports
(P-COMPLAINT, P-ABUSE-DESK). Samples are in tests/samples/feedback/."""

import random
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from relay.feedback.reports.arf import ArfResult, ForwardedReport, parse_arf, parse_forwarded
from tests.support.mutate import mutate

SAMPLES = Path(__file__).parent / "samples" / "feedback"
ARF_SAMPLES = sorted(
    p
    for p in SAMPLES.glob("*.eml")
    if p.name.startswith(("arf-", "rfc5965-", "yahoo-arf", "jmrp", "aol-"))
)
FORWARDED_SAMPLES = sorted(SAMPLES.glob("forwarded-*.eml"))


def arf(name: str) -> ArfResult:
    return parse_arf((SAMPLES / name).read_bytes())


def forwarded(name: str) -> ForwardedReport:
    return parse_forwarded((SAMPLES / name).read_bytes())


def test_rfc5965_simple_report_has_the_three_required_fields() -> None:
    """RFC 5965 3.1: Feedback-Type, User-Agent and Version are required."""
    report = arf("rfc5965-simple.eml").report
    assert report is not None
    assert (report.feedback_type, report.user_agent, report.version) == (
        "abuse",
        "SomeGenerator/1.0",
        "1",
    )
    assert report.original_rcpt_to == ()
    assert report.complainant is None  # To: <Undisclosed Recipients> is no address
    assert report.message_id == "8787KJKJ3K4J3K4J3K4J3.mail@example.net"  # as the RFC writes it
    assert report.original is not None
    assert report.original.get("Subject") == "Earn money"


def test_rfc5965_complete_report_has_every_optional_field() -> None:
    """RFC 5965 3.2: the optional fields, once or repeated."""
    report = arf("rfc5965-complete.eml").report
    assert report is not None
    assert report.original_mail_from == "somespammer@example.net"
    assert report.original_rcpt_to == ("user@example.com",)
    assert report.arrival_date == "Thu, 8 Mar 2005 14:00:00 EDT"
    assert report.arrived_at == datetime(2005, 3, 8, 14, 0, tzinfo=timezone(timedelta(hours=-4)))
    assert report.reporting_mta == "dns; mail.example.com"
    assert report.source_ip == "192.0.2.1"
    assert report.authentication_results == (
        "mail.example.com; spf=fail smtp.mail=somespammer@example.com",
    )
    assert report.reported_domain == ("example.net",)
    assert report.reported_uri == (
        "http://example.net/earn_money.html",
        "mailto:user@example.com",
    )
    assert report.complainant == "user@example.com"
    assert report.shape == "arf"


def test_yahoo_report_names_the_complainant_and_our_trace() -> None:
    report = arf("yahoo-arf.eml").report
    assert report is not None
    assert (report.user_agent, report.version) == ("Yahoo!-Mail-Feedback/2.0", "0.1")
    assert report.arrived_at == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # from Received-Date
    assert report.original_mail_from == "bounces@relay.example.net"
    assert report.complainant == "nina@yahoo.example"
    assert report.message_id == "<order-45@acme.example>"
    assert report.queue_id == "6c7d8e9f-a0b1-4c2d-8e3f-4a5b6c7d8e9f"
    assert report.original is not None
    assert report.original.get("Feedback-ID") == "45:newsletter:acme:relay"


def test_jmrp_report_is_read_from_the_attached_message() -> None:
    """Microsoft's non-ARF form: the complainant is in X-HmXmrOriginalRecipient, the source IP
    in the subject."""
    result = arf("jmrp.eml")
    assert result.problem is None and result.report is not None
    report = result.report
    assert (report.shape, report.feedback_type) == ("jmrp", "abuse")
    assert report.complainant == "oscar@outlook.example"
    assert report.source_ip == "203.0.113.10"
    assert report.message_id == "<sale-3@acme.example>"
    assert report.queue_id == "8e9fa0b1-c2d3-4e4f-a5b6-c7d8e9fa0b1c"


def test_redacted_report_gives_no_complainant_but_the_trace_ids() -> None:
    """RFC 6590 redaction (AOL SComp): no Original-Rcpt-To, To redacted. The way back to the
    recipient is the relay's queue id and the Message-ID."""
    report = arf("aol-arf.eml").report
    assert report is not None
    assert (report.user_agent, report.version) == ("AOL SComp", "0.1")
    assert report.original_rcpt_to == ()
    assert report.complainant is None
    assert report.original is not None and report.original.to == ("redacted@aol.example",)
    assert report.queue_id == "a0b1c2d3-e4f5-4a6b-8c7d-8e9fa0b1c2d3"
    assert report.message_id == "<sale-4@acme.example>"
    assert report.source_ip == "203.0.113.10"


@pytest.mark.parametrize(
    ("rcpt_to", "to", "complainant"),
    [
        ("<user@example.com>", "someone@example.com", "user@example.com"),
        (None, "Someone <someone@example.com>", "someone@example.com"),
        (None, "a@example.com, b@example.com", None),  # a list: cannot tell who complained
        ("<redacted@example.com>", "someone@example.com", "someone@example.com"),
        ("xxxxxxxx@example.com", "******@example.com", None),
        (None, "<REDACTED>", None),
        (None, None, None),
    ],
)
def test_complainant_falls_back_from_envelope_to_to(
    rcpt_to: str | None, to: str | None, complainant: str | None
) -> None:
    fields = "Feedback-Type: abuse\nUser-Agent: t/1\nVersion: 1\n"
    if rcpt_to:
        fields += f"Original-Rcpt-To: {rcpt_to}\n"
    original = "Message-ID: <m@acme.example>\n" + (f"To: {to}\n" if to else "")
    raw = (
        "Content-Type: multipart/report; report-type=feedback-report; boundary=B\n\n"
        f"--B\nContent-Type: message/feedback-report\n\n{fields}\n"
        f"--B\nContent-Type: text/rfc822-headers\n\n{original}\n--B--\n"
    ).encode()
    report = parse_arf(raw).report
    assert report is not None
    assert report.complainant == complainant


def test_feedback_type_and_source_ip_are_normalised() -> None:
    raw = (
        b"Content-Type: multipart/report; report-type=feedback-report; boundary=B\n\n"
        b"--B\nContent-Type: message/feedback-report\n\n"
        b"Feedback-Type: Abuse\nUser-Agent: t/1\nVersion: 1\nSource-IP: [2001:DB8::1]\n"
        b"Incidents: 3\n\n--B--\n"
    )
    report = parse_arf(raw).report
    assert report is not None
    assert (report.feedback_type, report.source_ip, report.incidents) == ("abuse", "2001:db8::1", 3)
    assert report.original is None and report.complainant is None


NO_PART = "feedback report without a message/feedback-report part"
NOT_ARF = "not a feedback report (multipart/report; report-type=feedback-report)"


@pytest.mark.parametrize(
    ("sample", "problem"),
    [
        ("arf-missing-report-part.eml", NO_PART),
        ("arf-truncated.eml", NO_PART),
        ("postfix-dsn.eml", NOT_ARF),
        ("forwarded-gmail-inline.eml", NOT_ARF),
    ],
)
def test_what_is_not_a_readable_report_says_why(sample: str, problem: str) -> None:
    assert arf(sample) == ArfResult(None, problem)


def test_feedback_part_without_fields_is_a_problem() -> None:
    raw = (
        b"Content-Type: multipart/report; report-type=feedback-report; boundary=B\n\n"
        b"--B\nContent-Type: message/feedback-report\n\n\n--B--\n"
    )
    assert parse_arf(raw).problem == "message/feedback-report part without fields"


# --- forwarded abuse reports (P-ABUSE-DESK) ------------------------------------------------


def test_forward_as_attachment_gives_the_original_headers() -> None:
    report = forwarded("forwarded-attachment.eml")
    assert (report.how, report.reporter, report.problem) == (
        "attachment",
        "bob@example.org",
        None,
    )
    assert report.subject == "Fwd: Winter sale"
    assert report.message_id == "<sale-6@acme.example>"
    assert report.queue_id == "b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e"
    assert report.to == ("bob@example.org",)
    assert len(report.received) == 2


def test_gmail_inline_forward_gives_its_pseudo_headers() -> None:
    report = forwarded("forwarded-gmail-inline.eml")
    assert (report.how, report.reporter) == ("inline", "carol@example.com")
    assert report.original is not None
    assert report.original.get("From") == "Acme Shop <news@acme.example>"
    assert report.original.get("Subject") == "Winter sale"
    assert report.to == ("carol@example.com",)
    assert report.message_id is None and report.queue_id is None  # an inline forward drops them


def test_outlook_inline_forward_in_html_gives_its_pseudo_headers() -> None:
    report = forwarded("forwarded-outlook-inline.eml")
    assert (report.how, report.reporter) == ("inline", "dave@example.net")
    assert report.original is not None
    assert report.original.get("Date") == "Monday, November 23, 2026 6:00 PM"  # from "Sent:"
    assert report.to == ("dave@example.net",)


def test_pasted_headers_give_the_trace() -> None:
    report = forwarded("forwarded-pasted-headers.eml")
    assert (report.how, report.reporter) == ("pasted", "erin@example.com")
    assert report.message_id == "<sale-7@acme.example>"
    assert report.queue_id == "c2d3e4f5-a6b7-4c8d-9e0f-1a2b3c4d5e6f"
    assert report.to == ("erin@example.com",)
    assert [r.split()[1] for r in report.received] == ["relay.example.net", "app-01.acme.example"]


def test_nested_forward_prefers_the_copy_with_our_trace() -> None:
    """A forward of a forward nests attachments; the innermost copy is the one we relayed."""
    inner = (SAMPLES / "forwarded-attachment.eml").read_bytes()
    raw = (
        b"From: Helpdesk <helpdesk@example.org>\nSubject: Fwd: Fwd: Winter sale\n"
        b"Content-Type: multipart/mixed; boundary=OUTER\n\n"
        b"--OUTER\nContent-Type: text/plain\n\nsee attached\n"
        b"--OUTER\nContent-Type: message/rfc822\n\n" + inner + b"\n--OUTER--\n"
    )
    report = parse_forwarded(raw)
    assert report.how == "attachment"
    assert report.reporter == "helpdesk@example.org"
    assert report.queue_id == "b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e"


def test_arf_report_forwarded_to_the_abuse_desk_is_read_too() -> None:
    report = parse_forwarded((SAMPLES / "yahoo-arf.eml").read_bytes())
    assert report.how == "attachment"
    assert report.queue_id == "6c7d8e9f-a0b1-4c2d-8e3f-4a5b6c7d8e9f"


def test_a_plain_complaint_without_the_message_says_so() -> None:
    raw = b"From: x@example.org\nSubject: stop\n\nStop sending me mail!\n"
    report = parse_forwarded(raw)
    assert report == ForwardedReport(
        None, "x@example.org", "stop", None, "no forwarded message found"
    )


# --- hostile input ---------------------------------------------------------------------------

HOSTILE = {
    "empty": b"",
    "binary": bytes(range(256)) * 64,
    "quotes": b'Content-Type: multipart/report; report-type="' + b'"' * 5000 + b"\n\n",
    "comments": b"Content-Type: multipart/mixed; boundary=x" + b"(" * 5000 + b"\n\n--x\n",
    "many-parts": b"Content-Type: multipart/mixed; boundary=B\n\n"
    + b"--B\nContent-Type: message/rfc822\n\nReceived: x\n\n" * 50_000,
    "pasted-bait": b"Subject: x\n\n" + b"Received: x\nSubject: y\n\n" * 100_000,
    "huge": b"Subject: x\n\n" + b"A" * 30_000_000,
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_input_never_raises_and_is_quick(name: str) -> None:
    for parse in (parse_arf, parse_forwarded):
        started = time.perf_counter()
        result = parse(HOSTILE[name])
        assert time.perf_counter() - started < 5
        assert isinstance(result, ArfResult | ForwardedReport)


def test_fuzzed_samples_never_raise() -> None:
    """Seeded random mutations of the ARF and forwarded samples: both parsers answer without
    raising and without needing their last-resort handler."""
    rng = random.Random(5965)
    samples = [p.read_bytes() for p in ARF_SAMPLES + FORWARDED_SAMPLES]
    for _ in range(400):
        data = mutate(rng, rng.choice(samples))
        result = parse_arf(data)
        assert (result.report is None) != (result.problem is None)
        assert not (result.problem or "").startswith("unreadable message")
        report = parse_forwarded(data)
        assert (report.original is None) == (report.problem is not None)
        assert not (report.problem or "").startswith("unreadable message")
