"""Interop: the README's swaks command against the real relay (Debian's swaks package)."""

import shutil
import subprocess

import pytest

from tests.support.peers import ACME_PASSWORD, RelayProcess, Sink

pytestmark = [
    pytest.mark.interop,
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("swaks") is None, reason="swaks not found: `apt-get install swaks`"
    ),
]


def _swaks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["swaks", "--auth-user", "acme", "--auth-password", ACME_PASSWORD,
         "--from", "app@acme.example", "--to", "alice@inbox.example", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_swaks_starttls_auth_login(relay: RelayProcess, sink: Sink) -> None:
    """As the README shows: STARTTLS on the submission port, AUTH LOGIN."""
    result = _swaks(
        "--server", f"127.0.0.1:{relay.config.submission_port}", "--tls", "--auth", "LOGIN",
        "--header", "Subject: Hello from swaks",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    ((_, rcpts, content),) = sink.wait_count(1)
    assert rcpts == ["alice@inbox.example"] and b"Subject: Hello from swaks" in content


def test_swaks_implicit_tls_auth_plain(relay: RelayProcess, sink: Sink) -> None:
    """RFC 8314 implicit TLS (swaks --tlsc) with AUTH PLAIN."""
    result = _swaks(
        "--server", f"127.0.0.1:{relay.config.smtps_port}", "--tlsc", "--auth", "PLAIN",
        "--header", "Subject: Hello over implicit TLS",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    ((_, _, content),) = sink.wait_count(1)
    assert b"Subject: Hello over implicit TLS" in content


def test_swaks_without_tls_gets_no_auth(relay: RelayProcess, sink: Sink) -> None:
    """Without STARTTLS no AUTH is offered (RFC 4954 4), so swaks cannot log in or send."""
    result = _swaks("--server", f"127.0.0.1:{relay.config.submission_port}", "--auth", "PLAIN")
    assert result.returncode != 0
    assert "250 STARTTLS" in result.stdout and "AUTH" not in result.stdout.split("-> QUIT")[0]
    assert sink.messages == []
