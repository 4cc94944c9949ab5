"""End to end: outbound STARTTLS as the delivery TLS policy says (RFC 3207, RFC 7435)."""

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from relay.smtp.tls import ensure_self_signed
from tests.support.peers import RelayConfig, Sink, running, wait_for
from tests.support.smtp_client import message, submission

pytestmark = pytest.mark.e2e


@pytest.fixture
def tls_sink(tmp_path: Path) -> Iterator[Sink]:
    """A sink that offers STARTTLS with a self-signed certificate (as many MX hosts do)."""
    cert, key = ensure_self_signed(tmp_path / "sink-tls", "mx.inbox.example")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = Sink(tls=context)
    try:
        yield server
    finally:
        server.stop()


def _relay_config(
    database: str, tmp_path: Path, port: int, delivery: dict[str, Any] | None = None
) -> RelayConfig:
    """A relay routing inbox.example to `port`, with `delivery`'s keys in `[delivery]`."""
    return RelayConfig(
        dsn=database,
        data_dir=tmp_path / "data",
        routes={"inbox.example": port},
        overrides={"delivery": delivery or {}},
    )


def _send(port: int) -> None:
    with submission(port) as client:
        client.send_message(message())


def test_opportunistic_tls_is_used_when_offered(
    database: str, tmp_path: Path, tls_sink: Sink
) -> None:
    """Default policy: STARTTLS whenever offered, certificate not verified (RFC 7435)."""
    with running(_relay_config(database, tmp_path, tls_sink.port), tmp_path) as relay:
        _send(relay.config.submission_port)
        tls_sink.wait_count(1)
    assert tls_sink.handler.tls == [True]


def test_opportunistic_tls_falls_back_to_plaintext(
    database: str, tmp_path: Path, sink: Sink
) -> None:
    """A server without STARTTLS still gets the mail under the opportunistic policy."""
    with running(_relay_config(database, tmp_path, sink.port), tmp_path) as relay:
        _send(relay.config.submission_port)
        sink.wait_count(1)
    assert sink.handler.tls == [False]


def test_required_tls_defers_when_not_offered(database: str, tmp_path: Path, sink: Sink) -> None:
    """`tls = "required"`: no STARTTLS, no delivery; the attempt is deferred, not bounced."""
    config = _relay_config(database, tmp_path, sink.port, {"tls": "required"})
    with running(config, tmp_path) as relay:
        _send(relay.config.submission_port)

        async def replies() -> list[str]:
            conn = await asyncpg.connect(database)
            try:
                return [r["reply"] for r in await conn.fetch("SELECT reply FROM attempts")]
            finally:
                await conn.close()

        wait_for(lambda: bool(asyncio.run(replies())), 15, "an attempt")
        assert all("4.7.10" in r for r in asyncio.run(replies()))
    assert sink.messages == []
