"""`[relay] processes = 2`: a primary and an SMTP worker share the submission port
(SO_REUSEPORT). Every 250 is a committed message whichever process gave it, /metrics counts
both, a reload reaches both, a killed worker comes back, and a killed primary takes its
worker with it."""

import json
import os
import signal
import smtplib
import socket
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.peers import (
    ACME_HASH,
    ACME_PASSWORD,
    Append,
    RelayConfig,
    RelayProcess,
    Sink,
    cli,
    wait_for,
)
from tests.support.smtp_client import message, submission

pytestmark = pytest.mark.e2e

BETA = {
    "name": "beta",
    "domains": ["beta.example"],
    "credentials": [{"username": "beta", "password_hash": ACME_HASH}],
}


@pytest.fixture
def relay2(relay_config: RelayConfig, tmp_path: Path) -> Iterator[RelayProcess]:
    relay_config.overrides = {"relay": {"processes": 2}}
    process = RelayProcess(relay_config, tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _workers(relay: RelayProcess) -> list[int]:
    """Pids of the relay's SMTP worker processes (its children started with --smtp-worker)."""
    assert relay.proc is not None
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == relay.proc.pid and b"--smtp-worker" in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its reaper has stopped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _worker_received(relay: RelayProcess, tenant: str) -> float:
    """relay_messages_received of one tenant as the worker alone counts it (its own socket)."""
    return _worker_count(relay, "relay_messages_received", {"tenant": tenant})


def _worker_count(relay: RelayProcess, counter: str, labels: dict[str, str]) -> float:
    """A counter's sample as the worker alone counts it (its own socket)."""
    path = relay.config.data_dir / "run" / "smtp-worker-1.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    for family in json.loads(data):
        if family["name"] == counter:
            for name, sample_labels, value in family["samples"]:
                if name.endswith("_total") and sample_labels == labels:
                    return float(value)
    return 0.0


def _metrics(relay: RelayProcess) -> str:
    with urllib.request.urlopen(relay.url("/metrics"), timeout=10) as response:
        return str(response.read().decode())


def _send_one(port: int, login: tuple[str, str], sender: str, n: int) -> None:
    """One message over its own connection; raises unless it gets 250."""
    with submission(port, login=False) as client:
        client.login(*login)
        client.send_message(message(sender=sender, subject=f"message {n}"))


def _send_many(relay: RelayProcess, count: int, login: tuple[str, str], sender: str) -> None:
    port = relay.config.submission_port
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: _send_one(port, login, sender, n), range(count)))


ACME = ("acme", ACME_PASSWORD)


def test_processes_share_the_port(relay2: RelayProcess, sink: Sink) -> None:
    """40 connections spread over both processes: all delivered and all counted once on
    the primary's /metrics; a reload reaches the worker; a killed worker is replaced while
    the port keeps answering; SIGTERM stops the worker too."""
    relay = relay2
    (worker,) = _workers(relay)
    _send_many(relay, 40, ACME, "app@acme.example")
    sink.wait_count(40)
    in_worker = _worker_received(relay, "acme")
    assert 0 < in_worker < 40, "the kernel gave all 40 connections to one process"
    assert 'relay_messages_received_total{tenant="acme"} 40.0' in _metrics(relay)
    assert "smtp-worker-1 relay.accept: accepted" in relay.log()

    # SIGHUP: the primary reloads and passes it on; every new connection knows beta.
    relay.config.overrides["tenants"] = Append(BETA)
    relay.write_config()
    relay.signal(signal.SIGHUP)
    wait_for(lambda: relay.log().count("configuration reloaded") == 2, 10, "both reloads")
    _send_many(relay, 20, ("beta", ACME_PASSWORD), "app@beta.example")
    sink.wait_count(60)
    assert _worker_received(relay, "beta") > 0
    assert 'relay_messages_received_total{tenant="beta"} 20.0' in _metrics(relay)

    # kill -9 of the worker: the primary takes every connection, then a new worker joins.
    # (Connections the kernel queued on the dying worker's socket are reset, as on any
    # crash: wait until it is gone.)
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: "exited with -9" in relay.log(), 10, "the primary to see the worker die")
    _send_many(relay, 10, ACME, "app@acme.example")
    wait_for(lambda: [p for p in _workers(relay) if p != worker] != [], 15, "a new worker")
    wait_for(lambda: relay.log().count("smtp worker 1 ready (pid") == 2, 30, "new worker ready")
    (replacement,) = _workers(relay)
    _send_many(relay, 20, ACME, "app@acme.example")
    sink.wait_count(90)
    assert _worker_received(relay, "acme") > 0

    assert relay.stop() == 0
    assert "smtp worker 1 stopped" in relay.log()
    assert not _alive(replacement)


def test_kill_9_of_the_primary_stops_the_worker(relay2: RelayProcess, sink: Sink) -> None:
    """PR_SET_PDEATHSIG: no worker goes on taking mail that nobody would deliver."""
    relay = relay2
    (worker,) = _workers(relay)
    _send_one(relay.config.submission_port, ACME, "app@acme.example", 1)
    sink.wait_count(1)
    relay.kill9()
    wait_for(lambda: not _alive(worker), 10, "the worker to stop")
    assert "smtp worker 1 stopped" in relay.log()
    with pytest.raises(OSError):
        smtplib.SMTP("127.0.0.1", relay.config.submission_port, timeout=5).quit()


def test_a_new_suppression_reaches_every_process(relay2: RelayProcess) -> None:
    """P-SUPPRESS: each process keeps its own filter of the list; an address suppressed
    while they run is refused by both, and both answer for the others from memory."""
    relay = relay2
    assert "added 1 of 1" in cli(relay, "suppression", "add", "gone@inbox.example",
                                 "--tenant", "acme")  # fmt: skip
    for _ in range(20):  # spread over both processes by the kernel
        with submission(relay.config.submission_port, login=False) as client:
            client.login(*ACME)
            client.mail("app@acme.example")
            assert client.rcpt("gone@inbox.example")[0] == 550
            assert client.rcpt("alice@inbox.example")[0] == 250
    by_database = _worker_count(relay, "relay_suppression_lookups", {"by": "database"})
    by_filter = _worker_count(relay, "relay_suppression_lookups", {"by": "filter"})
    assert 0 < by_database < 20 and by_filter == by_database, "one process took all 20"
    metrics = _metrics(relay)
    assert 'relay_suppression_lookups_total{by="database"} 20.0' in metrics
    assert 'relay_suppression_lookups_total{by="filter"} 20.0' in metrics
