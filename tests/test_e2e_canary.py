"""End to end, P-CANARY: a bulk campaign of 300 recipients goes out as a canary of 30; once
its window ends with nothing bad measured, the other 270 follow.

The relay runs with `[canary] min_size = 100` and a window of seconds instead of hours;
the sink plays every recipient's mailbox provider.
"""

import urllib.request
from pathlib import Path

import pytest

from tests.support.messages import newsletter
from tests.support.peers import (
    Amend,
    RelayConfig,
    RelayProcess,
    Sink,
    cli,
    db_rows,
    running,
    wait_for,
)
from tests.support.smtp_client import submission

pytestmark = pytest.mark.e2e

SPRING = "<spring.acme.example>"
CANARY = {
    "enabled": True,
    "min_size": 100,
    "settle": "2s",
    "window": "6s",
    "check_every": "0.25s",
}


def _recipients(sink: Sink) -> int:
    return sum(len(rcpts) for _, rcpts, _ in sink.messages)


def _metrics(relay: RelayProcess) -> str:
    with urllib.request.urlopen(relay.url("/metrics"), timeout=5) as response:
        return str(response.read().decode())


def test_a_campaign_goes_out_as_a_canary_then_whole(
    relay_config: RelayConfig, sink: Sink, tmp_path: Path
) -> None:
    relay_config.overrides = {
        "tenants": Amend(
            acme={"require_consent": False, "limits": {"recipients_per_message": 100}}
        ),
        "canary": CANARY,
    }
    with running(relay_config, tmp_path) as relay:
        with submission(relay_config.submission_port) as client:
            for batch in range(3):
                raw = newsletter().replace(
                    b"<n1@acme.example>", f"<s{batch}@acme.example>".encode()
                )
                rcpts = [f"r{batch * 100 + n}@inbox.example" for n in range(100)]
                client.sendmail("news@acme.example", rcpts, f"List-Id: {SPRING}\r\n".encode() + raw)

        # the canary: the first 10% of the 300 recipients, the rest held for the window
        wait_for(lambda: _recipients(sink) >= 30, 20, "the canary at the sink")
        holds = db_rows(relay_config.dsn, "SELECT hold, count(*) AS n FROM deliveries GROUP BY 1")
        assert {r["hold"]: r["n"] for r in holds} == {None: 30, f"canary:{SPRING}": 270}
        assert _recipients(sink) == 30  # nothing more before the window ends
        wait_for(
            lambda: 'relay_campaign_held_deliveries{tenant="acme"} 270.0' in _metrics(relay),
            5,
            "the held gauge",
        )
        assert 'relay_campaigns{state="canary"} 1.0' in _metrics(relay)

        # the window ends clean: everyone gets the newsletter, once
        wait_for(lambda: _recipients(sink) >= 300, 30, "the whole campaign at the sink")
        delivered = [r for _, rcpts, _ in sink.messages for r in rcpts]
        assert sorted(delivered) == sorted(f"r{n}@inbox.example" for n in range(300))
        listing = cli(relay, "campaign", "ls", "--tenant", "acme")
        assert "released" in listing and SPRING in listing
        wait_for(
            lambda: (
                db_rows(relay_config.dsn, "SELECT sum(delivered) AS n FROM rates")[0]["n"] == 300
            ),
            10,
            "300 deliveries counted",
        )
        shown = cli(relay, "campaign", "show", "acme", SPRING)
        for line in (
            "state         released",
            "recipients    300",
            "canary        30",
            "delivered     300",
        ):
            assert line in shown, shown
        assert "complained    0" in shown and "by canary" in shown
        kinds = db_rows(relay_config.dsn, "SELECT kind FROM events WHERE kind LIKE 'canary-%'")
        assert [r["kind"] for r in kinds] == ["canary-held", "canary-released"]
