"""End to end: SMTP smuggling (CVE-2023-51764 Postfix, CVE-2024-27305 aiosmtpd).

A server that ends DATA at anything but CRLF.CRLF lets a client hide a second transaction in
the first message's data: the relay checks the first one and delivers both, the second
unchecked. RFC 5321 4.1.1.4 and 2.3.8: only `<CRLF>.<CRLF>` ends the data. Each variant below
is sent byte for byte after STARTTLS and AUTH, followed by a complete second transaction
(MAIL/RCPT/DATA to a victim) and only then the real end marker.
"""

import re
import time
from pathlib import Path

import pytest

from relay.smtp import replies
from tests.support.peers import RelayConfig, RelayProcess, Sink, running
from tests.support.smtp_dialogue import Dialogue, secure

pytestmark = pytest.mark.e2e

QUEUED = re.compile(r"^250 2\.0\.0 OK queued as [0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$")
SETTLE = 2.0
"""Seconds to give the relay before asserting that no (further) message was delivered
(the test config retries deliveries after 1-2 s)."""

HEAD = (
    b"From: app@acme.example\r\nTo: alice@inbox.example\r\nSubject: smuggling\r\n"
    b"Date: Mon, 23 Nov 2026 22:00:00 +0000\r\n\r\nhello"
)
SECOND = (
    b"MAIL FROM:<evil@acme.example>\r\nRCPT TO:<victim@inbox.example>\r\nDATA\r\n\r\nsmuggled\r\n"
)
END = b"\r\n.\r\n"
VARIANTS = {
    "LF.CRLF": b"\n.\r\n",
    "LF.LF": b"\n.\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
}


def smuggle(dialogue: Dialogue, fake_end: bytes) -> tuple[str, str]:
    """One transaction whose data hides a second one; return the replies to the data and to
    the QUIT sent after it (so any extra reply to a smuggled command would show)."""
    assert dialogue.command("MAIL FROM:<app@acme.example>") == replies.SENDER_OK
    assert dialogue.command("RCPT TO:<alice@inbox.example>") == replies.RECIPIENT_OK
    assert dialogue.command("DATA") == replies.START_DATA
    dialogue.send(HEAD + fake_end + SECOND + END)
    answer = dialogue.reply()
    return answer, dialogue.command("QUIT")


@pytest.mark.parametrize("fake_end", VARIANTS.values(), ids=VARIANTS.keys())
def test_smuggling_is_refused_by_default(relay: RelayProcess, sink: Sink, fake_end: bytes) -> None:
    """On the default (`reject`) listener the bare CR or LF of the fake end marker makes the
    whole data `554 5.5.2` (RFC 5321 2.3.8); the smuggled commands are data, never commands,
    and nothing at all is delivered."""
    dialogue = secure(relay.config.submission_port)
    try:
        answer, quit_reply = smuggle(dialogue, fake_end)
    finally:
        dialogue.close()
    assert answer == replies.BARE_NEWLINE_IN_DATA
    assert quit_reply == "221 2.0.0 Bye"
    time.sleep(SETTLE)
    assert sink.messages == []


@pytest.mark.parametrize("fake_end", VARIANTS.values(), ids=VARIANTS.keys())
def test_smuggling_is_one_message_on_a_normalize_listener(
    relay_config: RelayConfig, tmp_path: Path, sink: Sink, fake_end: bytes
) -> None:
    """On a `normalize` listener bare CR/LF become CRLF only after CRLF.CRLF has ended the
    data, so normalising cannot create an end marker: one 250, exactly one message to the
    real recipient with the second transaction as body text, nothing for the victim."""
    relay_config.bare_newlines = "normalize"
    with running(relay_config, tmp_path) as relay:
        dialogue = secure(relay.config.submission_port)
        try:
            answer, quit_reply = smuggle(dialogue, fake_end)
        finally:
            dialogue.close()
        assert QUEUED.match(answer), answer
        assert quit_reply == "221 2.0.0 Bye"
        ((mail_from, rcpts, content),) = sink.wait_count(1)
        time.sleep(SETTLE)
        assert len(sink.messages) == 1
    assert (mail_from, rcpts) == ("app@acme.example", ["alice@inbox.example"])
    body = content.split(b"\r\n\r\n", 1)[1]
    assert b"MAIL FROM:<evil@acme.example>\r\nRCPT TO:<victim@inbox.example>\r\n" in body
    assert body.endswith(b"\r\nsmuggled\r\n\r\n")
    assert all("victim@inbox.example" not in r for _, r, _ in sink.messages)


def test_bytes_after_the_end_marker_are_the_next_command(relay: RelayProcess, sink: Sink) -> None:
    """RFC 2920 (PIPELINING) and RFC 5321 4.1.1.4: what follows CRLF.CRLF in the same write
    is the next command, not data: `...\\r\\n.\\r\\nQUIT\\r\\n` gets 250, then 221."""
    dialogue = secure(relay.config.submission_port)
    try:
        assert dialogue.command("MAIL FROM:<app@acme.example>") == replies.SENDER_OK
        assert dialogue.command("RCPT TO:<alice@inbox.example>") == replies.RECIPIENT_OK
        assert dialogue.command("DATA") == replies.START_DATA
        dialogue.send(HEAD + END + b"QUIT\r\n")
        assert QUEUED.match(dialogue.reply())
        assert dialogue.reply() == "221 2.0.0 Bye"
        assert dialogue.closed_by_peer()
    finally:
        dialogue.close()
    ((_, _, content),) = sink.wait_count(1)
    assert content.endswith(HEAD + b"\r\n")
    assert b"QUIT" not in content
