"""End to end: input built to hurt the relay gets a clear refusal, and other sessions are
served meanwhile."""

import base64
import email.policy
import smtplib
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.peers import (
    ACME_PASSWORD,
    Amend,
    Append,
    RelayConfig,
    RelayProcess,
    Sink,
    free_port,
    running,
)
from tests.support.smtp_client import Raw, message, submission, tls_context
from tests.support.smtp_dialogue import secure

pytestmark = pytest.mark.e2e

HEAD = (
    b"From: app@acme.example\r\nTo: alice@inbox.example\r\nSubject: parts\r\n"
    b"Date: Mon, 07 Dec 2026 12:00:00 +0000\r\nMessage-ID: <bomb@acme.example>\r\n"
    b"MIME-Version: 1.0\r\n"
)


def many_parts(count: int) -> bytes:
    """One multipart/mixed of `count` tiny text parts: about 2 MB for 50,000."""
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\n%d\r\n" % i for i in range(count))
    return HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n"


def nested(depth: int) -> bytes:
    """Multiparts nested `depth` deep, a text part at the bottom."""
    body = b"Content-Type: text/plain\r\n\r\ndeep\r\n"
    for level in reversed(range(depth)):
        body = (
            b"Content-Type: multipart/mixed; boundary=n%d\r\n\r\n--n%d\r\n" % (level, level)
            + body
            + b"--n%d--\r\n" % level
        )
    return HEAD + body


@pytest.fixture
def roomy(relay_config: RelayConfig, tmp_path: Path) -> "RelayProcess":
    """A relay whose tenant may send messages of a few MB."""
    relay_config.overrides = {"tenants": Amend(acme={"limits": {"max_message_size": "8MiB"}})}
    relay = RelayProcess(relay_config, tmp_path)
    relay.start()
    yield relay
    relay.stop()


def test_a_mime_bomb_is_refused_while_other_sessions_are_answered(
    roomy: RelayProcess, sink: Sink
) -> None:
    """P-SIZE: 50,000 MIME parts get `554 5.6.0` (not a 451 the client would retry), and
    another session's NOOPs are answered within a second all the while."""
    outcome: dict[str, object] = {}

    def send_bomb() -> None:
        with submission(roomy.config.submission_port) as client:
            try:
                client.sendmail("app@acme.example", ["alice@inbox.example"], many_parts(50_000))
            except smtplib.SMTPDataError as exc:
                outcome["reply"] = (exc.smtp_code, exc.smtp_error.decode())

    with submission(roomy.config.submission_port) as other:
        bomber = threading.Thread(target=send_bomb)
        bomber.start()
        worst = 0.0
        while bomber.is_alive():
            started = time.monotonic()
            assert other.noop()[0] == 250
            worst = max(worst, time.monotonic() - started)
            time.sleep(0.02)
        bomber.join()
    code, text = outcome["reply"]  # type: ignore[misc]
    assert code == 554 and text.startswith("5.6.0 [P-SIZE] the message has more than 500 MIME")
    assert worst < 1.0
    assert sink.messages == []


def test_deep_nesting_is_refused_not_retried(roomy: RelayProcess, sink: Sink) -> None:
    """1,000 nested multiparts: `554 5.6.0` naming the depth limit, never a 4xx."""
    with submission(roomy.config.submission_port) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("app@acme.example", ["alice@inbox.example"], nested(1000))
    assert refused.value.smtp_code == 554
    assert refused.value.smtp_error.decode().startswith(
        "5.6.0 [P-SIZE] the message nests MIME parts more than 10 levels deep"
    )


def test_an_8bit_line_in_a_parts_header_block_is_read_not_retried(
    relay: RelayProcess, sink: Sink
) -> None:
    """A part whose header block holds a line of 8-bit octets (no header field: it starts
    the part's body, as the standard library reads it) is walked like any other; it made
    the MIME walk raise, and the client got `451` and retried for ever."""
    msg = message()
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="r.pdf")
    raw = msg.as_bytes(policy=email.policy.SMTP)
    boundary = msg.get_boundary().encode()
    raw = raw.replace(b"--" + boundary + b"\r\n", b"--" + boundary + b"\r\n\xff\xfe\r\n", 1)
    with submission(relay.config.submission_port) as client:
        client.sendmail("app@acme.example", ["alice@inbox.example"], raw)
    assert len(sink.wait_count(1)) == 1


def test_control_characters_in_a_username_cannot_forge_log_lines(relay: RelayProcess) -> None:
    """An AUTH username carrying CR LF and a fake log line is logged escaped, on one line."""
    forged = "2026-12-07 12:00:00,000 INFO relay.smtp.handler: auth ok user=admin tenant=acme"
    blob = base64.b64encode(f"\0evil\r\n{forged}\0wrong".encode()).decode()
    with submission(relay.config.submission_port, login=False) as client:
        code, _ = client.docmd("AUTH", f"PLAIN {blob}")
    assert code == 535
    lines = relay.log().splitlines()
    assert not any(line.startswith(forged) for line in lines)
    assert any("auth failed user=evil\\r\\n" + forged in line for line in lines)


def test_starttls_inside_tls_is_a_bad_sequence(relay: RelayProcess) -> None:
    """RFC 3207 4: no TLS inside TLS: `503 5.5.1`, and the session goes on."""
    dialogue = secure(relay.config.submission_port, login=False)
    try:
        assert dialogue.command("STARTTLS") == "503 5.5.1 TLS already active"
        assert dialogue.command("NOOP").startswith("250")
    finally:
        dialogue.close()


@pytest.mark.parametrize("mechanism", ["AUTH LOGIN", "AUTH PLAIN"])
def test_an_aborted_auth_gets_one_reply(relay: RelayProcess, mechanism: str) -> None:
    """RFC 4954 4: `*` cancels the exchange with one `501`; the next command's reply is
    the next line the client reads."""
    dialogue = secure(relay.config.submission_port, login=False)
    try:
        assert dialogue.command(mechanism).startswith("334 ")
        assert dialogue.command("*") == "501 5.7.0 Auth aborted"
        assert dialogue.command("NOOP").startswith("250")
        dialogue.sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            dialogue.reply()  # nothing more was sent
    finally:
        dialogue.close()


def test_the_data_folder_and_its_secrets_are_private(
    relay_config: RelayConfig, tmp_path: Path
) -> None:
    """The data folder (0755 when an admin made it so) becomes 0700 at start; the keys and
    state files the relay writes in it are 0600."""
    relay_config.data_dir.mkdir(mode=0o755)
    relay_config.data_dir.chmod(0o755)
    relay = RelayProcess(relay_config, tmp_path).start()
    try:
        assert relay_config.data_dir.stat().st_mode & 0o777 == 0o700
        written = [
            *relay_config.data_dir.glob("dkim/*/*"),
            *relay_config.data_dir.glob("tls/*key*"),
        ]
        assert written
        for path in written:
            assert path.stat().st_mode & 0o077 == 0, path
    finally:
        relay.stop()


def _consent_api(relay: RelayProcess, password: str, client: str) -> int:
    """GET a consent record as tenant acme, through a proxy that says the client is `client`."""
    token = base64.b64encode(f"acme:{password}".encode()).decode()
    request = urllib.request.Request(
        relay.url("/v1/consent/nobody@inbox.example"),
        headers={"Authorization": f"Basic {token}", "X-Forwarded-For": client},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_a_lockout_behind_the_proxy_locks_only_the_guessing_client(
    relay_config: RelayConfig, tmp_path: Path
) -> None:
    """With the proxy in `[http] trusted_proxies`, failed logins count against the client it
    names: five from 198.51.100.7 lock that client (429), and the tenant, from another
    client, still reads its records (404 for an unknown address, not 429)."""
    relay_config.overrides = {"http": {"trusted_proxies": ["127.0.0.0/8"]}}
    with running(relay_config, tmp_path) as relay:
        for _ in range(5):
            assert _consent_api(relay, "guess", "198.51.100.7") == 401
        assert _consent_api(relay, ACME_PASSWORD, "198.51.100.7") == 429
        assert _consent_api(relay, ACME_PASSWORD, "198.51.100.8") == 404


def test_a_client_cannot_choose_its_address_without_a_trusted_proxy(
    relay_config: RelayConfig, tmp_path: Path
) -> None:
    """Without `trusted_proxies`, `X-Forwarded-For` is ignored: a guesser changing it is
    still one client."""
    with running(relay_config, tmp_path) as relay:
        for n in range(5):
            assert _consent_api(relay, "guess", f"198.51.100.{n}") == 401
        assert _consent_api(relay, ACME_PASSWORD, "198.51.100.99") == 429


def test_anonymous_feedback_clients_cannot_take_the_tenants_slots(
    relay_config: RelayConfig, tmp_path: Path
) -> None:
    """A feedback listener has a cap of its own (a tenth of `max_connections`, at least 10):
    idle connections there are refused past it while tenants still get `220`; and one
    client address may send `reports_per_client` reports an hour."""
    port = free_port()
    relay_config.overrides = {
        "smtp": {"max_connections": 20, "max_connections_per_client": 50},
        "listeners": Append(
            {"name": "feedback", "address": f"127.0.0.1:{port}", "role": "feedback"}
        ),
        "feedback": {"fbl_addresses": ["fbl@relay.test"], "reports_per_client": 2},
    }
    relay = RelayProcess(relay_config, tmp_path)
    relay.start()
    idle: list[Raw] = []
    try:
        idle = [Raw(port) for _ in range(10)]
        assert all(r.greeting.startswith("220 ") for r in idle)
        refused = Raw(port)
        idle.append(refused)
        assert refused.greeting == "421 4.7.0 Too many connections, try again later"
        tenant = Raw(relay.config.submission_port)
        idle.append(tenant)
        assert tenant.greeting.startswith("220 ")
        for connection in idle[:10]:
            connection.close()
        time.sleep(0.5)
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
            client.ehlo("mx.inbox.example")
            for n in range(3):
                code, reply = client.mail("")
                if n < 2:
                    assert code == 250 and client.rcpt("fbl@relay.test")[0] == 250
                    assert client.data(b"Subject: report\r\n\r\nnot an ARF report\r\n")[0] == 250
            assert (code, reply) == (
                450,
                b"4.7.1 Too many reports from your address this hour; try again later",
            )
    finally:
        for connection in idle:
            connection.close()
        relay.stop()


def test_a_silent_tls_client_is_dropped_after_the_handshake_timeout(
    relay_config: RelayConfig, tmp_path: Path
) -> None:
    """On the implicit-TLS listener a connection that never starts its handshake holds its
    descriptor `tls_handshake_timeout` (1 s here), not asyncio's 60 s."""
    relay_config.overrides = {"smtp": {"tls_handshake_timeout": "1s"}}
    with running(relay_config, tmp_path) as relay:
        silent = socket.create_connection(("127.0.0.1", relay.config.smtps_port), timeout=10)
        try:
            started = time.monotonic()
            assert silent.recv(1) == b""  # closed by the relay
            assert time.monotonic() - started < 5
        finally:
            silent.close()


def test_tls_handshakes_in_progress_count_toward_the_caps(
    relay_config: RelayConfig, tmp_path: Path
) -> None:
    """A connection to the implicit-TLS listener holds a slot from TCP accept: silent ones
    use up the listener's cap (3 here), the next is closed before any handshake, the
    STARTTLS listener still answers, and a slot comes back when a handshake times out."""
    relay_config.overrides = {
        "listeners": Amend(submissions={"max_connections": 3}),
        "smtp": {"tls_handshake_timeout": "2s"},
    }
    relay = RelayProcess(relay_config, tmp_path)
    relay.start()
    port = relay.config.smtps_port
    silent = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    try:
        time.sleep(0.3)
        with pytest.raises((ssl.SSLError, OSError)):
            smtplib.SMTP_SSL("127.0.0.1", port, context=tls_context(), timeout=5)
        tenant = Raw(relay.config.submission_port)
        assert tenant.greeting.startswith("220 ")
        tenant.close()
        for connection in silent:
            assert connection.recv(1) == b""  # the handshake timed out
        with smtplib.SMTP_SSL("127.0.0.1", port, context=tls_context(), timeout=10) as client:
            assert client.noop()[0] == 250
    finally:
        for connection in silent:
            connection.close()
        relay.stop()


def test_message_data_in_flight_is_bounded_per_process(
    relay_config: RelayConfig, tmp_path: Path, sink: Sink
) -> None:
    """`[smtp] data_in_flight` (2 MiB here): while one client holds 1.5 MiB of an unfinished
    DATA, a second message of 1 MiB gets `452 4.3.1` after its data, and so does a MAIL
    whose SIZE does not fit; once the first is queued the second goes through."""
    relay_config.overrides = {
        "smtp": {"data_in_flight": "2MiB", "max_message_size": "2MiB"},
        "tenants": Amend(acme={"limits": {"max_message_size": "2MiB"}}),
    }
    relay = RelayProcess(relay_config, tmp_path)
    relay.start()
    line = b"x" * 998 + b"\r\n"
    scan = message(sender="scanner@printer.example").as_bytes(policy=email.policy.SMTP)
    holder = Raw(relay.config.submission_port, source="127.0.0.2")
    try:
        for command in ("EHLO printer.test", "MAIL FROM:<scanner@printer.example>",
                        "RCPT TO:<alice@inbox.example>", "DATA"):  # fmt: skip
            assert holder.command(command)[:1] in "23"
        holder.send(scan + line * 1500)
        time.sleep(1.0)  # read by the relay: 1.5 MiB held
        with submission(relay.config.submission_port) as other:
            assert other.mail("app@acme.example", ["size=1048576"]) == (
                452,
                b"4.3.1 Insufficient system storage: too much mail in transit, try again later",
            )
            other.rset()
            body = message().as_bytes(policy=email.policy.SMTP) + line * 1000
            other.mail("app@acme.example")  # no SIZE: the budget is counted as data comes
            other.rcpt("alice@inbox.example")
            code, reply = other.data(body)
            assert (code, reply[:5]) == (452, b"4.3.1")
            assert holder.command(b".").startswith("250 ")
            other.rset()
            other.sendmail("app@acme.example", ["alice@inbox.example"], body)
        sink.wait_count(2)
    finally:
        holder.close()
        relay.stop()
