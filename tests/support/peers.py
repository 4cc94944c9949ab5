"""Real peers for end-to-end tests: the relay as a child process, an SMTP sink, PostgreSQL.

Nothing here is a mock: the relay is `python -m relay serve` with a generated config, the
sink is a real SMTP server on loopback (`relay.sink` in a thread), and the database is a
real PostgreSQL (embedded through pgserver, or the server named by RELAY_TEST_DSN).
"""

import asyncio
import contextlib
import copy
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import tomli_w

from relay.sink import SinkHandler, make_sink_protocol

ROOT = Path(__file__).resolve().parents[2]
ACME_PASSWORD = "acme-secret"
# argon2id of ACME_PASSWORD, made once with `relay hash-password`.
ACME_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$zXMQViShmucajOzh0PjSaQ$"
    "OEu7CFB2X4r6fefSe4qV1ENxKJx9Wf4npIjlr4AvIUY"
)


def demo_document() -> dict[str, Any]:
    """The repository's relay.toml, the demo a newcomer starts, as data: for tests that run
    the shipped configuration with a few values changed (`merged`)."""
    return tomllib.loads((ROOT / "relay.toml").read_text())


def db_rows(dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
    """Run one query on the relay's database (a real connection) and return its rows."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def db_count(dsn: str, table: str) -> int:
    return int(db_rows(dsn, f"SELECT count(*) AS n FROM {table}")[0]["n"])


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, chosen below the kernel's range of ephemeral ports: a
    port the kernel hands out (bind to port 0) can be taken by any outgoing connection
    between this check and the relay's bind, which then fails with "address in use". A port
    is handed out once per test run: one relay's config takes several before any is bound,
    and the same random pick twice made two listeners collide."""
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ranges.read_text().split()[0]) if ranges.exists() else 32768
    while True:
        port = random.randrange(10_000, low)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Sink:
    """A capture SMTP server on 127.0.0.1 in its own thread and event loop."""

    def __init__(self, script: list[str] | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.handler = SinkHandler(script=script)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self._server: asyncio.Server | None = None

        def run() -> None:
            asyncio.set_event_loop(self.loop)

            async def start() -> None:
                self._server = await self.loop.create_server(
                    lambda: make_sink_protocol(self.handler, tls=tls), "127.0.0.1", 0
                )
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()

            self.loop.run_until_complete(start())
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="sink")
        self._thread.start()
        ready.wait(10)

    @property
    def messages(self) -> list[tuple[str, list[str], bytes]]:
        return list(self.handler.messages)

    def wait_count(self, count: int, timeout: float = 30.0) -> list[tuple[str, list[str], bytes]]:
        wait_for(lambda: len(self.handler.messages) >= count, timeout, f"{count} messages at sink")
        return self.messages

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class Append:
    """Tables to add after those of an array of tables in the base configuration
    (`[[tenants]]`, `[[listeners]]`, `[[routes]]`)."""

    def __init__(self, *tables: Mapping[str, Any]) -> None:
        self.tables = [dict(t) for t in tables]


class Amend:
    """Changes to tables of an array of tables, found by their `name` key: each change is
    merged into the table of that name, which must be there (a test that amends a tenant
    the base configuration no longer has should fail, not pass on a config it never saw)."""

    def __init__(
        self, by_name: Mapping[str, Mapping[str, Any]] | None = None, /, **more: Mapping[str, Any]
    ) -> None:
        self.by_name = {**(by_name or {}), **more}


@dataclass(frozen=True)
class Replace:
    """A value that takes the place of the base configuration's, table or array of tables
    included, instead of being merged into it."""

    value: Any


def _is_tables(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` deep-merged in: tables merge key by key, other values replace
    the base's. An array of tables changes only through `Append`, `Amend` or `Replace`: a
    plain list there would drop the base's tables without saying so."""
    result = copy.deepcopy(dict(base))
    for key, change in overrides.items():
        current = result.get(key)
        if isinstance(change, Replace):
            result[key] = copy.deepcopy(change.value)
        elif isinstance(change, Append):
            result[key] = [*(current or []), *copy.deepcopy(change.tables)]
        elif isinstance(change, Amend):
            tables = list(current or [])
            for name, fields in change.by_name.items():
                found = [i for i, table in enumerate(tables) if table.get("name") == name]
                if len(found) != 1:
                    raise KeyError(f"{key}: {len(found)} tables named {name!r}, not one")
                tables[found[0]] = merged(tables[found[0]], fields)
            result[key] = tables
        elif isinstance(change, Mapping) and isinstance(current, Mapping | None):
            result[key] = merged(current or {}, change)  # a new table may hold markers too
        elif _is_tables(current):
            raise TypeError(f"{key}: say Append, Amend or Replace for an array of tables")
        else:
            result[key] = copy.deepcopy(change)
    return result


@dataclass
class RelayConfig:
    """What a test may vary in the generated relay.toml: the routes and a few settings every
    test names, and `overrides`, merged into the base document (`merged`)."""

    dsn: str
    data_dir: Path
    routes: dict[str, int] = field(default_factory=dict)
    bare_newlines: str = "reject"
    require_verified_domains: bool = False
    submission_port: int = field(default_factory=free_port)
    smtps_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    overrides: dict[str, Any] = field(default_factory=dict)

    def base(self) -> dict[str, Any]:
        """The configuration before `overrides`: two listeners, a quick retry schedule, the
        tenant acme (verified, with an identity and a password) and printer (by network)."""
        document: dict[str, Any] = {
            "relay": {
                "hostname": "relay.test",
                "data_dir": str(self.data_dir),
                "log_level": "info",
            },
            "queue": {"dsn": self.dsn},
            "listeners": [
                {
                    "name": "submission",
                    "address": f"127.0.0.1:{self.submission_port}",
                    "tls": "starttls",
                    "bare_newlines": self.bare_newlines,
                },
                {
                    "name": "submissions",
                    "address": f"127.0.0.1:{self.smtps_port}",
                    "tls": "implicit",
                },
            ],
            "smtp": {"auth_failure_delay": "0.3s"},
            "delivery": {
                "lease": "5s",
                "retry_initial": "1s",
                "retry_max": "2s",
                "connect_timeout": "5s",
                "command_timeout": "10s",
            },
            "dkim": {"generate_missing": True},
            "policy": {
                "require_verified_domains": self.require_verified_domains,
                "spf_mechanism": "include:_spf.relay.test",
                "service_contacts": ["abuse@relay.test"],
            },
            "http": {"address": f"127.0.0.1:{self.http_port}"},
            "tenants": [
                {
                    "name": "acme",
                    "domains": ["acme.example"],
                    "verified": True,
                    "identity": {
                        "name": "Acme Widgets GmbH",
                        "street": "Hauptstraße 5",
                        "postal_code": "10115",
                        "city": "Berlin",
                        "country": "DE",
                        "contact_email": "hello@acme.example",
                    },
                    "credentials": [{"username": "acme", "password_hash": ACME_HASH}],
                    "limits": {"recipients_per_message": 5, "max_message_size": "64KiB"},
                },
                {"name": "printer", "domains": ["printer.example"], "networks": ["127.0.0.2/32"]},
            ],
        }
        if self.routes:
            document["routes"] = [
                {"domain": domain, "host": "127.0.0.1", "port": port}
                for domain, port in self.routes.items()
            ]
        return document

    def document(self) -> dict[str, Any]:
        """The configuration as the relay will read it: `base()` with `overrides` merged in."""
        return merged(self.base(), self.overrides)

    def render(self) -> str:
        return tomli_w.dumps(self.document())


class RelayProcess:
    """`python -m relay serve` with a generated config, its log in a file."""

    def __init__(self, config: RelayConfig, directory: Path) -> None:
        self.config = config
        self.path = directory / "relay.toml"
        self.log_path = directory / "relay.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, text: str | None = None) -> None:
        """Write the configuration the relay reads at start and on SIGHUP: `config` rendered,
        or `text` as it is, for a file no dict can make (one the TOML parser refuses)."""
        self.path.write_text(self.config.render() if text is None else text)

    def start(self, wait: bool = True) -> "RelayProcess":
        if not self.path.exists():
            self.write_config()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay", "serve", "--config", str(self.path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
            )
        if wait:
            wait_for(self.healthy, 60, "relay /healthz")
        return self

    def healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"relay exited with {self.proc.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(self.url("/healthz"), timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.config.http_port}{path}"

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def run_cli(
    relay: RelayProcess, *args: str, stdin: str | None = None
) -> "subprocess.CompletedProcess[str]":
    """`relay ARGS --config FILE` against a test relay's configuration, as an admin runs it."""
    return subprocess.run(
        [sys.executable, "-m", "relay", *args, "--config", str(relay.path)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False, input=stdin,
    )  # fmt: skip


def cli(relay: RelayProcess, *args: str, stdin: str | None = None) -> str:
    """`run_cli` that must succeed; what it printed (standard output, then error output)."""
    result = run_cli(relay, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


@contextlib.contextmanager
def running(config: RelayConfig, directory: Path) -> Iterator[RelayProcess]:
    relay = RelayProcess(config, directory)
    try:
        yield relay.start()
    finally:
        relay.stop()
