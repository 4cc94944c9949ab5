"""End to end: submission over TLS with AUTH, the PostgreSQL queue, delivery to a real sink."""

import email
import email.policy
import smtplib
import ssl
import time

import pytest

from relay.delivery.reuse import IDLE_SECONDS
from tests.support.peers import ACME_PASSWORD, RelayProcess, Sink, db_rows, wait_for
from tests.support.smtp_client import message, submission, tls_context

pytestmark = pytest.mark.e2e


def _split(content: bytes) -> tuple[bytes, bytes]:
    head, _, body = content.partition(b"\r\n\r\n")
    return head, body


def test_message_over_starttls_reaches_sink_byte_identical(relay: RelayProcess, sink: Sink) -> None:
    """AUTH after STARTTLS; the sink gets the submitted bytes with only the DKIM signature
    and a Received: on top."""
    msg = message(body="Line one\nLine two with trailing space \n.leading dot\n")
    original = msg.as_bytes(policy=email.policy.SMTP)
    with submission(relay.config.submission_port) as client:
        client.sendmail("app@acme.example", ["alice@inbox.example"], original)
    ((mail_from, rcpts, signed),) = sink.wait_count(1)
    assert (mail_from, rcpts) == ("app@acme.example", ["alice@inbox.example"])
    signature, _, rest = signed.partition(b"\r\nReceived: ")
    assert (
        signature.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")
        and b"d=acme.example;" in signature
    )
    content = b"Received: " + rest
    assert content.startswith(b"Received: from client.test ([127.0.0.1])\r\n\tby relay.test")
    assert content.endswith(original)
    assert _split(content)[1] == _split(original)[1]
    received = content[: len(content) - len(original)].decode()
    assert "with ESMTPSA id" in received and "for <alice@inbox.example>" in received


def test_implicit_tls_listener_offers_auth_at_once(relay: RelayProcess, sink: Sink) -> None:
    """RFC 8314: on the implicit-TLS port AUTH is offered without STARTTLS."""
    with smtplib.SMTP_SSL(
        "127.0.0.1", relay.config.smtps_port, context=tls_context(), timeout=20
    ) as client:
        client.ehlo("client.test")
        assert client.has_extn("auth") and not client.has_extn("starttls")
        client.login("acme", ACME_PASSWORD)
        client.send_message(message())
    assert len(sink.wait_count(1)) == 1


def test_message_id_added_when_missing(relay: RelayProcess, sink: Sink) -> None:
    """RFC 5322 3.6.4: a Message-ID is added when the client sent none, at the relay's name."""
    msg = message()
    del msg["Message-ID"]
    with submission(relay.config.submission_port) as client:
        client.send_message(msg)
    ((_, _, content),) = sink.wait_count(1)
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    assert parsed["Message-ID"].endswith("@relay.test>")


def test_trusted_network_submits_without_auth(relay: RelayProcess, sink: Sink) -> None:
    """A device in a tenant's `networks` (like Postfix's mynetworks) needs no AUTH."""
    with smtplib.SMTP(
        "127.0.0.1", relay.config.submission_port, timeout=20, source_address=("127.0.0.2", 0)
    ) as client:
        client.ehlo("printer.test")
        client.sendmail(
            "scanner@printer.example",
            ["alice@inbox.example"],
            message(sender="scanner@printer.example").as_bytes(policy=email.policy.SMTP),
        )
    assert sink.wait_count(1)[0][0] == "scanner@printer.example"


def test_ehlo_advertises_extensions(relay: RelayProcess) -> None:
    """EHLO lists what is implemented; AUTH appears only once TLS is on (RFC 4954 4)."""
    with smtplib.SMTP("127.0.0.1", relay.config.submission_port, timeout=20) as client:
        _, text = client.ehlo("client.test")
        plain = text.decode().upper().splitlines()
        client.starttls(context=tls_context())
        _, text = client.ehlo("client.test")
        secure = text.decode().upper().splitlines()
    for ext in ("SIZE 52428800", "PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"):
        assert ext in plain and ext in secure
    assert "STARTTLS" in plain and not any(x.startswith("AUTH") for x in plain)
    assert "STARTTLS" not in secure and "AUTH LOGIN PLAIN" in secure


def test_certificate_is_generated(relay: RelayProcess) -> None:
    """Without [tls] files a self-signed certificate is made in the data directory."""
    key = relay.config.data_dir / "tls" / "key.pem"
    assert key.exists() and (key.stat().st_mode & 0o777) == 0o600
    ssl.create_default_context().load_verify_locations(relay.config.data_dir / "tls" / "cert.pem")


def _submit_one(relay: RelayProcess, subject: str) -> None:
    with submission(relay.config.submission_port) as client:
        client.send_message(message(subject=subject))


def test_outbound_connection_is_reused_then_closed_when_idle(
    relay: RelayProcess, sink: Sink
) -> None:
    """Like Postfix's connection cache: the next delivery to the same host within the idle
    time goes over the same connection; after it, a new one is opened."""
    _submit_one(relay, "first")
    sink.wait_count(1)
    _submit_one(relay, "second")
    sink.wait_count(2)
    time.sleep(IDLE_SECONDS + 1.5)
    _submit_one(relay, "third")
    sink.wait_count(3)
    first, second, third = sink.handler.peers
    assert first == second
    assert third != second


def test_a_destination_that_hung_up_costs_no_deferral(relay: RelayProcess, sink: Sink) -> None:
    """A kept connection the server closed meanwhile fails its RSET and is replaced: the
    message goes out at once, with no 4xx attempt recorded."""
    sink.handler.hang_up = True
    _submit_one(relay, "first")
    sink.wait_count(1)
    time.sleep(0.5)  # the sink has closed the connection the relay keeps
    _submit_one(relay, "second")
    sink.wait_count(2, timeout=5)
    first, second = sink.handler.peers
    assert first != second

    def outcomes() -> list[str]:
        rows = db_rows(relay.config.dsn, "SELECT outcome FROM attempts ORDER BY id")
        return [r["outcome"] for r in rows]

    # recorded once the relay has read the sink's 250, just after the sink holds the message
    wait_for(lambda: len(outcomes()) >= 2, 10, "both attempts recorded")
    assert outcomes() == ["delivered", "delivered"]
