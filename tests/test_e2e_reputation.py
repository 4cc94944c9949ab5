"""End to end: complaints suspend a tenant's bulk sending (P-COMPLAINT) until an admin
resumes it.

The sink plays a mailbox provider. Twenty transactional messages of acme are delivered;
a newsletter is deferred by the provider (451 at RCPT) and waits in the queue; then the
provider's feedback loop reports one complaint (ARF, RFC 5965): 1 in 20 is 5%, far above
the 0.3% limit. The relay suspends acme's bulk sending: the waiting newsletter is held,
the next newsletter is refused with `[P-COMPLAINT]` and the measured rate, transactional
mail keeps flowing, and `relay tenant resume acme` sends the held newsletter on.
"""

import email.policy
import smtplib
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.feedback import SECRET, arf_report, send_report
from tests.support.messages import newsletter
from tests.support.peers import (
    Amend,
    Append,
    RelayConfig,
    RelayProcess,
    Sink,
    cli,
    db_rows,
    free_port,
    running,
    wait_for,
)
from tests.support.smtp_client import message, submission

pytestmark = pytest.mark.e2e

FAN = "fan@inbox.example"
NEWSLETTER = b"List-Id: <news.acme.example>\r\n" + newsletter()


@pytest.fixture
def reputation_relay(
    relay_config: RelayConfig, sink: Sink, tmp_path: Path
) -> Iterator[tuple[RelayProcess, int]]:
    """acme sends through return paths the feedback loop can name, needs no consent records
    (the newsletter is the point here), and is judged from 20 deliveries, every 0.3 s."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    port = free_port()
    relay_config.overrides = {
        "policy": {"unsubscribe_secret_file": str(secret_file)},
        "tenants": Amend(
            acme={"return_path_domain": "bounce.acme.example", "require_consent": False}
        ),
        "listeners": Append(
            {"name": "feedback", "address": f"127.0.0.1:{port}", "role": "feedback"}
        ),
        "feedback": {
            "fbl_addresses": ["fbl@relay.test"],
            "process_every": 0.2,
            "providers": [{"name": "loopback", "networks": ["127.0.0.0/8"]}],
        },
        "reputation": {"min_volume": 20, "check_every": "0.3s"},
    }
    with running(relay_config, tmp_path) as relay:
        yield relay, port


def _metrics(relay: RelayProcess) -> str:
    return urllib.request.urlopen(relay.url("/metrics"), timeout=5).read().decode()


def _hold(relay: RelayProcess, recipient: str) -> str | None:
    (row,) = db_rows(relay.config.dsn, "SELECT hold FROM deliveries WHERE recipient = $1",
                     recipient)  # fmt: skip
    return row["hold"]


def _delivered_to(sink: Sink, recipient: str) -> bool:
    return any(rcpts == [recipient] for _, rcpts, _ in sink.messages)


def test_complaints_suspend_bulk_until_an_admin_resumes_it(
    reputation_relay: tuple[RelayProcess, int], sink: Sink
) -> None:
    relay, feedback_port = reputation_relay
    recipients = [f"r{n}@inbox.example" for n in range(20)]
    with submission(relay.config.submission_port) as client:
        for n in range(0, 20, 5):
            batch = recipients[n : n + 5]
            client.sendmail("app@acme.example", batch, message().as_bytes(policy=email.policy.SMTP))
    sink.wait_count(20)

    sink.handler.rcpt_replies[FAN] = "451 4.7.1 Too much mail from you, try again later"
    with submission(relay.config.submission_port) as client:
        client.sendmail("news@acme.example", [FAN], NEWSLETTER)
    deferred = "SELECT 1 FROM attempts WHERE outcome = 'deferred'"
    wait_for(lambda: bool(db_rows(relay.config.dsn, deferred)), 15, "the newsletter deferred")
    assert _hold(relay, FAN) is None

    return_path, complainant, original = next(
        (path, rcpts[0], content) for path, rcpts, content in sink.messages
        if rcpts == [recipients[0]]
    )  # fmt: skip
    code, _ = send_report(feedback_port, "fbl@inbox.example", "fbl@relay.test",
                           arf_report(return_path, complainant, original))  # fmt: skip
    assert code == 250
    wait_for(lambda: _hold(relay, FAN) == "P-COMPLAINT", 20, "the newsletter held")
    (suspension,) = db_rows(relay.config.dsn, "SELECT rule, reason FROM tenant_suspensions")
    reason = "complaint rate 5.00% over 7 days (limit 0.3%)"
    assert (suspension["rule"], suspension["reason"]) == ("P-COMPLAINT", reason)
    wait_for(
        lambda: 'relay_tenant_suspended{rule="P-COMPLAINT",tenant="acme"} 1.0' in _metrics(relay),
        10, "the suspension seen by the SMTP path",
    )  # fmt: skip
    assert 'relay_tenant_throttle_factor{site="inbox.example",tenant="acme"} 0.' in (
        _metrics(relay)
    )

    with submission(relay.config.submission_port) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("news@acme.example", ["new@inbox.example"], NEWSLETTER)
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.decode() == (
        f"5.7.1 [P-COMPLAINT] tenant acme's bulk sending is suspended: {reason}; "
        "an admin resumes it with relay tenant resume"
    )

    del sink.handler.rcpt_replies[FAN]  # the provider would take it now; the hold keeps it
    receipt = message(to="after@inbox.example").as_bytes(policy=email.policy.SMTP)
    with submission(relay.config.submission_port) as client:
        client.sendmail("app@acme.example", ["after@inbox.example"], receipt)
    wait_for(lambda: _delivered_to(sink, "after@inbox.example"), 15, "transactional mail")
    time.sleep(2.5)  # longer than the retry delay: a newsletter not held would go now
    assert not _delivered_to(sink, FAN) and _hold(relay, FAN) == "P-COMPLAINT"

    status = cli(relay, "tenant", "status", "acme")
    assert "acme: bulk sending SUSPENDED" in status and reason in status
    assert "held: 1 queued bulk deliveries (P-COMPLAINT)" in status
    assert "inbox.example: delivered 21, complained 1 (4.76%, above limit)" in status

    resumed = cli(relay, "tenant", "resume", "acme", "--by", "ops")
    assert "released 1 held deliveries of acme" in resumed
    wait_for(lambda: _delivered_to(sink, FAN), 15, "the held newsletter delivered")
    wait_for(
        lambda: 'relay_tenant_suspended{rule="P-COMPLAINT",tenant="acme"} 0.0' in _metrics(relay),
        10, "the resume seen by the SMTP path",
    )  # fmt: skip
    with submission(relay.config.submission_port) as client:
        client.sendmail("news@acme.example", ["again@inbox.example"], NEWSLETTER)
    wait_for(lambda: _delivered_to(sink, "again@inbox.example"), 15, "bulk mail flows again")
    assert (
        db_rows(relay.config.dsn, "SELECT resumed_by FROM tenant_suspensions")[0]["resumed_by"]
        == "ops"
    )
    kinds = {r["kind"] for r in db_rows(relay.config.dsn, "SELECT kind FROM events")}
    assert {"complained", "throttled", "suspended", "resumed"} <= kinds
    assert "Traceback" not in relay.log()
