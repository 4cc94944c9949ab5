"""Operations: the dashboard and the alerts ask only for metrics the relay exports,
`relay status` shows an admin the queue, the holds and the health of what runs, and the
systemd unit sandboxes the relay as deploy/DEPLOYMENT.md says.

The relay is the real one (`python -m relay serve`) against a real PostgreSQL, its
destination a real SMTP sink on loopback that can be told to answer 451.
"""

import json
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w
from prometheus_client.parser import text_string_to_metric_families

from tests.support.messages import newsletter
from tests.support.ops import ALERTS, DASHBOARD, alert_expressions, dashboard_queries
from tests.support.peers import (
    ROOT,
    Amend,
    Append,
    RelayConfig,
    RelayProcess,
    Sink,
    cli,
    db_rows,
    free_port,
    merged,
    wait_for,
)
from tests.support.smtp_client import message, submission

pytestmark = pytest.mark.e2e

UNIT = ROOT / "deploy" / "systemd" / "relay.service"
TLS_EXPIRY = "relay_tls_certificate_expiry_timestamp_seconds"
"""Written against in the alerts and the dashboard before the relay exports it."""
_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")
_METRIC = re.compile(r"\brelay_[a-z0-9_]+\b")


# -- the names the deploy files use --------------------------------------------------------


def used_metrics() -> dict[str, set[str]]:
    """Metric name -> the deploy files asking for it."""
    used: dict[str, set[str]] = {}
    sources = {
        ALERTS.name: alert_expressions(ALERTS.read_text()),
        DASHBOARD.name: dashboard_queries(json.loads(DASHBOARD.read_text())),
    }
    for source, queries in sources.items():
        for query in queries:
            for name in _METRIC.findall(query):
                used.setdefault(name, set()).add(source)
    return used


def declared_in_relay(name: str) -> bool:
    return any(f'"{name}"' in p.read_text() for p in (ROOT / "relay").rglob("*.py"))


def test_the_deploy_files_are_read_whole() -> None:
    """The extraction itself: every alert has an expression and every panel a query, so
    the next test cannot pass by reading nothing."""
    expressions = alert_expressions(ALERTS.read_text())
    assert len(expressions) == ALERTS.read_text().count("- alert:")
    assert all(_METRIC.search(e) or "up{" in e for e in expressions), expressions
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    used = used_metrics()
    for needed in ("relay_queue_deliveries", "relay_accept_seconds_bucket",
                   "relay_delivery_seconds_bucket", "relay_policy_verdicts_total",
                   "relay_tenant_suspended", "relay_campaigns", "relay_site_paused"):  # fmt: skip
        assert DASHBOARD.name in used[needed], needed
    assert TLS_EXPIRY in used


def _exposed(text: str) -> set[str]:
    families = list(text_string_to_metric_families(text))
    return {f.name for f in families} | {s.name for f in families for s in f.samples}


def _family(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_every_metric_the_dashboard_and_alerts_use_is_exported(
    relay: RelayProcess, sink: Sink
) -> None:
    """Each name in the dashboard's queries and the alert rules is in the relay's real
    /metrics, once a message went through it (so its labelled series exist).
    relay_tls_certificate_expiry_timestamp_seconds may be missing only while the relay
    does not declare it: from the day it does, it is checked like the rest."""
    with submission(relay.config.submission_port) as client:
        client.send_message(message())
    sink.wait_count(1)
    wait_for(
        lambda: 'relay_deliveries_total{outcome="delivered",tenant="acme"}' in _metrics(relay),
        10,
        "the delivered counter",
    )
    exposed = _exposed(_metrics(relay))
    missing = {
        name: sorted(sources)
        for name, sources in used_metrics().items()
        if name not in exposed and _family(name) not in exposed
    }
    if not declared_in_relay(TLS_EXPIRY):
        missing.pop(TLS_EXPIRY, None)
    assert missing == {}, f"not exported by the relay: {missing}"


def _metrics(relay: RelayProcess) -> str:
    with urllib.request.urlopen(relay.url("/metrics"), timeout=5) as response:
        return str(response.read().decode())


# -- relay status --------------------------------------------------------------------------

SPRING = "<spring.acme.example>"


@pytest.fixture
def held_relay(relay_config: RelayConfig, sink: Sink, tmp_path: Path) -> Iterator[RelayProcess]:
    """A relay whose mail stays queued: the sink answers 451 to DATA and a retry waits an
    hour; inbox.example is a site with a ceiling (so 4.7.0 deferrals throttle it), and
    canaries collect a campaign for an hour before deciding."""
    relay_config.overrides = {
        "delivery": {"retry_initial": "1h", "retry_max": "2h"},
        "tenants": Amend(acme={"require_consent": False}),
        "sites": [{"name": "inbox.example", "messages_per_minute": 600}],
        "canary": {
            "enabled": True,
            "min_size": 100,
            "settle": "1h",
            "max_collect": "2h",
            "check_every": "0.25s",
        },
    }
    sink.handler.script = ["451 4.7.0 later"] * 50
    relay = RelayProcess(relay_config, tmp_path)
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


def _status(relay: RelayProcess, *args: str, config: Path | None = None) -> tuple[int, str]:
    """`relay status ARGS`, with another configuration file than the relay's if given (its
    exit code says something, so not `cli`)."""
    result = subprocess.run(
        [sys.executable, "-m", "relay", "status", "--config", str(config or relay.path), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=90, check=False,
    )  # fmt: skip
    assert result.stderr == "", result.stderr
    return result.returncode, result.stdout


def test_status_shows_the_queue_holds_and_health(held_relay: RelayProcess, sink: Sink) -> None:
    """Four transactional deliveries deferred by the destination, two of a campaign held by
    its canary, acme suspended by an admin: `relay status` shows each, where it is going,
    the oldest message, the hour's rates, and that the database and listeners answer."""
    relay, dsn = held_relay, held_relay.config.dsn
    with submission(relay.config.submission_port) as client:
        client.send_message(message(to="alice@inbox.example"))
        client.send_message(message(to="bob@inbox.example, carol@acme.example"))
        client.send_message(message(to="dave@inbox.example"))
        raw = f"List-Id: {SPRING}\r\n".encode() + newsletter()
        client.sendmail("news@acme.example", ["r1@inbox.example", "r2@inbox.example"], raw)
    wait_for(
        lambda: db_rows(dsn, "SELECT coalesce(sum(deferred), 0) AS n FROM rates")[0]["n"] == 4,
        30,
        "four deferrals counted",
    )
    cli(relay, "tenant", "suspend", "acme", "--reason", "complaints about the spring sale",
        "--by", "ops")  # fmt: skip

    code, text = _status(relay, "--json")
    assert code == 0, text
    status = json.loads(text)
    assert status["healthy"] is True
    snap = status["snapshot"]
    assert snap["queue"] == {
        "due": {"deliveries": 0, "messages": 0},
        "scheduled": {"deliveries": 4, "messages": 3},
        "in-flight": {"deliveries": 0, "messages": 0},
        "held": {"deliveries": 2, "messages": 1},
    }
    destinations = {d["domain"]: d for d in snap["destinations"]}
    assert set(destinations) == {"inbox.example", "acme.example"}
    inbox = destinations["inbox.example"]
    assert (inbox["site"], inbox["scheduled"], inbox["held"]) == ("inbox.example", 3, 2)
    assert inbox["last_reply"].startswith("451 4.7.0 later")
    assert destinations["acme.example"]["scheduled"] == 1
    assert [(h["tenant"], h["hold"], h["deliveries"]) for h in snap["held"]] == [
        ("acme", f"canary-pending:{SPRING}", 2)
    ]
    oldest = snap["oldest"]
    assert oldest["recipient"] == "alice@inbox.example" and oldest["attempts"] == 1
    assert 0 < oldest["age_seconds"] < 120
    (rates,) = snap["rates"]
    assert (rates["tenant"], rates["deferred"], rates["delivered"]) == ("acme", 4, 0)
    (suspension,) = snap["suspensions"]
    assert (suspension["tenant"], suspension["rule"], suspension["suspended_by"]) == (
        "acme", "manual", "ops"
    )  # fmt: skip
    assert suspension["reason"] == "complaints about the spring sale"
    (campaign,) = snap["campaigns"]
    assert (campaign["tenant"], campaign["campaign"], campaign["state"]) == (
        "acme", SPRING, "collecting"
    )  # fmt: skip
    (site,) = snap["sites"]
    assert site["site"] == "inbox.example" and site["throttled"] and not site["paused"]
    assert site["rate"] < site["ceiling"] == 600
    database = status["database"]
    assert database["answered"] and database["version"] and database["latency_ms"] > 0
    listeners = {x["name"]: x for x in status["listeners"]}
    assert set(listeners) == {"submission", "submissions", "http"}
    for name in ("submission", "submissions"):
        assert listeners[name]["ok"] and listeners[name]["reply"].startswith("220 relay.test")
    assert listeners["http"]["ok"] and listeners["http"]["reply"] == "200 OK"

    code, text = _status(relay)
    assert code == 0, text
    lines = text.splitlines()

    def line(pattern: str) -> str:
        found = [x for x in lines if re.search(pattern, x)]
        assert found, f"no line matches {pattern!r} in:\n{text}"
        return found[0]

    line(r"^  database\s+ok\s+PostgreSQL \d+")
    line(r"^  submission\s+ok\s+127\.0\.0\.1:\d+ starttls: 220 relay\.test")
    line(r"^  submissions\s+ok\s+127\.0\.0\.1:\d+ implicit: 220 relay\.test")
    line(r"^  http\s+ok\s+127\.0\.0\.1:\d+ http: 200 OK")
    line(r"^  scheduled\s+4\s+3$")
    line(r"^  held\s+2\s+1$")
    line(r"^  due\s+0\s+0$")
    line(r"oldest queued message: \d+s old, .* of acme to alice@inbox\.example, 1 attempt, "
         r"last reply: 451 4\.7\.0 later")  # fmt: skip
    line(r"^  inbox\.example\s+inbox\.example\s+0\s+3\s+0\s+2\s+\d+s\s+451 4\.7\.0 later")
    line(r"^  acme\.example\s+acme\.example\s+0\s+1\s+0\s+0\s+")
    line(rf"^  acme\s+canary-pending:{re.escape(SPRING)}\s+2\s+\d+s$")
    line(r"^  acme\s+0\s+4\s+0\s+0\s+0\s+0\s+-$")
    line(r"^  acme\s+manual\s+.* UTC \(\d+s\)\s+ops\s+complaints about the spring sale$")
    line(rf"^  acme\s+{re.escape(SPRING)}\s+collecting\s+")
    line(r"^  inbox\.example\s+[\d.]+\s+600\s+-\s+0$")


def test_status_names_what_does_not_answer(held_relay: RelayProcess, tmp_path: Path) -> None:
    """A listener in the configuration that nothing serves is named, a database that does
    not answer too, and the exit code is 1; what can still be shown is."""
    spare = free_port()
    document = merged(
        held_relay.config.document(),
        {"listeners": Append({"name": "spare", "address": f"127.0.0.1:{spare}"})},
    )
    config = tmp_path / "status.toml"
    config.write_text(tomli_w.dumps(document))
    code, output = _status(held_relay, "--json", "--timeout", "2", config=config)
    assert code == 1
    status = json.loads(output)
    listeners = {x["name"]: x for x in status["listeners"]}
    assert not listeners["spare"]["ok"] and listeners["spare"]["error"]
    assert listeners["submission"]["ok"] and status["database"]["answered"]
    assert status["healthy"] is False and status["snapshot"] is not None
    code, output = _status(held_relay, "--timeout", "2", config=config)
    assert code == 1
    assert re.search(
        rf"^  spare\s+FAIL\s+127\.0\.0\.1:{spare} starttls: not answering: ", output, re.M
    ), output

    nowhere = f"postgresql://relay@127.0.0.1:{free_port()}/relay"
    config.write_text(tomli_w.dumps(merged(document, {"queue": {"dsn": nowhere}})))
    code, output = _status(held_relay, "--json", "--timeout", "2", config=config)
    assert code == 1
    status = json.loads(output)
    assert not status["database"]["answered"] and status["database"]["error"]
    assert status["snapshot"] is None
    assert {x["name"]: x["ok"] for x in status["listeners"]}["submissions"]
    code, output = _status(held_relay, "--timeout", "2", config=config)
    assert code == 1
    assert re.search(r"^  database\s+FAIL\s+not answering: ", output, re.M), output
    assert "the queue and the traffic state need the database" in output


# -- the systemd unit ----------------------------------------------------------------------


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_systemd_unit_sandboxes_the_relay() -> None:
    """A dedicated user, nothing writable but the data directory, only the capability to
    bind ports below 1024, SIGHUP to reload, and time for the 10 + 10 s drain on SIGTERM."""
    unit = _directives(UNIT.read_text())
    expected = {
        "User": ["relay"],
        "NoNewPrivileges": ["yes"],
        "ProtectSystem": ["strict"],
        "ReadWritePaths": ["/var/lib/relay"],
        "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"],
        "CapabilityBoundingSet": ["CAP_NET_BIND_SERVICE"],
        "AmbientCapabilities": ["CAP_NET_BIND_SERVICE"],
        "KillSignal": ["SIGTERM"],
        "Restart": ["on-failure"],
    }
    for key, values in expected.items():
        assert unit.get(key) == values, key
    assert unit["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert unit["TimeoutStopSec"] == ["45s"]  # sessions 10 s, deliveries 10 s, then closing
    assert unit["ExecStart"] == ["/opt/relay/bin/relay serve --config /etc/relay/relay.toml"]


@pytest.mark.interop
@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not found: `apt-get install systemd`",
)
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` on the unit, with the relay of this checkout standing in for
    /opt/relay/bin/relay (verify insists that the command exists)."""
    here = Path(sys.executable).parent / "relay"
    unit = tmp_path / "relay.service"
    unit.write_text(UNIT.read_text().replace("/opt/relay/bin/relay", str(here)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr
