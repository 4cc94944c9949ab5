"""End to end: nothing answered 250 is lost, not on kill -9, not when PostgreSQL stops."""

import base64
import email
import email.policy
import os
import smtplib
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.peers import (
    ACME_PASSWORD,
    RelayConfig,
    RelayProcess,
    Sink,
    db_count,
    db_rows,
    running,
    wait_for,
)
from tests.support.smtp_client import message, submission

pytestmark = pytest.mark.e2e


def _message_ids(sink: Sink) -> Counter[str]:
    return Counter(
        str(email.message_from_bytes(content, policy=email.policy.default)["Message-ID"])
        for _, _, content in sink.messages
    )


def test_kill_9_after_a_burst_loses_nothing(relay: RelayProcess, sink: Sink) -> None:
    """Every message that got 250 reaches the sink after kill -9 and a restart
    (at-least-once: duplicates are allowed and reported, losses are not)."""
    sink.handler.script = ["451 4.3.0 busy"] * 15
    accepted = []
    with submission(relay.config.submission_port) as client:
        for n in range(60):
            msg = message(subject=f"burst {n}")
            client.send_message(msg)  # raises unless 250
            accepted.append(str(msg["Message-ID"]))
    relay.kill9()
    delivered_before = len(sink.messages)
    relay.start()
    wait_for(lambda: set(accepted) <= set(_message_ids(sink)), 60, "every accepted message")
    duplicates = sum(n - 1 for n in _message_ids(sink).values())
    print(f"kill -9: {delivered_before} delivered before the kill, {duplicates} duplicates")


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[Any]:
    """A PostgreSQL of this test's own, so the test can stop and start it."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(run))
    import pgserver

    server = pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
    try:
        yield server
    finally:
        if server.get_postmaster_info().is_running():
            server.cleanup()


def _stop(server: Any) -> None:
    import pgserver

    pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


def _consent_lookup(config: RelayConfig) -> tuple[int, str | None]:
    """The status and Retry-After of a tenant's consent look-up over the HTTP API."""
    login = base64.b64encode(f"acme:{ACME_PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{config.http_port}/v1/consent/alice@inbox.example",
        headers={"Authorization": f"Basic {login}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Retry-After"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Retry-After"]


def test_database_down_gets_451_and_the_relay_recovers(
    private_postgres: Any, sink: Sink, tmp_path: Path
) -> None:
    """With PostgreSQL stopped during a session the reply to DATA is 451, never 250, and the
    HTTP API answers 503 with Retry-After; once it is back the relay accepts and delivers
    again without a restart."""
    config = RelayConfig(
        dsn=private_postgres.get_uri("postgres"),
        data_dir=tmp_path / "data",
        routes={"inbox.example": sink.port},
    )
    with running(config, tmp_path) as relay:
        with submission(config.submission_port) as client:
            client.mail("app@acme.example")
            client.rcpt("alice@inbox.example")
            _stop(private_postgres)
            code, reply = client.data(message().as_bytes(policy=email.policy.SMTP))
            assert code == 451 and reply.startswith(b"4.3.0"), (code, reply)
        assert _consent_lookup(config) == (503, "60")  # the API says "try again", not 500

        private_postgres.ensure_postgres_running()
        deadline = time.monotonic() + 30
        while True:
            try:
                with submission(config.submission_port) as again:
                    again.send_message(message(subject="after the restart"))
                break
            except smtplib.SMTPDataError as exc:
                assert exc.smtp_code == 451, exc
                assert time.monotonic() < deadline, "the relay did not recover"
                time.sleep(0.5)
        ((_, _, content),) = sink.wait_count(1)
        assert b"Subject: after the restart" in content
        assert db_count(private_postgres.get_uri("postgres"), "messages") == 1
        assert relay.healthy()


def test_an_outcome_unrecorded_during_an_outage_is_recorded_after_it_not_sent_again(
    private_postgres: Any, sink: Sink, tmp_path: Path
) -> None:
    """PostgreSQL stops while a delivery is at the destination; the destination answers 250
    meanwhile. The relay keeps that outcome and records it once the database is back, within
    the lease, instead of letting the lease expire and sending the message a second time."""
    sink.handler.delay = 3.0  # the 250 comes while the database is down
    dsn = private_postgres.get_uri("postgres")
    config = RelayConfig(dsn=dsn, data_dir=tmp_path / "data", routes={"inbox.example": sink.port})
    with running(config, tmp_path) as relay:
        with submission(config.submission_port) as client:
            client.send_message(message(subject="in flight"))
        wait_for(lambda: len(_leased(dsn)) == 1, 10, "the delivery leased")
        _stop(private_postgres)
        sink.wait_count(1)
        private_postgres.ensure_postgres_running()
        wait_for(lambda: _states(dsn) == ["delivered"], 15, "the outcome recorded")
        time.sleep(5 + sink.handler.delay + 2)  # a lease, a second attempt's DATA, a margin
        assert len(sink.messages) == 1
        assert db_count(dsn, "attempts") == 1
        assert relay.healthy()


def _leased(dsn: str) -> list[Any]:
    return db_rows(dsn, "SELECT id FROM deliveries WHERE lease_token IS NOT NULL")


def _states(dsn: str) -> list[str]:
    return [r["state"] for r in db_rows(dsn, "SELECT state FROM deliveries")]
