"""Real peers for end-to-end tests: the relay as a child process, an SMTP sink, PostgreSQL.

Nothing here is a mock: the relay is `python -m relay serve` with a generated config, the
sink is a real SMTP server on loopback (`relay.sink` in a thread), and the database is a
real PostgreSQL (embedded through pgserver, or the server named by RELAY_TEST_DSN).
"""

import asyncio
import contextlib
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from relay.sink import SinkHandler, make_sink_protocol

ROOT = Path(__file__).resolve().parents[2]
ACME_PASSWORD = "acme-secret"
# argon2id of ACME_PASSWORD, made once with `relay hash-password`.
ACME_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$zXMQViShmucajOzh0PjSaQ$"
    "OEu7CFB2X4r6fefSe4qV1ENxKJx9Wf4npIjlr4AvIUY"
)


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


@dataclass
class RelayConfig:
    """What a test may vary in the generated relay.toml."""

    dsn: str
    data_dir: Path
    routes: dict[str, int] = field(default_factory=dict)
    extra_smtp: str = ""
    extra_delivery: str = ""
    extra_tenants: str = ""
    extra_policy: str = ""
    dkim: str = "generate_missing = true"
    extra_http: str = ""
    bare_newlines: str = "reject"
    require_verified_domains: bool = False
    submission_port: int = field(default_factory=free_port)
    smtps_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)

    def render(self) -> str:
        routes = "".join(
            f'[[routes]]\ndomain = "{d}"\nhost = "127.0.0.1"\nport = {p}\n\n'
            for d, p in self.routes.items()
        )
        return f"""
[relay]
hostname = "relay.test"
data_dir = "{self.data_dir}"
log_level = "info"

[queue]
dsn = "{self.dsn}"

[[listeners]]
name = "submission"
address = "127.0.0.1:{self.submission_port}"
tls = "starttls"
bare_newlines = "{self.bare_newlines}"

[[listeners]]
name = "submissions"
address = "127.0.0.1:{self.smtps_port}"
tls = "implicit"

[smtp]
auth_failure_delay = "0.3s"
{self.extra_smtp}

[delivery]
lease = "5s"
retry_initial = "1s"
retry_max = "2s"
connect_timeout = "5s"
command_timeout = "10s"
{self.extra_delivery}

[dkim]
{self.dkim}

[policy]
require_verified_domains = {"true" if self.require_verified_domains else "false"}
spf_mechanism = "include:_spf.relay.test"
service_contacts = ["abuse@relay.test"]
{self.extra_policy}

[http]
address = "127.0.0.1:{self.http_port}"
{self.extra_http}

[[tenants]]
name = "acme"
domains = ["acme.example"]
verified = true

[tenants.identity]
name = "Acme Widgets GmbH"
street = "Hauptstraße 5"
postal_code = "10115"
city = "Berlin"
country = "DE"
contact_email = "hello@acme.example"

[[tenants.credentials]]
username = "acme"
password_hash = "{ACME_HASH}"

[tenants.limits]
recipients_per_message = 5
max_message_size = "64KiB"

[[tenants]]
name = "printer"
domains = ["printer.example"]
networks = ["127.0.0.2/32"]

{self.extra_tenants}

{routes}
"""


class RelayProcess:
    """`python -m relay serve` with a generated config, its log in a file."""

    def __init__(self, config: RelayConfig, directory: Path) -> None:
        self.config = config
        self.path = directory / "relay.toml"
        self.log_path = directory / "relay.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, text: str | None = None) -> None:
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
