"""End to end: deliveries shaped per destination site, with sinks that play providers.

- a site that answers 421 gets a lower rate, which recovers as it accepts mail again;
- a slow site does not delay delivery to a fast one;
- tenant B's mail flows while tenant A has a 20,000-message backlog to the same site;
- two relay processes on one database deliver a backlog once each, within the site's rate.
"""

import time
from collections.abc import Iterator
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest

from tests.support.peers import RelayConfig, RelayProcess, Sink, db_rows, free_port, wait_for
from tests.support.smtp_client import message, submission

pytestmark = pytest.mark.e2e


def _start(config: RelayConfig, directory: Path, site: dict[str, Any]) -> RelayProcess:
    """A relay of `config` with `site` as its one `[[sites]]` table, its files in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    config.overrides["sites"] = [site]
    return RelayProcess(config, directory).start()


@pytest.fixture
def other_sink() -> Iterator[Sink]:
    sink = Sink()
    try:
        yield sink
    finally:
        sink.stop()


def _site_rate(relay: RelayProcess, site: str) -> float:
    rows = db_rows(relay.config.dsn, "SELECT rate FROM sites WHERE site = $1", site)
    return float(rows[0]["rate"]) if rows else -1.0


def _send(relay: RelayProcess, recipients: list[str], count: int) -> None:
    with submission(relay.config.submission_port) as client:
        for n in range(count):
            for rcpt in recipients:
                client.sendmail(
                    "app@acme.example",
                    [rcpt],
                    message(to=rcpt, subject=f"m{n}").as_bytes(policy=SMTP),
                )


def test_rate_drops_on_421_and_recovers(
    relay_config: RelayConfig, sink: Sink, tmp_path: Path
) -> None:
    """AIMD: two "421 4.7.0" answers halve the site's rate twice; delivered mail adds 2% of
    the ceiling per message back, up to the ceiling."""
    sink.handler.script = ["421 4.7.0 Try again later, closing connection"] * 2
    relay = _start(relay_config, tmp_path, {"name": "inbox.example", "messages_per_minute": 6000})
    try:
        # one at a time: two messages leased together share a connection, which the first
        # 421 closes, so the second would be deferred as a lost connection instead
        _send(relay, ["alice@inbox.example"], 1)
        wait_for(lambda: 0 < _site_rate(relay, "inbox.example") <= 3000, 20, "a rate cut")
        _send(relay, ["alice@inbox.example"], 1)
        wait_for(lambda: 0 < _site_rate(relay, "inbox.example") <= 1500, 20, "the rate cut")
        lowest = _site_rate(relay, "inbox.example")
        _send(relay, ["alice@inbox.example"], 45)
        sink.wait_count(47, timeout=60)
        wait_for(lambda: _site_rate(relay, "inbox.example") == 6000, 20, "the rate recovered")
    finally:
        relay.stop()
    assert lowest == 1500


def test_a_slow_site_does_not_delay_a_fast_one(
    relay_config: RelayConfig, sink: Sink, other_sink: Sink, tmp_path: Path
) -> None:
    """With 5 deliveries in flight at most, 20 messages to a site that takes 2 s per
    message would fill them all; the slow site's bounded share leaves room for the fast."""
    sink.handler.delay = 2.0  # inbox.example: slow
    relay_config.routes["fast.example"] = other_sink.port
    relay_config.overrides = {"delivery": {"concurrency": 5}}
    relay = _start(
        relay_config, tmp_path,
        {"name": "inbox.example", "connections": 1, "messages_per_connection": 1},
    )  # fmt: skip
    try:
        _send(relay, ["alice@inbox.example"], 20)
        started = time.monotonic()
        _send(relay, ["bob@fast.example"], 5)
        other_sink.wait_count(5, timeout=20)
        fast = time.monotonic() - started
        slow_done = len(sink.messages)
    finally:
        relay.stop()
    assert fast < 6, fast
    assert slow_done < 10, slow_done


def test_one_tenants_backlog_does_not_starve_another(
    relay_config: RelayConfig, sink: Sink, tmp_path: Path
) -> None:
    """Tenant acme has 20,000 messages queued for inbox.example (a site limited to 600 a
    minute); tenant printer's message to the same site still goes out at once."""
    relay = _start(relay_config, tmp_path, {"name": "inbox.example", "messages_per_minute": 600})
    try:
        db_rows(
            relay_config.dsn,
            """
            WITH m AS (
                INSERT INTO messages (id, tenant, mail_from, content, size)
                SELECT gen_random_uuid(), 'acme', 'app@acme.example',
                       convert_to('Subject: backlog ' || n || E'\\r\\n\\r\\nx\\r\\n', 'UTF8'), 30
                FROM generate_series(1, 20000) AS n
                RETURNING id
            )
            INSERT INTO deliveries (message_id, recipient, domain, expires_at, tenant)
            SELECT id, 'backlog@inbox.example', 'inbox.example', now() + interval '1 day', 'acme'
            FROM m
            """,
        )
        sink.wait_count(5, timeout=30)  # the backlog is moving
        started = time.monotonic()
        with submission(relay.config.submission_port, login=False, source="127.0.0.2") as client:
            raw = message(sender="scanner@printer.example", subject="printer").as_bytes(policy=SMTP)
            client.sendmail("scanner@printer.example", ["alice@inbox.example"], raw)
        printer = "scanner@printer.example"
        wait_for(lambda: any(m[0] == printer for m in sink.messages), 30, "printer's message")
        waited = time.monotonic() - started
        queued = db_rows(
            relay_config.dsn,
            "SELECT count(*) AS n FROM deliveries WHERE tenant = 'acme' AND state = 'queued'",
        )[0]["n"]
    finally:
        relay.stop()
    assert waited < 10, waited
    assert queued > 19_000, queued


def test_two_processes_share_a_sites_rate_and_deliver_once(
    relay_config: RelayConfig, sink: Sink, tmp_path: Path
) -> None:
    """Two relay processes on one database: a backlog of 300 is delivered once each, and
    together they keep the site's 1,200 a minute (20 a second, plus a 2-second burst)."""
    sites = {"name": "inbox.example", "messages_per_minute": 1200}
    first = _start(relay_config, tmp_path / "one", sites)
    second_config = RelayConfig(
        dsn=relay_config.dsn, data_dir=tmp_path / "two" / "data", routes=relay_config.routes,
        submission_port=free_port(), smtps_port=free_port(), http_port=free_port(),
    )  # fmt: skip
    second = _start(second_config, tmp_path / "two", sites)
    try:
        _send(first, [f"r{n}@inbox.example" for n in range(300)], 1)
        sink.wait_count(300, timeout=90)
        time.sleep(2)  # anything delivered twice would arrive now
        owners = db_rows(relay_config.dsn, "SELECT DISTINCT host FROM attempts")
    finally:
        first.stop()
        second.stop()
    subjects = [rcpts[0] for _, rcpts, _ in sink.messages]
    assert len(subjects) == 300 == len(set(subjects))
    arrivals = sorted(sink.handler.arrivals)
    worst = max(
        sum(1 for t in arrivals if start <= t < start + 5) for start in arrivals
    )  # fmt: skip
    assert worst <= 20 * 5 + 40, worst
    assert owners
    logs = first.log() + second.log()
    assert "delivery id=" in first.log() and "delivery id=" in second.log(), logs[-2000:]
