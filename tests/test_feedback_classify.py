"""Bounce classification: text rules first, then the RFC 3463 code; `hard` only for a
permanent bad mailbox or bad domain (P-SUPPRESS, P-BOUNCE)."""

from pathlib import Path
from typing import NamedTuple

import pytest

from relay.feedback.reports.classify import (
    Category,
    classify,
    default_rules,
    load_rules,
    reply_status,
    reply_text,
)

BAD_MAILBOX = Category.BAD_MAILBOX
BAD_DOMAIN = Category.BAD_DOMAIN
FULL = Category.MAILBOX_FULL
POLICY = Category.POLICY
REPUTATION = Category.REPUTATION
TRANSIENT = Category.TRANSIENT
UNKNOWN = Category.UNKNOWN


class Row(NamedTuple):
    status: str | None  # a DSN's Status, or None for a bare SMTP reply
    text: str
    category: Category
    hard: bool


ROWS = [
    # bad mailbox: suppressed when permanent
    Row(
        None,
        "550-5.1.1 The email account that you tried to reach does not exist. Please try\n"
        "550-5.1.1 double-checking the recipient's email address for typos or\n"
        "550 5.1.1  https://support.google.com/mail/?p=NoSuchUser a1si123 - gsmtp",
        BAD_MAILBOX,
        True,
    ),
    Row(
        "5.1.10",
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        BAD_MAILBOX,
        True,
    ),
    Row(
        None,
        "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)",
        BAD_MAILBOX,
        True,
    ),
    Row(
        None,
        "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302)",
        BAD_MAILBOX,
        True,
    ),
    Row(
        None,
        "554 delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0]",
        BAD_MAILBOX,
        True,
    ),
    Row(None, "554 delivery error: dd Sorry, this mailbox is disabled (554.30)", BAD_MAILBOX, True),
    Row(
        None,
        "550-5.2.1 The email account that you tried to reach is disabled.",
        BAD_MAILBOX,
        True,
    ),
    Row(
        "5.1.1",
        "550 5.1.1 <x@example.org>: Recipient address rejected: User unknown in virtual "
        "mailbox table",
        BAD_MAILBOX,
        True,
    ),
    Row(None, "Sorry, no mailbox here by that name. (#5.1.1)", BAD_MAILBOX, True),
    Row(None, "552 1 Requested mail action aborted, mailbox not found", BAD_MAILBOX, True),
    Row("5.0.0", "550 'arathib@vnet.IBM.COM' is not a registered gateway user", BAD_MAILBOX, True),
    Row(
        "4.1.1",
        "450 4.1.1 <x@example.org>: Recipient address rejected: User unknown in local "
        "recipient table",
        BAD_MAILBOX,
        False,
    ),
    Row("5.1.1", "", BAD_MAILBOX, True),
    # bad domain
    Row(
        "5.1.2",
        "550 5.1.2 Host unknown (Name server: nodomain.example: host not found)",
        BAD_DOMAIN,
        True,
    ),
    Row(None, "556 5.1.10 Recipient address has null MX", BAD_DOMAIN, True),
    Row(
        "5.4.4",
        "Host or domain name not found. Name service error for name=nodomain.example "
        "type=MX: Host not found",
        BAD_DOMAIN,
        True,
    ),
    Row(
        "4.4.3",
        "Host or domain name not found. Name service error for name=x.example type=MX: "
        "Host not found, try again",
        BAD_DOMAIN,
        False,
    ),
    Row("5.0.0", "Unrouteable address", BAD_DOMAIN, True),
    # mailbox full: never suppressed
    Row("5.2.2", "552 5.2.2 Mailbox full", FULL, False),
    Row(
        None,
        "452-4.2.2 The email account that you tried to reach is over quota. Please direct "
        "the recipient to https://support.google.com/mail/?p=OverQuotaTemp",
        FULL,
        False,
    ),
    Row(
        "5.2.2",
        "554 5.2.2 mailbox full; "
        "STOREDRV.Deliver.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded",
        FULL,
        False,
    ),
    Row(None, "552 Requested mail action aborted: exceeded storage allocation", FULL, False),
    # policy: the message, its sender or its authentication
    Row(
        None,
        "550-5.7.1 [203.0.113.10] Our system has detected that this message is likely "
        "unsolicited mail. To reduce the amount of spam sent to Gmail, this message has "
        "been blocked.",
        POLICY,
        False,
    ),
    Row(
        None,
        "550-5.7.26 This mail has been blocked because the sender is unauthenticated. "
        "Gmail requires all senders to authenticate with either SPF or DKIM.",
        POLICY,
        False,
    ),
    Row(
        None,
        "550 5.7.26 Unauthenticated email from acme.example is not accepted due to "
        "domain's DMARC policy.",
        POLICY,
        False,
    ),
    Row("5.7.1", "554 5.7.1 Message rejected as spam by Content Filtering.", POLICY, False),
    Row(
        None,
        "554 5.7.9 Message not accepted for policy reasons. See "
        "https://postmaster.example/error-codes",
        POLICY,
        False,
    ),
    Row(None, "552 5.3.4 Message size exceeds fixed maximum message size", POLICY, False),
    Row(
        None,
        "550 5.7.25 The IP address sending this message does not have a PTR record setup",
        POLICY,
        False,
    ),
    Row(
        "5.1.8",
        "553 5.1.8 <bounces@relay.example.net>: Sender address rejected: Domain not found",
        POLICY,
        False,
    ),
    Row(None, "554 5.7.1 <x@example.org>: Relay access denied", POLICY, False),
    # reputation: the sending IP or domain
    Row(
        None,
        "421-4.7.0 [203.0.113.10 15] Our system has detected an unusual rate of "
        "unsolicited mail originating from your IP address. To protect our users from "
        "spam, mail sent from your IP address has been temporarily rate limited.",
        REPUTATION,
        False,
    ),
    Row(
        None,
        "421-4.7.28 [203.0.113.10] Our system has detected an unusual rate of unsolicited "
        "mail originating from your DKIM domain [acme.example 12].",
        REPUTATION,
        False,
    ),
    Row(
        None,
        "550-5.7.1 [203.0.113.10] The IP you're using to send mail is not authorized to "
        "send email directly to our servers.",
        REPUTATION,
        False,
    ),
    Row(
        None,
        "550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.",
        REPUTATION,
        False,
    ),
    Row(
        None,
        "550 5.7.750 Service unavailable. Client blocked from sending from unregistered domains.",
        REPUTATION,
        False,
    ),
    Row(
        "5.7.1",
        "550 5.7.1 Unfortunately, messages from [203.0.113.10] weren't sent. Please "
        "contact your Internet service provider since part of their network is on our "
        "block list (S3150).",
        REPUTATION,
        False,
    ),
    Row(
        None,
        "421 RP-001 (BAY004-MC1F10) Unfortunately, some messages from 203.0.113.10 "
        "weren't sent. Please try again. We have limits for how many messages can be sent "
        "per hour and per day.",
        REPUTATION,
        False,
    ),
    Row(
        None,
        "451 4.7.650 The mail server [203.0.113.10] has been temporarily rate limited due "
        "to IP reputation.",
        REPUTATION,
        False,
    ),
    Row(
        None,
        "421 4.7.0 [TSS04] Messages from 203.0.113.10 temporarily deferred due to "
        "unexpected volume or user complaints - 4.16.55.1",
        REPUTATION,
        False,
    ),
    Row(
        None,
        "553 5.7.2 [TSS09] All messages from 203.0.113.10 will be permanently deferred; "
        "Retrying will NOT succeed.",
        REPUTATION,
        False,
    ),
    Row(None, "421 DYN:T1 Connection refused", REPUTATION, False),
    Row(
        None,
        "554 5.7.1 Service unavailable; Client host [203.0.113.10] blocked using zen.spamhaus.org",
        REPUTATION,
        False,
    ),
    Row(
        None,
        "550 5.7.1 Mail from 203.0.113.10 refused by b.barracudacentral.org",
        REPUTATION,
        False,
    ),
    Row(None, "554 5.7.1 Your IP address is on our blacklist", REPUTATION, False),
    Row(None, "550 5.7.1 Message rejected because of poor sender reputation", REPUTATION, False),
    Row(None, "450 4.7.1 Client host rejected: rate limit exceeded", REPUTATION, False),
    # transient
    Row(None, "451 4.7.1 Greylisted, please try again in 300 seconds", TRANSIENT, False),
    Row(
        None,
        "450 4.2.0 <x@example.org>: Recipient address rejected: Greylisted, see "
        "http://postgrey.example/help",
        TRANSIENT,
        False,
    ),
    Row(
        None,
        "450-4.2.1 The user you are trying to contact is receiving mail too quickly. "
        "Please resend your message at a later time.",
        TRANSIENT,
        False,
    ),
    Row(None, "451 4.3.0 Temporary local problem - please try later", TRANSIENT, False),
    Row(None, "421 4.3.2 Service not available, closing transmission channel", TRANSIENT, False),
    Row(
        "4.4.7",
        "delivery temporarily suspended: connect to mx.example.org[192.0.2.7]:25: "
        "Connection timed out",
        TRANSIENT,
        False,
    ),
    Row("5.4.7", "queue lifetime of 5 days expired", TRANSIENT, False),
    # nothing recognised
    Row(None, "550 Requested action not taken: mailbox unavailable", UNKNOWN, False),
    Row("2.0.0", "250 2.0.0 OK", UNKNOWN, False),
    Row(None, "", UNKNOWN, False),
]


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.category}-{i}" for i, r in enumerate(ROWS)])
def test_classification(row: Row) -> None:
    verdict = classify(row.status, row.text)
    assert (verdict.category, verdict.hard) == (row.category, row.hard), verdict.rule


def test_the_table_is_big_enough_and_every_shipped_rule_is_exercised() -> None:
    assert len(ROWS) >= 30
    used = {classify(r.status, r.text).rule for r in ROWS}
    shipped = {f"text:{rule.name}" for rule in default_rules().text}
    assert shipped <= used, f"rules without a test row: {sorted(shipped - used)}"


def test_only_a_permanent_bad_mailbox_or_domain_suppresses() -> None:
    for row in ROWS:
        verdict = classify(row.status, row.text)
        if verdict.hard:
            assert verdict.category in (BAD_MAILBOX, BAD_DOMAIN)
            assert verdict.permanent and verdict.status and verdict.status.startswith("5.")


@pytest.mark.parametrize(
    ("status", "text", "rule"),
    [
        ("5.1.1", "", "code:5.1.1"),  # exact code
        ("5.7.99", "no words we know", "code:5.7"),  # class.subject
        ("5.9.9", "no words we know", "code:5"),  # class
        ("4.9.9", "no words we know", "code:4"),
        (None, "no code, no words", "none"),
        ("5.1.1", "550 5.1.1 blocked using zen.spamhaus.org", "text:dnsbl"),  # text first
    ],
)
def test_lookup_order(status: str | None, text: str, rule: str) -> None:
    assert classify(status, text).rule == rule


def test_a_dsn_status_with_a_comment_is_used() -> None:
    """RFC 3464 2.3.4 allows a comment after the code: "5.0.0 (permanent failure)"."""
    verdict = classify("5.2.2 (mailbox full)", "")
    assert (verdict.status, verdict.category) == ("5.2.2", FULL)


def test_the_dsn_status_wins_over_the_text() -> None:
    verdict = classify("4.2.2", "552 5.2.2 over quota")
    assert (verdict.status, verdict.hard) == ("4.2.2", False)


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("550 5.1.1 user unknown", "5.1.1"),
        ("550-5.1.1 user unknown", "5.1.1"),
        ("Sorry, no mailbox here by that name. (#5.1.1)", "5.1.1"),
        ("host 192.5.1.1 said: 550 no such user", "5.0.0"),  # not inside an IP address
        ("connect to 10.4.4.7 failed", None),
        ("554: delivery error: dd This user doesn't have an account", "5.0.0"),
        ("421 Service not available", "4.0.0"),
        ("Postfix 2.11.3 says hello", None),
        ("", None),
    ],
)
def test_reply_status(text: str, status: str | None) -> None:
    assert reply_status(text) == status


def test_reply_text_writes_a_multi_line_reply_once() -> None:
    text = (
        "452-4.2.2 The account is over quota.\r\n452-4.2.2 Please try later\r\n452 4.2.2 x - gsmtp"
    )
    assert reply_text(text) == "452 4.2.2 The account is over quota. Please try later x - gsmtp"


# --- deployment rules ------------------------------------------------------------------------


def test_deployment_rules_come_first_and_its_codes_replace_shipped_ones(tmp_path: Path) -> None:
    extra = tmp_path / "rules.toml"
    extra.write_text(
        "[[rule]]\n"
        'name = "our-mx-quirk"\n'
        'category = "transient"\n'
        "pattern = 'user unknown \\(lookup in progress\\)'\n"
        "\n"
        "[[rule]]\n"
        'name = "only-for-5.7"\n'
        'category = "reputation"\n'
        "pattern = 'frobnicated'\n"
        'status = "5.7"\n'
        "\n"
        "[codes]\n"
        '"5.5" = "policy"\n'
    )
    rules = load_rules(extra)
    assert rules.text[0].name == "our-mx-quirk"
    quirk = classify("5.1.1", "550 5.1.1 user unknown (lookup in progress)", rules=rules)
    assert (quirk.category, quirk.hard, quirk.rule) == (TRANSIENT, False, "text:our-mx-quirk")
    assert classify("5.7.1", "frobnicated", rules=rules).category == REPUTATION
    assert classify("5.1.1", "frobnicated", rules=rules).rule == "code:5.1.1"  # status limits it
    assert classify("5.5.2", "", rules=rules).rule == "code:5.5"
    assert classify("5.1.1", "550 5.1.1 user unknown").category == BAD_MAILBOX  # default intact


RULE = '[[rule]]\nname = "x"\ncategory = "policy"\npattern = "a"\n'


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[[rule]]\nname = "x"\ncategory = "spam"\npattern = "a"\n', "unknown category 'spam'"),
        ('[[rule]]\nname = "x"\ncategory = "policy"\npattern = "("\n', "rule 'x': bad pattern"),
        ('[[rule]]\nname = "x"\ncategory = "policy"\n', "missing ['pattern']"),
        (RULE + 'regex = "b"\n', "unknown keys ['regex']"),
        (RULE + 'status = "7.1"\n', "not a code prefix"),
        ('[codes]\n"5.1.x" = "policy"\n', "'5.1.x' is not a code"),
        ('[codes]\n"5.1.1" = "hard"\n', "unknown category 'hard'"),
        ("[rules]\n", "unknown top-level keys ['rules']"),
    ],
)
def test_a_bad_deployment_file_is_refused_with_its_name_and_rule(
    tmp_path: Path, content: str, message: str
) -> None:
    extra = tmp_path / "bad.toml"
    extra.write_text(content)
    with pytest.raises(ValueError, match=r"bad\.toml") as error:
        load_rules(extra)
    assert message in str(error.value)
