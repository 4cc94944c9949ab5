"""Interop: Prometheus itself (Debian's prometheus package) reads what the relay exports and
what deploy/ ships.

`promtool` lints the relay's real /metrics output, checks the alerting rules and runs their
unit tests, and checks that every dashboard query parses; then a real Prometheus server on
loopback scrapes a running relay every second, evaluates the rules against what it scraped,
and answers the count of the messages sent through the relay over its HTTP API.
"""

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.ops import ALERTS, DASHBOARD, dashboard_queries
from tests.support.peers import ROOT, RelayProcess, Sink, free_port, wait_for
from tests.support.smtp_client import message, submission

INSTALL = "`apt-get install prometheus`"
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason=f"promtool not found: {INSTALL}"
)
needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason=f"prometheus not found: {INSTALL}"
)
pytestmark = [pytest.mark.interop, pytest.mark.e2e]


def _promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], input=stdin, capture_output=True, text=True, timeout=120,
        check=False, cwd=ROOT,
    )  # fmt: skip


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


@needs_promtool
def test_promtool_check_metrics_accepts_the_relays_exposition(
    relay: RelayProcess, sink: Sink
) -> None:
    """`promtool check metrics` (the exposition format and Prometheus's naming
    conventions: help texts, units, counter suffixes) on /metrics, after a message went
    through so the labelled series have samples too."""
    with submission(relay.config.submission_port) as client:
        client.send_message(message())
    sink.wait_count(1)
    result = _promtool("check", "metrics", stdin=_get(relay.url("/metrics")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout


@needs_promtool
def test_promtool_checks_the_alerting_rules() -> None:
    result = _promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_promtool_checks_the_example_prometheus_configuration() -> None:
    """prometheus.yml is valid and finds the rules file beside it."""
    result = _promtool("check", "config", str(ALERTS.with_name("prometheus.yml")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


@needs_promtool
def test_promtool_runs_the_alerting_rules_unit_tests() -> None:
    """deploy/prometheus/alerts_test.yml: each alert fires on its series and stays quiet on
    the others."""
    result = _promtool("test", "rules", str(ALERTS.with_name("alerts_test.yml")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """Prometheus's own parser on every query of the dashboard, as recording rules with
    Grafana's variables filled in (and its `label_values(SELECTOR, LABEL)` reduced to the
    selector, which is what Grafana sends)."""
    queries = dashboard_queries(json.loads(DASHBOARD.read_text()))
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for n, query in enumerate(queries):
        promql = query.replace("$__rate_interval", "5m").replace("$tenant", ".*")
        promql = re.sub(r"^label_values\((.+),\s*\w+\)$", r"\1", promql)
        lines += [f"      - record: dashboard:query_{n}", f"        expr: {json.dumps(promql)}"]
    rules = tmp_path / "dashboard_rules.yml"
    rules.write_text("\n".join(lines) + "\n")
    result = _promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


# -- a real scrape -------------------------------------------------------------------------


class Prometheus:
    """`prometheus` on loopback with its own storage, scraping the relay every second."""

    def __init__(self, relay: RelayProcess, directory: Path) -> None:
        self.port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  evaluation_interval: 1s\n"
            f"rule_files:\n  - {ALERTS}\n"
            "scrape_configs:\n"
            "  - job_name: relay\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{relay.config.http_port}']\n"
        )
        self.log_path = directory / "prometheus.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={config}",
                 f"--storage.tsdb.path={directory / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=directory,
            )  # fmt: skip
        wait_for(self.ready, 30, "prometheus /-/ready")

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log_path.read_text()}")
        try:
            return "Ready" in _get(f"http://127.0.0.1:{self.port}/-/ready")
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        answer = json.loads(_get(f"http://127.0.0.1:{self.port}/api/v1/{path}{query}"))
        assert answer["status"] == "success", answer
        return answer["data"]

    def value(self, promql: str) -> float | None:
        """The value of a query that yields one series, None while it yields none."""
        result = self.api("query", query=promql)["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def prometheus(relay: RelayProcess, tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(relay, tmp_path)
    try:
        yield server
    finally:
        server.stop()


@needs_prometheus
def test_prometheus_scrapes_the_relay_and_evaluates_the_rules(
    relay: RelayProcess, sink: Sink, prometheus: Prometheus
) -> None:
    """Three messages through the relay come back as 3 from Prometheus's query API, and
    every alerting rule evaluates against the real series without an error."""
    with submission(relay.config.submission_port) as client:
        for n in range(3):
            client.send_message(message(to=f"user{n}@inbox.example"))
    sink.wait_count(3)
    received = 'sum(relay_messages_received_total{job="relay", tenant="acme"})'
    wait_for(lambda: prometheus.value(received) == 3, 30, "3 messages counted by Prometheus")
    delivered = 'sum(relay_deliveries_total{job="relay", outcome="delivered"})'
    wait_for(lambda: prometheus.value(delivered) == 3, 30, "3 deliveries counted")
    assert prometheus.value('up{job="relay"}') == 1
    assert prometheus.value("relay_database_up") == 1

    def evaluated() -> list[dict[str, Any]]:
        groups = prometheus.api("rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]

    wait_for(
        lambda: all(r["health"] == "ok" for r in evaluated()) and bool(evaluated()),
        30,
        "every rule evaluated",
    )
    rules = evaluated()
    assert len(rules) == ALERTS.read_text().count("- alert:")
    # a healthy relay raises no alert, not even a pending one
    assert [r["name"] for r in rules if r["state"] != "inactive"] == []
