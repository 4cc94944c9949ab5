"""End to end: retries, bounces, MX delivery, the queue commands, reload and metrics."""

import email
import email.policy
import urllib.request
from pathlib import Path

import pytest

from tests.support.dns_server import DnsServer
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


def _send(relay: RelayProcess, to: str = "alice@inbox.example", **kw: str) -> str:
    msg = message(to=to, **kw)
    with submission(relay.config.submission_port) as client:
        client.send_message(msg)
    return str(msg["Message-ID"])


def test_temporary_failure_is_retried(relay: RelayProcess, sink: Sink) -> None:
    """RFC 5321 4.2.1: a 4yz reply is retried later; each attempt is recorded."""
    sink.handler.script = ["451 4.3.0 Try again later"]
    _send(relay)
    assert len(sink.wait_count(1, timeout=30)) == 1
    wait_for(lambda: len(db_rows(relay.config.dsn, "SELECT 1 FROM attempts")) == 2, 10, "2 rows")
    rows = db_rows(relay.config.dsn, "SELECT outcome, reply, host FROM attempts ORDER BY id")
    assert [r["outcome"] for r in rows] == ["deferred", "delivered"]
    assert rows[0]["reply"].startswith("451 4.3.0") and rows[0]["host"] == "127.0.0.1"


def test_permanent_failure_bounces_with_a_dsn(relay: RelayProcess, sink: Sink) -> None:
    """RFC 5321 4.2.1 and RFC 3464: a 5yz reply ends delivery and the sender gets a DSN."""
    sink.handler.script = ["550 5.1.1 <alice@inbox.example>: no such user"]
    message_id = _send(relay)
    ((mail_from, rcpts, content),) = sink.wait_count(1, timeout=30)
    assert mail_from == "" and rcpts == ["app@acme.example"]
    dsn = email.message_from_bytes(content, policy=email.policy.default)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    human, status, headers = dsn.iter_parts()
    assert "could not be delivered" in human.get_content()
    status_text = status.as_string()
    assert "Final-Recipient: rfc822; alice@inbox.example" in status_text
    assert "Action: failed" in status_text and "Status: 5.1.1" in status_text
    assert "no such user" in status_text
    assert message_id in headers.as_string()

    def states() -> list[str]:
        rows = db_rows(relay.config.dsn, "SELECT state FROM deliveries ORDER BY id")
        return [r["state"] for r in rows]

    # the sink holds the DSN before the relay has read the 250 and recorded it
    wait_for(lambda: states() == ["bounced", "delivered"], 10, "the DSN recorded as delivered")


def test_mx_lookup_delivery_and_null_mx(
    relay_config: RelayConfig, sink: Sink, tmp_path: Path
) -> None:
    """RFC 5321 5.1: deliver to the MX host; RFC 7505: a null MX bounces with 5.1.10."""
    dns = DnsServer(
        {
            "mx-test.example": [("MX", 300, "10 mx1.mx-test.example.")],
            "mx1.mx-test.example": [("A", 300, "127.0.0.1")],
            "nullmx.example": [("MX", 300, "0 .")],
        }
    )
    try:
        relay_config.overrides = {
            "delivery": {
                "nameservers": [f"127.0.0.1:{dns.port}"],
                "port": sink.port,
                "private_mx": True,
            }
        }
        with running(relay_config, tmp_path) as relay:
            _send(relay, to="bob@mx-test.example")
            ((_, rcpts, _),) = sink.wait_count(1)
            assert rcpts == ["bob@mx-test.example"]
            _send(relay, to="carol@nullmx.example")
            messages = sink.wait_count(2)
            assert messages[1][1] == ["app@acme.example"]
            assert b"Status: 5.1.10" in messages[1][2]
    finally:
        dns.stop()


def test_an_mx_at_a_private_address_bounces(
    relay_config: RelayConfig, sink: Sink, tmp_path: Path
) -> None:
    """A destination whose MX host resolves to loopback is not connected to (the relay is no
    probe of its own network): the message bounces, saying why."""
    dns = DnsServer(
        {
            "inside.example": [("MX", 300, "10 mx.inside.example.")],
            "mx.inside.example": [("A", 300, "127.0.0.1")],
        }
    )
    try:
        relay_config.overrides = {
            "delivery": {"nameservers": [f"127.0.0.1:{dns.port}"], "port": sink.port}
        }
        with running(relay_config, tmp_path) as relay:
            _send(relay, to="eve@inside.example")
            ((_, rcpts, dsn),) = sink.wait_count(1)
            assert rcpts == ["app@acme.example"]  # the bounce, not the message
            assert b"resolve only to non-public addresses (127.0.0.1)" in dsn
    finally:
        dns.stop()


def test_queue_commands(relay: RelayProcess, sink: Sink) -> None:
    """`relay queue ls|show|retry|delete` show and act on what is in the queue."""
    sink.handler.script = ["451 4.7.0 greylisted"] * 50
    _send(relay, subject="stuck")
    wait_for(lambda: bool(db_rows(relay.config.dsn, "SELECT 1 FROM attempts")), 15, "first attempt")
    listing = cli(relay, "queue", "ls", "--state", "queued")
    assert "alice@inbox.example" in listing and "acme" in listing
    message_id = str(db_rows(relay.config.dsn, "SELECT id FROM messages")[0]["id"])
    shown = cli(relay, "queue", "show", message_id[:8])
    assert "451 4.7.0 greylisted" in shown and "Subject: stuck" in shown
    audit = db_rows(
        relay.config.dsn,
        "SELECT v ->> 'rule' AS rule, v ->> 'outcome' AS outcome"
        " FROM messages, jsonb_array_elements(policy) WITH ORDINALITY AS x (v, n) ORDER BY n",
    )
    assert [r["rule"] for r in audit] == [
        "P-SUSPEND", "P-HDR-ALIGN", "P-SUPPRESS", "P-CONSENT-RECORD", "P-AUTH", "P-SUSPEND",
        "P-COMPLAINT", "P-BOUNCE", "P-SIZE", "P-SIZE",
        "P-HDR-SANE", "P-HDR-FROM", "P-DNSAUTH", "P-DKIM", "P-WHOIS", "P-HDR-ALIGN",
        "P-SUBJECT",
        "P-UNSUB", "P-IDENTITY", "P-CONSENT-NOTE", "P-NO-SERVICE-CONTACT", "P-CONTENT",
        "P-CONSENT-RECORD",
    ]  # fmt: skip
    assert {r["outcome"] for r in audit} <= {"pass", "skip"}
    assert "policy P-HDR-FROM     pass     From domain acme.example belongs to acme" in shown
    assert "rescheduled 1" in cli(relay, "queue", "retry", message_id)
    assert "deleted 1" in cli(relay, "queue", "delete", message_id)
    states = db_rows(relay.config.dsn, "SELECT state FROM deliveries")
    assert [r["state"] for r in states] == ["deleted"]
    sink.handler.script = []
    assert "alice@inbox.example" not in cli(relay, "queue", "ls", "--state", "queued")


def test_sighup_reloads_tenants_without_dropping_sessions(relay: RelayProcess, sink: Sink) -> None:
    """A reload adds a tenant at once; an open session keeps working; a broken file is
    refused and the running configuration stays."""
    open_session = submission(relay.config.submission_port)
    try:
        relay.config.overrides = {
            "tenants": Append(
                {"name": "beta", "domains": ["beta.example"], "networks": ["127.0.0.4/32"]}
            )
        }
        relay.write_config()
        relay.signal(1)  # SIGHUP
        wait_for(lambda: "configuration reloaded" in relay.log(), 10, "reload")
        with submission(relay.config.submission_port, login=False, source="127.0.0.4") as c:
            c.sendmail(
                "x@beta.example",
                ["alice@inbox.example"],
                message(sender="x@beta.example").as_bytes(policy=email.policy.SMTP),
            )
        relay.config.overrides["smtp"] = {"bogus_key": 1}  # unknown: the reload must fail
        relay.write_config()
        relay.signal(1)
        wait_for(lambda: "reload refused" in relay.log(), 10, "refused reload")
        assert "smtp.bogus_key" in relay.log()
        open_session.send_message(message())
    finally:
        open_session.quit()
    assert len(sink.wait_count(2)) == 2


def test_serve_reads_old_key_names_and_logs_them(
    relay_config: RelayConfig, sink: Sink, tmp_path: Path
) -> None:
    """A relay.toml of the previous release still runs: `relay serve` logs each old key
    name with its new one at start and on reload, and the value under the old name holds."""
    relay_config.overrides = {
        "delivery": {"messages_per_minute": 6000},
        "tenants": Amend(printer={"limits": {"messages_per_minute": 1}}),
    }
    renamed = (
        "delivery.messages_per_minute is now delivery.default_site_messages_per_minute",
        "tenants[1].limits.messages_per_minute is now tenants[1].limits.submissions_per_minute",
    )
    with running(relay_config, tmp_path) as relay:
        assert all(
            f"WARNING relay.config.load: {relay.path}:" in line for line in _lines(relay, renamed)
        )
        with submission(relay.config.submission_port, login=False, source="127.0.0.2") as c:
            assert c.mail("x@printer.example")[0] == 250
            c.rset()
            assert c.mail("x@printer.example")[0] == 450  # one a minute, as the old key says
        relay.signal(1)  # SIGHUP
        wait_for(lambda: "configuration reloaded" in relay.log(), 10, "reload")
        assert all(relay.log().count(text) == 2 for text in renamed), relay.log()


def _lines(relay: RelayProcess, texts: tuple[str, ...]) -> list[str]:
    """The log lines that hold each of `texts`, one line for each."""
    lines = [line for line in relay.log().splitlines() if any(t in line for t in texts)]
    assert len(lines) == len(texts), relay.log()
    return lines


def test_metrics_and_health(relay: RelayProcess, sink: Sink) -> None:
    """/metrics counts received and delivered messages per tenant; /healthz says ok."""
    _send(relay)
    sink.wait_count(1)
    wait_for(
        lambda: (
            'relay_deliveries_total{outcome="delivered",tenant="acme"} 1.0'
            in urllib.request.urlopen(relay.url("/metrics"), timeout=5).read().decode()
        ),
        10,
        "delivered metric",
    )
    text = urllib.request.urlopen(relay.url("/metrics"), timeout=5).read().decode()
    assert 'relay_messages_received_total{tenant="acme"} 1.0' in text
    assert 'relay_queue_deliveries{state="due"} 0.0' in text
    assert "relay_accept_seconds_count 1.0" in text
    for stage in ("policy", "signing", "storage"):
        assert f'relay_accept_stage_seconds_count{{stage="{stage}"}} 1.0' in text
    assert "relay_group_commit_messages_count 1.0" in text
    assert "relay_group_commit_messages_sum 1.0" in text
    with urllib.request.urlopen(relay.url("/healthz"), timeout=5) as response:
        assert response.status == 200


def test_queue_lifetime_expiry_bounces_with_4_4_7(
    relay_config: RelayConfig, sink: Sink, tmp_path: Path
) -> None:
    """Postfix's maximal_queue_lifetime: mail still deferred when its lifetime runs out
    bounces, and the DSN says 4.4.7 (RFC 3463: delivery time expired) with the last reply."""
    relay_config.overrides = {"delivery": {"queue_lifetime": "2s"}}
    relay_config.routes = {"acme.example": sink.port, "slow.example": free_port()}
    with running(relay_config, tmp_path) as relay:
        _send(relay, to="bob@slow.example")  # nothing listens there: connection refused
        ((mail_from, rcpts, content),) = sink.wait_count(1, timeout=30)
    assert (mail_from, rcpts) == ("", ["app@acme.example"])
    assert b"Status: 4.4.7" in content and b"queue lifetime expired" in content
    assert b"last reply: 451 4.4.1 No host of 127.0.0.1 reachable" in b" ".join(content.split())
