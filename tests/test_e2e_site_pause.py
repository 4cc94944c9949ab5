"""End to end: a destination site paused after failed connections holds its deliveries
without trying them, without an attempt recorded or counted, and lets them fall due spread
out after the pause, not all at one instant."""

import time
from pathlib import Path

import pytest

from tests.support.peers import RelayConfig, Sink, db_rows, free_port, running, wait_for
from tests.support.smtp_client import message, submission

pytestmark = pytest.mark.e2e


def test_a_paused_site_is_not_tried_and_falls_due_spread_out(
    database: str, tmp_path: Path, sink: Sink
) -> None:
    config = RelayConfig(
        dsn=database,
        data_dir=tmp_path / "data",
        routes={"inbox.example": free_port()},  # nothing listens there: connections fail
        overrides={"delivery": {"site_pause_after": 1, "site_pause": "60s"}},
    )
    with running(config, tmp_path):
        with submission(config.submission_port) as client:
            for n in range(6):
                raw = message(to=f"r{n}@inbox.example", subject=f"m{n}")
                client.send_message(raw, mail_options=())

        def postponed() -> list[dict[str, object]]:
            rows = db_rows(
                database,
                "SELECT d.attempts, d.last_reply, d.next_attempt_at, s.paused_until"
                " FROM deliveries AS d JOIN sites AS s ON s.site = d.site"
                " WHERE d.lease_token IS NULL AND s.paused_until IS NOT NULL",
            )
            return [dict(r) for r in rows if "4.4.5" in (r["last_reply"] or "")]

        # the first connection fails and pauses the site; the deliveries then come due
        # again (retry_initial 1 s) and are postponed, not tried
        wait_for(lambda: len(postponed()) == 6, 30, "every delivery postponed")
        attempts_then = _attempts(database)
        time.sleep(2)
        assert _attempts(database) == attempts_then
        rows = postponed()
    assert rows, "no delivery was postponed"
    for row in rows:
        assert row["attempts"] <= 1  # only a real connection counts
        assert row["paused_until"] <= row["next_attempt_at"]
        assert (row["next_attempt_at"] - row["paused_until"]).total_seconds() <= 30
    if len(rows) > 1:
        assert len({row["next_attempt_at"] for row in rows}) > 1  # spread, not one instant
    assert _attempts(database) == _attempted(database)
    assert not sink.messages


def _attempts(database: str) -> int:
    return int(db_rows(database, "SELECT count(*) AS n FROM attempts")[0]["n"])


def _attempted(database: str) -> int:
    return int(db_rows(database, "SELECT count(*) AS n FROM deliveries WHERE attempts > 0")[0]["n"])
