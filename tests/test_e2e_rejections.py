"""End to end: every refusal the submission listener makes, with its exact reply.

Each test talks to the real relay process over loopback (smtplib, or the byte-exact
dialogue of `tests.support.smtp_dialogue` where smtplib would rewrite what is sent) and checks the
reply code, the RFC 3463 enhanced status code and, for the sending policy, the
`[P-HDR-ALIGN]` tag, as listed in docs/listener.md.
"""

import asyncio
import email.policy
import re
import shutil
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from relay.config.schema import Config
from relay.dkim.service import DkimSigner
from relay.queue.store import Enqueuer
from relay.smtp import replies
from relay.smtp.handler import SubmissionHandler
from tests.support.peers import ACME_PASSWORD, RelayConfig, RelayProcess, Sink, db_count, running
from tests.support.smtp_client import Raw, message, submission
from tests.support.smtp_dialogue import Dialogue, auth_plain, secure

pytestmark = pytest.mark.e2e

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
QUEUED = re.compile(rf"^250 2\.0\.0 OK queued as (?P<id>{UUID})$")
ENHANCED = re.compile(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3} ")
SETTLE = 2.0
"""Seconds to give the relay after a refusal before asserting that nothing was delivered
(the test config retries deliveries after 1-2 s)."""


def head(subject: str = "Receipt") -> bytes:
    return (
        b"From: app@acme.example\r\nTo: alice@inbox.example\r\n"
        b"Date: Mon, 23 Nov 2026 22:00:00 +0000\r\nSubject: " + subject.encode() + b"\r\n\r\n"
    )


def transaction(
    dialogue: Raw,
    data: bytes,
    sender: str = "app@acme.example",
    recipient: str = "alice@inbox.example",
) -> str:
    """MAIL, RCPT, DATA, then `data` as it is (it must carry its own end marker)."""
    assert dialogue.command(f"MAIL FROM:<{sender}>") == replies.SENDER_OK
    assert dialogue.command(f"RCPT TO:<{recipient}>") == replies.RECIPIENT_OK
    assert dialogue.command("DATA") == replies.START_DATA
    dialogue.send(data)
    return dialogue.reply()


def assert_nothing_delivered(sink: Sink) -> None:
    time.sleep(SETTLE)
    assert sink.messages == []


@pytest.mark.parametrize(
    "command",
    [auth_plain("acme", ACME_PASSWORD), "AUTH PLAIN", "AUTH LOGIN"],
    ids=["plain-initial-response", "plain-challenge", "login"],
)
def test_auth_before_starttls_needs_encryption(relay: RelayProcess, command: str) -> None:
    """RFC 4954 4 and RFC 3207: no credentials in clear text; a plaintext AUTH gets
    `538 5.7.11` (RFC 4954 6, "Encryption required for requested authentication mechanism")
    and the session stays unauthenticated."""
    raw = Raw(relay.config.submission_port)
    try:
        ehlo = raw.command("EHLO client.test")
        assert "STARTTLS" in ehlo and "AUTH" not in ehlo
        reply = raw.command(command)
        assert reply.startswith("538 5.7.11 "), reply
        assert raw.command("MAIL FROM:<app@acme.example>") == replies.AUTH_REQUIRED
    finally:
        raw.close()


def test_wrong_password_is_refused_after_the_delay(relay: RelayProcess) -> None:
    """RFC 4954 6: invalid credentials get `535 5.7.8`; the answer comes only after
    `auth_failure_delay` (0.3 s in the test config) to slow password guessing. Three
    failures stay below the default lockout of five, so the right password still works."""
    dialogue = secure(relay.config.submission_port, login=False)
    attempts = {
        "wrong password, PLAIN": [auth_plain("acme", "not-the-password")],
        "unknown user, PLAIN": [auth_plain("nobody", ACME_PASSWORD)],
        "wrong password, LOGIN": ["AUTH LOGIN YWNtZQ==", "d3Jvbmc="],  # acme / wrong
    }
    try:
        for name, lines in attempts.items():
            started = time.monotonic()
            for line in lines[:-1]:
                assert dialogue.command(line).startswith("334 "), name
            reply = dialogue.command(lines[-1])
            elapsed = time.monotonic() - started
            assert reply == replies.AUTH_INVALID, name
            assert elapsed >= 0.25, f"{name}: answered after {elapsed:.3f} s"
        assert dialogue.command(auth_plain("acme", ACME_PASSWORD)) == replies.AUTH_SUCCESS
    finally:
        dialogue.close()


def test_lockout_locks_the_guessing_address_not_the_account(
    relay_config: RelayConfig, tmp_path: Path
) -> None:
    """After `auth_max_failures` failures (3 here) from one address, that address is locked:
    `454 4.7.0` (RFC 4954 6, temporary failure) even for the right password, and for any
    other account from it. From another address the account's owner logs in as always: a
    lockout cannot be used to lock a tenant out."""
    relay_config.overrides = {"smtp": {"auth_max_failures": 3}}
    with running(relay_config, tmp_path) as relay:
        port = relay.config.submission_port
        first = secure(port, login=False)
        try:
            for _ in range(3):
                assert first.command(auth_plain("acme", "guess")) == replies.AUTH_INVALID
            assert first.command(auth_plain("acme", ACME_PASSWORD)) == replies.AUTH_LOCKED
            assert first.command(auth_plain("other", "whatever")) == replies.AUTH_LOCKED
        finally:
            first.close()

        again = secure(port, login=False)  # a new connection from the same address
        try:
            assert again.command(auth_plain("acme", ACME_PASSWORD)) == replies.AUTH_LOCKED
        finally:
            again.close()

        elsewhere = secure(port, login=False, source="127.0.0.3")
        try:
            assert elsewhere.command(auth_plain("acme", ACME_PASSWORD)).startswith("235 2.7.0")
        finally:
            elsewhere.close()


def test_guessing_one_account_from_many_addresses_throttles_only_those_addresses(
    relay_config: RelayConfig, tmp_path: Path
) -> None:
    """`auth_account_failures` (4 here) failures of one username from four addresses:
    those addresses may no longer try it, while an address without failures logs in."""
    relay_config.overrides = {"smtp": {"auth_account_failures": 4}}
    with running(relay_config, tmp_path) as relay:
        port = relay.config.submission_port
        for n in range(4, 8):
            guesser = secure(port, login=False, source=f"127.0.0.{n}")
            try:
                assert guesser.command(auth_plain("acme", "guess")) == replies.AUTH_INVALID
            finally:
                guesser.close()
        guesser = secure(port, login=False, source="127.0.0.5")
        try:
            assert guesser.command(auth_plain("acme", ACME_PASSWORD)) == replies.AUTH_LOCKED
        finally:
            guesser.close()
        owner = secure(port, login=False, source="127.0.0.8")
        try:
            assert owner.command(auth_plain("acme", ACME_PASSWORD)).startswith("235 2.7.0")
        finally:
            owner.close()


# -- who may send -------------------------------------------------------------------------


@pytest.mark.parametrize("starttls", [False, True], ids=["plaintext", "after-starttls"])
def test_mail_without_auth_is_refused(relay: RelayProcess, sink: Sink, starttls: bool) -> None:
    """RFC 4954 6: MAIL without AUTH from an address no tenant trusts gets `530 5.7.0`;
    RCPT and DATA then fail too (`503 5.5.1`, RFC 5321 4.1.4): the relay never relays for
    an unauthenticated client."""
    port = relay.config.submission_port
    if starttls:
        client = submission(port, login=False)
    else:
        client = smtplib.SMTP("127.0.0.1", port, timeout=20)
        client.ehlo("client.test")
    with client:
        assert client.mail("app@acme.example") == (530, b"5.7.0 Authentication required")
        assert client.rcpt("alice@inbox.example") == (503, b"5.5.1 Need MAIL command first")
        assert client.docmd("DATA") == (503, b"5.5.1 Need RCPT command first")
    assert_nothing_delivered(sink)


@pytest.mark.parametrize(
    ("sender", "reply"),
    [
        ("scanner@acme.example", "553 5.7.1 [P-HDR-ALIGN] Sender domain acme.example "),
        ("scanner@example.com", "553 5.7.1 [P-HDR-ALIGN] Sender domain example.com "),
        ("", "553 5.7.1 [P-HDR-ALIGN] "),
        ("scanner@printer.example", "250 2.1.0 "),
    ],
    ids=["other-tenant", "foreign", "null", "own"],
)
def test_trusted_network_may_use_only_its_own_domains(
    relay: RelayProcess, sender: str, reply: str
) -> None:
    """A trusted network (tenant `printer`, 127.0.0.2) skips AUTH, not the sending policy:
    a sender domain of another tenant or of nobody gets `553 5.7.1 [P-HDR-ALIGN]`
    (RFC 5321 4.2.5 with RFC 3463 5.7.1, delivery not authorized)."""
    with smtplib.SMTP(
        "127.0.0.1", relay.config.submission_port, timeout=20, source_address=("127.0.0.2", 0)
    ) as client:
        client.ehlo("printer.test")
        code, text = client.docmd("MAIL", f"FROM:<{sender}>")
        assert f"{code} {text.decode()}".startswith(reply)


@pytest.mark.parametrize(
    ("sender", "reply"),
    [
        ("app@other.example", "553 5.7.1 [P-HDR-ALIGN] Sender domain other.example is not"),
        ("app@evilacme.example", "553 5.7.1 [P-HDR-ALIGN] Sender domain evilacme.example "),
        ("app@acme.example.evil.test", "553 5.7.1 [P-HDR-ALIGN] Sender domain acme.example."),
        ("", "553 5.7.1 [P-HDR-ALIGN] The null sender <> cannot be used for submission"),
        ("app@acme.example", replies.SENDER_OK),
        ("app@news.acme.example", replies.SENDER_OK),
        ("app@NEWS.Acme.Example", replies.SENDER_OK),
    ],
    ids=[
        "foreign",
        "suffix-lookalike",
        "prefix-lookalike",
        "null",
        "own",
        "subdomain",
        "case-insensitive",
    ],
)
def test_sender_domain_must_belong_to_the_tenant(
    relay: RelayProcess, sender: str, reply: str
) -> None:
    """P-HDR-ALIGN: MAIL FROM must use a domain of the tenant or a subdomain of one
    (RFC 5321 3.3, refused with `553 5.7.1`, RFC 3463 "delivery not authorized"); the null
    reverse-path `<>` (RFC 5321 4.5.5) is for bounces only, never for a tenant's mail."""
    with submission(relay.config.submission_port) as client:
        code, text = client.docmd("MAIL", f"FROM:<{sender}>")
        assert f"{code} {text.decode()}".startswith(reply)


def test_subdomain_sender_is_delivered(relay: RelayProcess, sink: Sink) -> None:
    """A subdomain of an owned domain is the tenant's (`[[tenants]] domains` in
    docs/configuration.md)."""
    with submission(relay.config.submission_port) as client:
        client.send_message(message(sender="news@news.acme.example"))
    ((mail_from, rcpts, _),) = sink.wait_count(1)
    assert (mail_from, rcpts) == ("news@news.acme.example", ["alice@inbox.example"])


# -- limits -------------------------------------------------------------------------------


def test_recipients_over_the_tenant_limit(relay: RelayProcess, sink: Sink) -> None:
    """RFC 5321 4.5.3.1.10: past the tenant's limit (5 in the test config) RCPT gets
    `452 4.5.3` (RFC 3463 "too many recipients"); the message goes to the first five."""
    wanted = [f"r{i}@inbox.example" for i in range(1, 6)]
    with submission(relay.config.submission_port) as client:
        assert client.mail("app@acme.example") == (250, b"2.1.0 Sender OK")
        for rcpt in wanted:
            assert client.rcpt(rcpt) == (250, b"2.1.5 Recipient OK")
        code, text = client.rcpt("r6@inbox.example")
        assert (code, text.decode()) == (452, replies.TOO_MANY_RECIPIENTS[4:])
        code, text = client.data(message().as_bytes(policy=email.policy.SMTP))
        assert QUEUED.match(f"{code} {text.decode()}")

    def delivered() -> list[str]:
        return sorted(r for _, rcpts, _ in sink.messages for r in rcpts)

    deadline = time.monotonic() + 30
    while len(delivered()) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert delivered() == wanted


def test_declared_size_over_the_limit_is_refused_at_mail(relay: RelayProcess) -> None:
    """RFC 1870 6: a SIZE= over the tenant's limit (64 KiB here) is refused at MAIL with
    `552 5.3.4` (RFC 3463 "message too big for system"); exactly the limit is fine."""
    with submission(relay.config.submission_port) as client:
        code, text = client.docmd("MAIL", "FROM:<a@acme.example> SIZE=70000")
        assert f"{code} {text.decode()}" == replies.MESSAGE_TOO_BIG.format(limit=65536)
        assert client.docmd("MAIL", "FROM:<a@acme.example> SIZE=65536") == (
            250,
            b"2.1.0 Sender OK",
        )


def test_undeclared_size_over_the_limit_is_refused_after_the_data(
    relay: RelayProcess, sink: Sink
) -> None:
    """RFC 5321 4.2.5 / RFC 1870: without SIZE= the limit is found while reading the data;
    the `552 5.3.4` comes after the final dot, and the session goes on (a small message
    after it is accepted)."""
    big = head("big") + b"".join(b"%05d " % i + b"x" * 64 + b"\r\n" for i in range(1000))
    assert len(big) > 65536
    with submission(relay.config.submission_port) as client:
        assert client.mail("app@acme.example") == (250, b"2.1.0 Sender OK")  # no SIZE=
        assert client.rcpt("alice@inbox.example")[0] == 250
        code, text = client.data(big)
        assert f"{code} {text.decode()}" == replies.MESSAGE_TOO_BIG.format(limit=65536)
        assert client.noop() == (250, b"2.0.0 OK")
        client.send_message(message(subject="small"))
    ((_, _, content),) = sink.wait_count(1)
    assert b"Subject: small" in content
    time.sleep(SETTLE)
    assert len(sink.messages) == 1


# -- syntax -------------------------------------------------------------------------------

MALFORMED_PATHS = {
    "missing brackets": "a@acme.example",
    "space inside": "<a b@acme.example>",
    "'>' inside": "<a>b@acme.example>",
    "NUL inside": "<a\x00b@acme.example>",
    "bare CR inside": "<a\rb@acme.example>",
    "no @": "<a.acme.example>",
    "unterminated '<'": "<a@acme.example",
}


@pytest.mark.parametrize(
    ("verb", "expected"),
    [("MAIL FROM:", replies.BAD_SENDER), ("RCPT TO:", replies.BAD_RECIPIENT)],
    ids=["MAIL", "RCPT"],
)
def test_malformed_paths(relay: RelayProcess, sink: Sink, verb: str, expected: str) -> None:
    """RFC 5321 4.1.2: a path is `<local@domain>`; anything else, or CR, NUL, space or `>`
    inside it, is a syntax error of the whole command (RFC 5321 4.2.4 / RFC 3463:
    `501 5.1.7` bad sender, `501 5.1.3` bad recipient) and never cleaned up. Sent byte for
    byte over TLS: smtplib refuses to send a CR inside a command."""
    dialogue = secure(relay.config.submission_port)
    try:
        if verb.startswith("RCPT"):
            assert dialogue.command("MAIL FROM:<app@acme.example>") == replies.SENDER_OK
        answers = {name: dialogue.command(verb + path) for name, path in MALFORMED_PATHS.items()}
        assert answers == dict.fromkeys(MALFORMED_PATHS, expected)
        # Nothing was smuggled into the session: it is where it was before.
        if verb.startswith("RCPT"):
            assert dialogue.command("RCPT TO:<alice@inbox.example>") == replies.RECIPIENT_OK
        else:
            assert dialogue.command("MAIL FROM:<app@acme.example>") == replies.SENDER_OK
        assert dialogue.command("QUIT").startswith("221 2.0.0")
    finally:
        dialogue.close()
    assert sink.messages == []


def test_nul_and_bare_newlines_in_data_are_refused(relay: RelayProcess, sink: Sink) -> None:
    """RFC 5321 2.3.8: CR and LF only as CRLF, and no NUL (RFC 5322 2.3, 4.1): NUL gets
    `554 5.6.0` (media error), a bare LF or CR `554 5.5.2`; none of them is queued. A clean
    message afterwards in the same session is the only one delivered."""
    cases = {
        "NUL": (b"nul\x00here\r\n", replies.NUL_IN_DATA),
        "bare LF": (b"bare\nlf\r\n", replies.BARE_NEWLINE_IN_DATA),
        "bare CR": (b"bare\rcr\r\n", replies.BARE_NEWLINE_IN_DATA),
        "bare LF at the end": (b"bare lf at the end\n\r\n", replies.BARE_NEWLINE_IN_DATA),
    }
    dialogue = secure(relay.config.submission_port)
    try:
        answers = {
            name: transaction(dialogue, head(name) + body + b".\r\n")
            for name, (body, _) in cases.items()
        }
        assert answers == {name: reply for name, (_, reply) in cases.items()}
        assert QUEUED.match(transaction(dialogue, head("clean") + b"clean\r\n.\r\n"))
        assert dialogue.command("QUIT").startswith("221 2.0.0")
    finally:
        dialogue.close()
    ((_, _, content),) = sink.wait_count(1)
    assert content.endswith(head("clean") + b"clean\r\n")
    time.sleep(SETTLE)
    assert len(sink.messages) == 1


def test_normalize_listener_turns_bare_newlines_into_crlf(
    relay_config: RelayConfig, tmp_path: Path, sink: Sink
) -> None:
    """`bare_newlines = "normalize"` (docs/configuration.md; like Postfix's
    smtpd_forbid_bare_newline = normalize): for old devices a bare LF or CR becomes CRLF, so
    what is delivered is RFC 5321 2.3.8 clean; the end of the data is still only CRLF.CRLF."""
    relay_config.bare_newlines = "normalize"
    sent = (
        b"From: app@acme.example\nTo: alice@inbox.example\nSubject: old device\n"
        b"Date: Mon, 23 Nov 2026 22:00:00 +0000\n\n"
        b"line one\nline two\rline three\r\nline four\n"
    )
    with running(relay_config, tmp_path) as relay:
        dialogue = secure(relay.config.submission_port)
        try:
            assert QUEUED.match(transaction(dialogue, sent + b"\r\n.\r\n"))
        finally:
            dialogue.close()
        ((_, _, content),) = sink.wait_count(1)
    expected = (
        b"From: app@acme.example\r\nTo: alice@inbox.example\r\nSubject: old device\r\n"
        b"Date: Mon, 23 Nov 2026 22:00:00 +0000\r\n\r\n"
        b"line one\r\nline two\r\nline three\r\nline four\r\n\r\n"
    )
    assert content.endswith(b"\r\n" + expected)
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", content) is None


# -- session limits -----------------------------------------------------------------------


def test_listen_backlog_follows_max_connections(relay_config: RelayConfig, tmp_path: Path) -> None:
    """The kernel queues as many connections as the relay would serve (like Postfix's
    master, whose backlog is its process limit), not asyncio's default of 100: past the
    backlog a connection waits a second for its SYN or ACK to be resent."""
    ss = shutil.which("ss")
    if ss is None:
        pytest.skip("needs ss from iproute2 (apt-get install iproute2)")
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    relay_config.overrides = {"smtp": {"max_connections": 700}}
    with running(relay_config, tmp_path) as relay:
        port = relay.config.submission_port
        listening = subprocess.run(
            [ss, "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
        ).stdout.split()
    assert listening[0] == "LISTEN", listening
    assert int(listening[2]) == min(700, somaxconn), listening


def test_connection_limits(relay_config: RelayConfig, tmp_path: Path) -> None:
    """Limits per client address and per process answer `421 4.7.0` as the greeting
    (RFC 5321 3.1: 421 instead of 220 when the service is not available; RFC 3463 4.7.0),
    like Postfix's smtpd_client_connection_count_limit; a closed session frees its slot."""
    relay_config.overrides = {"smtp": {"max_connections_per_client": 2, "max_connections": 3}}
    opened: list[Dialogue] = []
    with running(relay_config, tmp_path) as relay:
        port = relay.config.submission_port

        def connect(source: str) -> Dialogue:
            dialogue = Dialogue(port, source=source)
            opened.append(dialogue)
            return dialogue

        try:
            greetings = [connect("127.0.0.1").greeting for _ in range(2)]
            assert all(g.startswith("220 relay.test ") for g in greetings), greetings
            third = connect("127.0.0.1")
            assert third.greeting == replies.TOO_MANY_CONNECTIONS_FROM_CLIENT
            assert third.closed_by_peer()
            assert connect("127.0.0.2").greeting.startswith("220 relay.test ")
            fourth = connect("127.0.0.3")
            assert fourth.greeting == replies.TOO_MANY_CONNECTIONS
            assert fourth.closed_by_peer()

            opened[0].command("QUIT")
            deadline = time.monotonic() + 5
            while True:
                greeting = connect("127.0.0.3").greeting
                if greeting.startswith("220") or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert greeting.startswith("220 relay.test ")
        finally:
            for dialogue in opened:
                dialogue.close()


def test_too_many_errors_close_the_session(relay_config: RelayConfig, tmp_path: Path) -> None:
    """After `max_errors` (3 here) error replies the relay says `421 4.7.0` and closes
    (RFC 5321 3.8 / 4.2.5: 421 and closing; like Postfix's smtpd_hard_error_limit)."""
    relay_config.overrides = {"smtp": {"max_errors": 3}}
    with running(relay_config, tmp_path) as relay:
        dialogue = Dialogue(relay.config.submission_port)
        try:
            assert dialogue.command("EHLO client.test").startswith("250")
            assert dialogue.command("NOOP") == replies.OK  # successes do not count
            assert dialogue.command("FOO").startswith("500 5.5.2 ")
            assert dialogue.command("MAIL FROM:<app@acme.example>") == replies.AUTH_REQUIRED
            assert dialogue.command("BAR").startswith("500 5.5.2 ")
            assert dialogue.reply() == replies.TOO_MANY_ERRORS
            assert dialogue.closed_by_peer()
        finally:
            dialogue.close()


def test_a_delivered_message_resets_the_error_count(
    relay_config: RelayConfig, tmp_path: Path
) -> None:
    """The limit counts errors made without delivering mail (Postfix's wording): a client
    whose refused recipients are interleaved with accepted messages is not cut off."""
    relay_config.overrides = {"smtp": {"max_errors": 3}}
    with running(relay_config, tmp_path) as relay:
        dialogue = secure(relay.config.submission_port)
        try:
            for _ in range(3):
                assert dialogue.command("MAIL FROM:<no at sign>") == replies.BAD_SENDER
                assert dialogue.command("RCPT TO:<a@inbox.example>") == (
                    replies.BAD_SEQUENCE_NEED_MAIL
                )
                reply = transaction(dialogue, head() + b"body\r\n.\r\n")
                assert QUEUED.match(reply), reply
            assert dialogue.command("NOOP") == replies.OK
        finally:
            dialogue.close()


def test_trickling_data_is_cut_off(
    relay_config: RelayConfig, tmp_path: Path, sink: Sink, database: str
) -> None:
    """The whole DATA transfer is bounded (`data_timeout`, 1 s here), not just the gap
    between bytes: a client trickling a byte every 0.2 s gets `421 4.4.2` (RFC 3463
    "bad connection") and is disconnected (RFC 5321 4.5.3.2.6); nothing is queued."""
    relay_config.overrides = {"smtp": {"data_timeout": "1s"}}
    with running(relay_config, tmp_path) as relay:
        dialogue = secure(relay.config.submission_port)
        try:
            assert dialogue.command("MAIL FROM:<app@acme.example>") == replies.SENDER_OK
            assert dialogue.command("RCPT TO:<alice@inbox.example>") == replies.RECIPIENT_OK
            assert dialogue.command("DATA") == replies.START_DATA
            started = time.monotonic()
            payload = (head("slow") + b"slow data\r\n" * 100)[:50]
            dialogue.sock.settimeout(0.2)
            for byte in payload:
                try:
                    dialogue.sock.sendall(bytes([byte]))
                    chunk = dialogue.sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                dialogue.buffer += chunk
                break
            elapsed = time.monotonic() - started
            dialogue.sock.settimeout(20)
            assert dialogue.reply() == replies.DATA_TIMEOUT
            assert 0.9 <= elapsed < 5, elapsed
            assert dialogue.closed_by_peer()
        finally:
            dialogue.close()
        time.sleep(SETTLE)
        assert db_count(database, "messages") == 0
    assert sink.messages == []


def test_data_timeout_does_not_shorten_the_idle_time_after_data(
    relay_config: RelayConfig, tmp_path: Path, sink: Sink
) -> None:
    """`data_timeout` bounds the DATA transfer only: once the data is in, the session is
    back under `command_timeout` (5 min by default, RFC 5321 4.5.3.2.7), so a client idle
    for longer than the data timeout (plus its 5 s grace) after a 250 can go on."""
    relay_config.overrides = {"smtp": {"data_timeout": "1s"}}
    with running(relay_config, tmp_path) as relay:
        dialogue = secure(relay.config.submission_port)
        try:
            assert QUEUED.match(transaction(dialogue, head("first") + b"first\r\n.\r\n"))
            time.sleep(6.5)
            assert dialogue.command("NOOP") == replies.OK
            assert QUEUED.match(transaction(dialogue, head("second") + b"second\r\n.\r\n"))
        finally:
            dialogue.close()
        assert len(sink.wait_count(2)) == 2


# -- reply format -------------------------------------------------------------------------


def test_every_reply_has_an_enhanced_code(relay: RelayProcess, sink: Sink) -> None:
    """RFC 2034 3: with ENHANCEDSTATUSCODES advertised every 2xx/4xx/5xx reply carries an
    RFC 3463 code, except the greeting and the replies to HELO/EHLO; the 250 to DATA names
    the queue id, the one in the delivered message's `Received:` header."""
    dialogue = Dialogue(relay.config.submission_port)
    try:
        assert dialogue.greeting == "220 relay.test ESMTP relay"
        assert "ENHANCEDSTATUSCODES" in dialogue.command("EHLO client.test")
        assert dialogue.starttls() == "220 2.0.0 Ready to start TLS"
        assert dialogue.command("EHLO client.test").startswith("250-relay.test")
        steps = [
            ("NOOP", replies.OK),
            ("RSET", replies.OK),
            ("FOO", '500 5.5.2 command "FOO" not recognized'),
            ("VRFY alice@inbox.example", "252 2.0.0 "),
            ("HELP", "250 2.0.0 Supported commands: "),
            ("DATA", replies.BAD_SEQUENCE_NEED_RCPT),
            ("RCPT TO:<alice@inbox.example>", replies.BAD_SEQUENCE_NEED_MAIL),
            ("MAIL TO:<app@acme.example>", replies.MAIL_SYNTAX),
            ("MAIL FROM:<app@acme.example>", replies.AUTH_REQUIRED),
            (auth_plain("acme", ACME_PASSWORD), replies.AUTH_SUCCESS),
            (auth_plain("acme", ACME_PASSWORD), "503 5.5.1 Already authenticated"),
            ("MAIL FROM:<app@acme.example> FOO=1", "555 5.5.4 Parameter FOO not recognized"),
            ("MAIL FROM:<app@acme.example> BODY=BINARYMIME", replies.BAD_BODY),
            ("MAIL FROM:<app@acme.example>", replies.SENDER_OK),
            ("MAIL FROM:<app@acme.example>", replies.BAD_SEQUENCE_NESTED_MAIL),
            ("RCPT TO:<>", replies.BAD_RECIPIENT),
            ("RCPT TO:<alice@inbox.example>", replies.RECIPIENT_OK),
            ("DATA x", replies.DATA_SYNTAX),
        ]
        answers = [(line, dialogue.command(line)) for line, _ in steps]
        for (line, expected), (_, answer) in zip(steps, answers, strict=True):
            assert answer.startswith(expected), (line, answer)
            assert ENHANCED.match(answer), (line, answer)
        assert dialogue.command("DATA") == replies.START_DATA  # 3xx: no enhanced code
        dialogue.send(head("codes") + b"Hello.\r\n.\r\n")
        queued = QUEUED.match(dialogue.reply())
        assert queued
        assert dialogue.command("QUIT") == "221 2.0.0 Bye"
    finally:
        dialogue.close()
    ((_, _, content),) = sink.wait_count(1)
    assert f" id {queued['id']}".encode() in content.split(b"\r\n\r\n", 1)[0]


def test_helo_reply_is_plain(relay: RelayProcess) -> None:
    """RFC 2034 3 exempts the reply to HELO, whose syntax is `250 SP Domain` (RFC 5321
    4.1.1.1): no enhanced code in front of the domain."""
    raw = Raw(relay.config.submission_port)
    try:
        assert raw.command("HELO client.test") == "250 relay.test"
        assert raw.command("NOOP") == replies.OK
    finally:
        raw.close()


def test_unexpected_error_is_a_temporary_failure_without_internals(tmp_path: Path) -> None:
    """RFC 5321 4.2.5: an internal failure must not lose the message, so it is a 4xx
    (`451 4.3.0`, RFC 3463 "other or undefined mail system status"), and it says nothing
    about the exception (aiosmtpd's default `500 Error: (Class) text` would)."""
    config = Config.model_validate(
        {
            "relay": {"hostname": "relay.test"},
            "listeners": [{"name": "submission", "address": "127.0.0.1:2587"}],
        }
    )

    async def answer() -> str:
        # The enqueuer's pool and the DKIM keys are not used by handle_exception.
        enqueuer = Enqueuer(None, lifetime=60, batch_max=1)  # type: ignore[arg-type]
        handler = SubmissionHandler(config, enqueuer, DkimSigner(str(tmp_path), None))
        return await handler.handle_exception(KeyError("password_hash=$argon2id$secret"))

    reply = asyncio.run(answer())
    assert reply == replies.INTERNAL_ERROR
    assert reply.startswith("451 4.3.0 ")
    assert replies.with_enhanced_code(reply) == reply
    for leak in ("KeyError", "Error:", "argon2", "secret", "Traceback"):
        assert leak not in reply
