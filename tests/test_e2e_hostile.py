"""End to end: input built to hurt the relay gets a clear refusal, and other sessions are
served meanwhile."""

import base64
import smtplib
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.peers import ACME_PASSWORD, RelayConfig, RelayProcess, Sink, running
from tests.smtp_client import submission
from tests.smtp_dialogue import secure

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
    relay = RelayProcess(relay_config, tmp_path)
    relay.write_config(
        relay_config.render().replace('max_message_size = "64KiB"', 'max_message_size = "8MiB"')
    )
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
    relay_config.extra_http = 'trusted_proxies = ["127.0.0.0/8"]'
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
