"""`[relay] processes`: the key's validation, and how /metrics adds the SMTP workers'
snapshots to the main process's own metrics."""

import json
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from relay.config.load import ConfigError, load_config
from relay.serve.processes import MergedMetrics, snapshot

# Text, not a dict: the error messages checked below name the line of `processes`.
LISTENER = """
[[listeners]]
name = "submission"
address = "127.0.0.1:2587"
"""


def _load(tmp_path: Path, value: str) -> int:
    path = tmp_path / "relay.toml"
    path.write_text(f"[relay]\nprocesses = {value}\n{LISTENER}")
    return load_config(path).relay.process_count


@pytest.mark.parametrize(("value", "count"), [("1", 1), ("3", 3), ('"auto"', os.cpu_count() or 1)])
def test_processes_takes_a_count_or_auto(tmp_path: Path, value: str, count: int) -> None:
    assert _load(tmp_path, value) == count


def test_processes_defaults_to_one(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(LISTENER)
    assert load_config(path).relay.process_count == 1


@pytest.mark.parametrize("value", ["0", "-2", '"two"', '"AUTO"', "true", "1.5"])
def test_processes_errors_name_the_key(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, value)
    assert ':2: relay.processes: expected an integer >= 1 or "auto", got' in str(caught.value)


def _registry() -> tuple[CollectorRegistry, Counter, Histogram, Gauge, Gauge]:
    registry = CollectorRegistry()
    received = Counter("relay_messages_received", "Accepted.", ["tenant"], registry=registry)
    accept = Histogram("relay_accept_seconds", "To 250.", buckets=(0.1, 1), registry=registry)
    sessions = Gauge("relay_smtp_sessions", "Open.", ["listener"], registry=registry)
    database = Gauge("relay_database_up", "Up.", registry=registry)
    return registry, received, accept, sessions, database


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_worker_samples_are_added_by_name_and_labels() -> None:
    primary, received, accept, sessions, database = _registry()
    received.labels("acme").inc(3)
    accept.observe(0.05)
    sessions.labels("submission").set(2)
    database.set(1)
    worker, w_received, w_accept, w_sessions, _ = _registry()
    w_received.labels("acme").inc(4)
    w_received.labels("beta").inc(1)  # a series only the worker has
    w_accept.observe(0.5)
    w_sessions.labels("submission").set(5)
    shipped = json.loads(json.dumps(snapshot(worker)))  # as it crosses the Unix socket

    merged = _samples(generate_latest(MergedMetrics(primary, [shipped, shipped])).decode())

    assert merged[("relay_messages_received_total", (("tenant", "acme"),))] == 3 + 4 + 4
    assert merged[("relay_messages_received_total", (("tenant", "beta"),))] == 2
    assert merged[("relay_accept_seconds_count", ())] == 3
    assert merged[("relay_accept_seconds_bucket", (("le", "0.1"),))] == 1
    assert merged[("relay_accept_seconds_bucket", (("le", "1.0"),))] == 3
    assert merged[("relay_smtp_sessions", (("listener", "submission"),))] == 2 + 5 + 5
    assert merged[("relay_database_up", ())] == 1  # the primary's alone: not in snapshots
    created = ("relay_messages_received_created", (("tenant", "acme"),))
    assert merged[created] == _samples(generate_latest(primary).decode())[created]


def test_without_snapshots_the_output_is_the_registrys() -> None:
    primary, received, *_ = _registry()
    received.labels("acme").inc()
    assert generate_latest(MergedMetrics(primary, [])) == generate_latest(primary)
