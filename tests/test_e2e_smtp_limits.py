"""End to end: the limits of RFC 5321 4.5.3.1 as a client meets them.

- A command line is at most 512 octets with its CRLF (4.5.3.1.4); MAIL may be longer by
  what the advertised extensions add (SIZE 26, SMTPUTF8 10, AUTH 500 once AUTH is
  offered). One octet more is answered `500 5.5.2`, the limit itself is not.
- Recipients past the tenant's limit get `452 4.5.3` and do not count as errors
  (4.5.3.1.8: the client sends the rest in another transaction), so the recipients
  accepted so far are delivered, however many the client tried.
"""

import email.policy

import pytest

from tests.support.peers import RelayProcess, Sink, wait_for
from tests.support.smtp_client import Raw, message, submission

pytestmark = pytest.mark.e2e


def _line(verb: str, octets: int) -> bytes:
    """A `verb` command line of exactly `octets` octets with its CRLF."""
    head = verb.encode() + b" "
    return head + b"x" * (octets - len(head) - 2)


@pytest.mark.parametrize("hello", ["EHLO", "HELO"])
def test_a_command_line_is_512_octets_with_its_crlf(relay: RelayProcess, hello: str) -> None:
    raw = Raw(relay.config.submission_port)
    try:
        assert raw.command(f"{hello} client.test").startswith("250")
        assert raw.command(_line("NOOP", 512)).startswith("250 ")
        assert raw.command(_line("NOOP", 513)).startswith("500 5.5.2 ")
        assert raw.command(_line("RCPT", 512)).startswith("503 ")  # no MAIL yet: not 500
        assert raw.command(_line("RCPT", 513)).startswith("500 5.5.2 ")
    finally:
        raw.close()


def test_mail_may_be_longer_by_what_the_extensions_add(relay: RelayProcess) -> None:
    """Before TLS (no AUTH offered): 512 + 26 (SIZE) + 10 (SMTPUTF8); under TLS, where
    AUTH is offered, 500 more. At the limit the line is parsed (and refused for what it
    says), one octet more it is too long."""
    raw = Raw(relay.config.submission_port)
    try:
        raw.command("EHLO client.test")
        assert not raw.command(_line("MAIL", 548)).startswith("500")
        assert raw.command(_line("MAIL", 549)).startswith("500 5.5.2 ")
    finally:
        raw.close()
    with submission(relay.config.submission_port) as client:
        pad = "x" * 1048
        at_limit = ("FROM:<app@acme.example> " + pad)[: 1048 - len("MAIL ") - 2]
        assert client.docmd("MAIL", at_limit)[0] != 500
        assert client.docmd("MAIL", at_limit + "x")[0] == 500


def test_recipients_past_the_limit_are_not_errors(relay: RelayProcess, sink: Sink) -> None:
    """The test tenant takes 5 recipients a message and closes a session at 20 errors: 40
    recipients get 5 accepted and 35 answered 452 4.5.3, and the 5 are delivered."""
    recipients = [f"r{n}@inbox.example" for n in range(40)]
    with submission(relay.config.submission_port) as client:
        raw = message().as_bytes(policy=email.policy.SMTP)
        refused = client.sendmail("app@acme.example", recipients, raw)
        assert client.noop()[0] == 250  # the session is still open
    assert sorted(refused) == sorted(recipients[5:])
    assert {reply for reply in refused.values()} == {
        (452, b"4.5.3 [P-SIZE] Too many recipients for one message, send the rest in another")
    }

    def delivered() -> list[str]:
        return sorted(r for _, rcpts, _ in sink.messages for r in rcpts)

    wait_for(lambda: len(delivered()) >= 5, 30, "the accepted recipients' delivery")
    assert delivered() == sorted(recipients[:5])
