"""Bounce parsing: RFC 3464 DSNs and the text shapes MTAs still send, and hostile input.

Samples are in tests/samples/feedback/; each names what it is shaped after in `X-Sample:`.
"""

import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import pytest

from relay.delivery.dsn import RecipientStatus, build_dsn
from relay.feedback.reports.bounce import BounceReport, ParseResult, parse_bounce
from tests.support.mutate import mutate

SAMPLES = Path(__file__).parent / "samples" / "feedback"
BOUNCE_SAMPLES = sorted(
    p
    for p in SAMPLES.glob("*.eml")
    if not p.name.startswith(("forwarded-", "arf-", "rfc5965-", "yahoo-arf", "jmrp", "aol-"))
)


def parse(name: str) -> ParseResult:
    return parse_bounce((SAMPLES / name).read_bytes())


def test_every_sample_says_what_it_is_shaped_after() -> None:
    for path in SAMPLES.glob("*.eml"):
        assert path.read_bytes().startswith(b"X-Sample: "), path.name


class Want(NamedTuple):
    recipient: str
    action: str
    status: str
    text: str  # found in the diagnostic
    remote_mta: str | None = None


# sample -> (shape, per-recipient expectations, original Message-ID, relay queue id)
CASES: dict[str, tuple[str, list[Want], str | None, str | None]] = {
    "rfc3464-simple.eml": (
        "rfc3464",
        [Want("louisl@larry.slip.umd.edu", "failed", "4.0.0", "426 connection timed out")],
        "<199407021710.RAA00002@CS.UTK.EDU>",
        None,
    ),
    "rfc3464-multi.eml": (
        "rfc3464",
        [
            Want("arathib@vnet.ibm.com", "failed", "5.0.0", "not a registered", "vnet.ibm.com"),
            Want("johnh@hpnjld.njd.hp.com", "delayed", "4.0.0", "host name lookup failure"),
            Want(
                "wsnell@sdcc13.ucsd.edu", "failed", "5.0.0", "550 user unknown", "sdcc13.ucsd.edu"
            ),
        ],
        "<199407081321.JAA13101@CS.UTK.EDU>",
        None,
    ),
    "rfc3464-gateway.eml": (
        "rfc3464",
        [Want("nair_s", "failed", "5.0.0", "unknown permanent failure")],
        None,
        None,
    ),
    "rfc3464-delayed.eml": (
        "rfc3464",
        [Want("thomas@de-montfort.ac.uk", "delayed", "4.0.0", "unknown temporary failure")],
        None,
        None,
    ),
    "postfix-dsn.eml": (
        "rfc3464",
        [Want("bob@example.org", "failed", "5.1.1", "User unknown in virtual", "mx.example.org")],
        "<order-42@acme.example>",
        "3f2a1c4e-8b9d-4e2f-a1b2-c3d4e5f60718",
    ),
    "gmail-dsn.eml": (
        "rfc3464",
        [
            Want(
                "ghost@example.org",
                "failed",
                "5.1.1",
                "tried to reach does not exist",
                "gmail-smtp-in.l.google.com",
            )
        ],
        "<welcome-7@acme.example>",
        "0b8f7e6d-5c4b-4a39-8281-7f6e5d4c3b2a",
    ),
    "gmail-legacy.eml": (
        "gmail",
        [
            Want(
                "nobody@example.org",
                "failed",
                "5.1.1",
                "550 5.1.1 The email account that you tried to reach does not exist",
                "aspmx.l.example.org",
            )
        ],
        "<receipt-9@acme.example>",
        "9c8d7e6f-0a1b-4c2d-8e3f-405162738495",
    ),
    "exchange-online-ndr.eml": (
        "exchange",
        [Want("carol@fabrikam.example", "failed", "5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNo")],
        "<invoice-2026-11@acme.example>",
        "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f70819",
    ),
    "exchange-2010-ndr.eml": (
        "exchange",
        [Want("dave@contoso.example", "failed", "5.1.1", "550 5.1.1 RESOLVER.ADR.RecipNotFound")],
        "<notes-5@acme.example>",
        "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d",
    ),
    "qmail.eml": (
        "qmail",
        [
            Want("frank@example.com", "failed", "5.1.1", "no mailbox here by that name. (#5.1.1)"),
            Want("grace@example.net", "failed", "5.1.1", "550 5.1.1 <grace@", "192.0.2.60"),
        ],
        "<sale-1@acme.example>",
        "1d2e3f40-5162-4738-8495-a6b7c8d9e0f1",
    ),
    "exim.eml": (
        "exim",
        [
            Want("heidi@example.com", "failed", "5.1.1", "550 5.1.1 <heidi@", "mx1.example.com"),
            Want("ivan@nowhere.example", "failed", "5.0.0", "Unrouteable address"),
        ],
        "<sale-2@acme.example>",
        "2e3f4051-6273-4849-95a6-b7c8d9e0f102",
    ),
    "exim-delay.eml": (
        "exim",
        [Want("judy@example.org", "delayed", "4.7.1", "451 4.7.1 Greylisting", "mx.example.org")],
        None,
        None,
    ),
    "postfix-text.eml": (
        "postfix",
        [
            Want("kim@example.com", "failed", "5.1.1", "550 5.1.1 <kim@", "mx.example.com"),
            Want("leo@nodomain.example", "failed", "5.0.0", "Host or domain name not found"),
        ],
        None,
        None,
    ),
    "yahoo.eml": (
        "yahoo",
        [Want("mallory@yahoo.example", "failed", "5.0.0", "554: delivery error: dd This user")],
        "<order-43@acme.example>",
        "4a5b6c7d-8e9f-4a0b-9c1d-2e3f4a5b6c7d",
    ),
}


@pytest.mark.parametrize("sample", CASES)
def test_sample(sample: str) -> None:
    shape, wanted, message_id, queue_id = CASES[sample]
    result = parse(sample)
    assert result.problem is None
    assert result.shape == shape
    got = [(r.recipient, r.action, r.status, r.remote_mta) for r in result.reports]
    assert got == [(w.recipient, w.action, w.status, w.remote_mta) for w in wanted]
    for report, want in zip(result.reports, wanted, strict=True):
        assert want.text in report.diagnostic
        assert "\n" not in report.diagnostic
        assert report.original_message_id == message_id
    assert result.message_id == message_id
    assert result.queue_id == queue_id


def test_all_bounce_samples_are_covered() -> None:
    named = set(CASES)
    malformed = {p.name for p in BOUNCE_SAMPLES if p.name.startswith("malformed-")}
    assert {p.name for p in BOUNCE_SAMPLES} == named | malformed


def test_rfc3464_multi_line_diagnostic_is_unfolded_and_gmail_prefixes_written_once() -> None:
    """RFC 3464 2.3.6: Diagnostic-Code may fold; RFC 5321 4.2.1: every line of a multi-line
    reply repeats the code, which the diagnostic keeps once."""
    (report,) = parse("gmail-dsn.eml").reports
    assert report.diagnostic.startswith("550 5.1.1 The email account that you tried to reach")
    assert "550-5.1.1" not in report.diagnostic
    assert report.diagnostic.count("5.1.1") == 1


def test_rfc3464_per_message_fields_reach_every_recipient() -> None:
    (report,) = parse("postfix-dsn.eml").reports
    assert report.original_envelope_id == "3f2a1c4e8b9d4e2fa1b2c3d4e5f60718"
    assert report.final_recipient == "bob@example.org"
    assert report.failed


def test_original_recipient_is_preferred_to_final_recipient() -> None:
    """RFC 3464 2.3.1: Original-Recipient is the address as the sender gave it (ORCPT); an
    alias may have rewritten Final-Recipient, and suppression is by what we sent to."""
    raw = (
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n"
        b"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\n"
        b"Original-Recipient: rfc822;sales@example.org\n"
        b"Final-Recipient: rfc822;kim.internal@corp.example.org\n"
        b"Action: failed\nStatus: 5.2.2\nDiagnostic-Code: smtp; 552 5.2.2 Mailbox full\n\n--B--\n"
    )
    (report,) = parse_bounce(raw).reports
    assert report.recipient == "sales@example.org"
    assert report.final_recipient == "kim.internal@corp.example.org"
    assert (report.status, report.diagnostic) == ("5.2.2", "552 5.2.2 Mailbox full")


def test_global_dsn_of_rfc6533_is_read_with_its_unicode_escapes() -> None:
    raw = (
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n"
        b"--B\nContent-Type: message/global-delivery-status\n\n"
        b"Reporting-MTA: dns; mx.example.org\n\n"
        b"Final-Recipient: utf-8; j\\x{00F6}rg@example.org\nAction: failed\nStatus: 5.1.1\n\n"
        b"Final-Recipient: utf-8; ana@example.org\nAction: delayed\nStatus: 4.4.1\n\n--B--\n"
    )
    result = parse_bounce(raw)
    assert [(r.recipient, r.action, r.status) for r in result.reports] == [
        ("j\u00f6rg@example.org", "failed", "5.1.1"),
        ("ana@example.org", "delayed", "4.4.1"),
    ]


def test_status_missing_is_taken_from_the_diagnostic_then_from_the_action() -> None:
    raw = (
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n"
        b"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x.example\n\n"
        b"Final-Recipient: rfc822; a@example.org\nAction: failed\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 no such user\n\n"
        b"Final-Recipient: rfc822; b@example.org\nAction: delayed\n\n"
        b"Final-Recipient: rfc822; c@example.org\nStatus: 5.7.1\n\n--B--\n"
    )
    reports = parse_bounce(raw).reports
    assert [(r.recipient, r.action, r.status) for r in reports] == [
        ("a@example.org", "failed", "5.1.1"),
        ("b@example.org", "delayed", "4.0.0"),
        ("c@example.org", "failed", "5.7.1"),  # RFC 3464 2.3.3 requires Action; inferred
    ]


# --- the relay's own DSNs and trace field ----------------------------------------------------

RELAYED = (
    b"Received: from app-01.acme.example ([198.51.100.7])\r\n"
    b"\tby relay.example.net (relay) with ESMTPSA id 3f2a1c4e-8b9d-4e2f-a1b2-c3d4e5f60718\r\n"
    b"\tfor <bob@x.example>;\r\n"
    b"\tMon, 23 Nov 2026 11:00:00 GMT\r\n"
    b"Received: from evil ([192.0.2.66])\r\n"
    b"\tby relay.example.net (relay) with ESMTPSA id 00000000-0000-4000-8000-000000000000;\r\n"
    b"\tMon, 23 Nov 2026 10:00:00 GMT\r\n"
    b"From: App <app@acme.example>\r\n"
    b"To: bob@x.example\r\n"
    b"Subject: Order 42\r\n"
    b"Message-ID: <order-42@acme.example>\r\n"
    b"\r\n"
    b"Secret body text\r\n"
)


def test_the_relays_own_dsn_parses_back() -> None:
    dsn = build_dsn(
        reporting_mta="relay.example.net",
        original_sender="app@acme.example",
        original_message=RELAYED,
        recipients=[
            RecipientStatus(
                "bob@x.example", "failed", "5.1.1", "550 5.1.1 no such user", "mx.x.example"
            ),
            RecipientStatus("carol@y.example", "delayed", "4.4.1", "connection timed out"),
        ],
        queue_id="3f2a1c4e-8b9d-4e2f-a1b2-c3d4e5f60718",
        arrival_date=datetime(2026, 11, 23, 11, 0, tzinfo=UTC),
    )
    result = parse_bounce(dsn)
    assert result.shape == "rfc3464"
    assert [
        (r.recipient, r.action, r.status, r.diagnostic, r.remote_mta) for r in result.reports
    ] == [
        ("bob@x.example", "failed", "5.1.1", "550 5.1.1 no such user", "mx.x.example"),
        ("carol@y.example", "delayed", "4.4.1", "connection timed out", None),
    ]
    assert result.message_id == "<order-42@acme.example>"


def test_queue_id_is_read_from_the_relays_topmost_received_field() -> None:
    """The relay prepends its Received field (RFC 5321 4.4), so the first one naming the relay
    is ours; one a client wrote further down cannot redirect the lookup."""
    dsn = build_dsn(
        reporting_mta="relay.example.net",
        original_sender="app@acme.example",
        original_message=RELAYED,
        recipients=[RecipientStatus("bob@x.example", "failed", "5.1.1", "550 5.1.1 no")],
        queue_id="q",
        arrival_date=datetime(2026, 11, 23, 11, 0, tzinfo=UTC),
    )
    result = parse_bounce(dsn)
    assert result.queue_id == "3f2a1c4e-8b9d-4e2f-a1b2-c3d4e5f60718"
    assert result.original is not None
    assert len(result.original.received) == 2
    assert result.original.as_dict()["message-id"] == ["<order-42@acme.example>"]
    assert result.original.get("subject") == "Order 42"
    assert result.original.to == ("bob@x.example",)


def test_a_received_field_with_a_bad_queue_id_is_skipped() -> None:
    raw = (
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n"
        b"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x.example\n\n"
        b"Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\n\n"
        b"--B\nContent-Type: text/rfc822-headers\n\n"
        b"Received: from a by relay.example.net (relay) with ESMTPSA\n"
        b"\tid zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz; Mon, 23 Nov 2026 10:00:00 GMT\n"
        b"Received: from b by relay.example.net (relay) with ESMTPSA\n"
        b"\tid 0B8F7E6D-5C4B-4A39-8281-7F6E5D4C3B2A; Mon, 23 Nov 2026 10:00:00 GMT\n\n--B--\n"
    )
    assert parse_bounce(raw).queue_id == "0b8f7e6d-5c4b-4a39-8281-7f6e5d4c3b2a"


# --- malformed and hostile input ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "problem"),
    [
        ("malformed-truncated.eml", "multipart/report without a delivery-status part"),
        ("malformed-no-recipients.eml", "delivery-status report without per-recipient fields"),
        ("malformed-no-boundary.eml", "multipart/report without a delivery-status part"),
    ],
)
def test_malformed_sample_gives_no_reports_and_says_why(sample: str, problem: str) -> None:
    result = parse(sample)
    assert result.reports == ()
    assert result.problem == problem


def test_dsn_without_recipients_still_returns_the_original() -> None:
    result = parse("malformed-no-recipients.eml")
    assert result.message_id == "<order-44@acme.example>"


NESTED = b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n'
HOSTILE = {
    "empty": b"",
    "blank": b"   \r\n",
    "binary": bytes(range(256)) * 64,
    "nul": b"\x00" * 10_000,
    "quotes": b'Content-Type: multipart/report; boundary="' + b'"' * 5000 + b"\n\n--",
    "comments": b"Content-Type: multipart/mixed; boundary=x" + b"(" * 5000 + b"\n\n--x\n",
    "deep": b"".join(NESTED % (i, i) for i in range(3000)),
    "regex-bait": b"Subject: x\n\nThe mail system\n\n<a@b.example>: " + b"host " * 10000,
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_input_never_raises_and_is_quick(name: str) -> None:
    raw = HOSTILE[name]
    started = time.perf_counter()
    result = parse_bounce(raw)
    assert time.perf_counter() - started < 5
    assert isinstance(result, ParseResult)
    assert result.reports or result.problem


def test_not_bytes_is_a_problem_not_an_exception() -> None:
    assert parse_bounce("a str, not bytes").problem == "empty input"  # type: ignore[arg-type]


def test_huge_input_is_cut_but_the_report_at_its_front_survives() -> None:
    """Everything a DSN says about recipients precedes the returned message (RFC 3464 2.1)."""
    raw = (SAMPLES / "postfix-dsn.eml").read_bytes() + b"A" * 40_000_000
    started = time.perf_counter()
    result = parse_bounce(raw)
    assert time.perf_counter() - started < 5
    assert [r.recipient for r in result.reports] == ["bob@example.org"]


def test_huge_junk_says_the_input_was_cut() -> None:
    result = parse_bounce(b"Subject: x\n\n" + b"junk " * 1_000_000, max_bytes=100_000)
    assert result.reports == ()
    assert result.problem == "no delivery status found (input cut at 100000 bytes)"


def test_thousands_of_parts_or_recipients_cost_bounded_time() -> None:
    parts = b"--B\nContent-Type: text/plain\n\nhi\n" * 50_000
    recipients = (
        b"Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\n\n" * 50_000
    )
    for body in (parts, b"--B\nContent-Type: message/delivery-status\n\n" + recipients):
        raw = (
            b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n' + body
        )
        started = time.perf_counter()
        result = parse_bounce(raw)
        assert time.perf_counter() - started < 5
        assert len(result.reports) <= 1000


def test_fuzzed_samples_never_raise() -> None:
    """Seeded random mutations of every sample: the parser answers, it never raises, and it
    never needs its last-resort handler (which would lose a readable report)."""
    rng = random.Random(3464)
    samples = [p.read_bytes() for p in BOUNCE_SAMPLES]
    for _ in range(400):
        result = parse_bounce(mutate(rng, rng.choice(samples)))
        assert isinstance(result, ParseResult)
        assert result.reports or result.problem
        assert not (result.problem or "").startswith("unreadable message")
        for report in result.reports:
            assert isinstance(report, BounceReport) and report.recipient
