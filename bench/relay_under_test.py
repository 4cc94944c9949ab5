"""The relay as the benchmark runs it: `relay serve` with a generated config in a temp dir.

The bench tenant is trusted by source network (smtp-source cannot AUTH, like the printers
`networks` exists for), sends as bench.example with an RSA-2048 DKIM key that is made with
`relay dkim keygen` and activated with `relay dkim rotate` against a DNS server on loopback
that publishes its record, so every message is signed. The policy pipeline runs in full;
only `require_verified_domains` is off, as there is no DNS for SPF and DMARC here. Mail to
sink.example is routed to the bench's sink. The queue is the embedded PostgreSQL under the
temp data_dir (or `--dsn`), with `synchronous_commit` on: a 250 follows a durable commit.
"""

import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.ports import free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "bench.example"
SINK_DOMAIN = "sink.example"
PG_USER = "pgserver"  # the system user pgserver runs PostgreSQL as when started by root


def _pg_bin() -> Path:
    """pgserver's own PostgreSQL binaries (found without importing it: its import warns
    when XDG_RUNTIME_DIR is unset)."""
    spec = importlib.util.find_spec("pgserver")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def render_config(
    data_dir: Path, port: int, http_port: int, sink_port: int, dns_port: int, dsn: str,
    data_timeout: float, extra: str = "",
) -> str:  # fmt: skip
    """relay.toml for the bench, with `extra` tables at its end; every key is checked by
    `relay check-config`."""
    return f"""\
[relay]
hostname = "relay.bench.localhost"
data_dir = "{data_dir}"
log_level = "info"
processes = "auto"

[queue]
dsn = "{dsn}"

[[listeners]]
name = "bench"
address = "127.0.0.1:{port}"
tls = "starttls"

[smtp]
max_connections = 2500
max_connections_per_client = 2500
data_timeout = "{data_timeout}s"

[delivery]
concurrency = 200
connections_per_site = 20
messages_per_connection = 50
lease = "20s"
retry_initial = "1s"
retry_max = "5s"
tls = "none"
nameservers = ["127.0.0.1:{dns_port}"]
private_mx = true
connect_timeout = "10s"
command_timeout = "60s"

[policy]
require_verified_domains = false

[http]
address = "127.0.0.1:{http_port}"

[[tenants]]
name = "bench"
domains = ["{DOMAIN}"]
networks = ["127.0.0.0/16"]
stream = "transactional"

[tenants.limits]
submissions_per_minute = 100000000
max_message_size = "25MiB"

[[routes]]
domain = "{SINK_DOMAIN}"
host = "127.0.0.1"
port = {sink_port}
{extra}"""


class RelayServer:
    """One relay process (and its embedded PostgreSQL) under `root`."""

    name = "relay"

    def __init__(
        self,
        root: Path,
        port: int,
        sink_port: int,
        dsn: str = "",
        data_timeout: float = 5.0,
        extra: str = "",
        domains: tuple[str, ...] = (DOMAIN,),
    ) -> None:
        self.extra = extra
        self.domains = domains
        """The sending domains to give DKIM keys (their tenants are in `extra`)."""
        self.root = root
        self.port = port
        self.sink_port = sink_port
        self.dsn = dsn
        self.data_timeout = data_timeout
        self.http_port = free_port()
        self.data_dir = root / "data"
        self.config = root / "relay.toml"
        self.log_path = root / "relay.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", XDG_RUNTIME_DIR=str(root / "run"))

    def _relay(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "relay", *args, "--config", str(self.config)],
            capture_output=True, text=True, cwd=ROOT, env=self.env,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"relay {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def configure(self) -> None:
        """Write and check the config; make the DKIM key and activate it through DNS."""
        sys.path.insert(0, str(ROOT))
        from relay.dkim.keys import DomainKeys, dns_record
        from tests.support.dns_server import DnsServer

        (self.root / "run").mkdir(mode=0o700, exist_ok=True)
        with DnsServer() as dns:
            self.config.write_text(
                render_config(self.data_dir, self.port, self.http_port, self.sink_port,
                              dns.port, self.dsn, self.data_timeout, self.extra)
            )  # fmt: skip
            subprocess.run(
                [sys.executable, "-m", "relay", "check-config", str(self.config)],
                check=True, capture_output=True, cwd=ROOT, env=self.env,
            )  # fmt: skip
            for domain in self.domains:
                self._relay("dkim", "keygen", domain)
                keys = DomainKeys(self.data_dir / "dkim", domain)
                selector = keys.state["rsa"].next
                assert selector is not None
                record = dns_record(keys.load_key(selector))
                chunks = " ".join(f'"{record[i : i + 255]}"' for i in range(0, len(record), 255))
                dns.add(f"{selector}._domainkey.{domain}", "TXT", 300, chunks)
                self._relay("dkim", "rotate", domain)

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay", "serve", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=self.env,
            )  # fmt: skip
        deadline = time.monotonic() + 90
        while not self.healthy():
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"relay not healthy after 90 s:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        wait_port(self.port)

    def healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    # -- the processes whose CPU and memory are the relay's --------------------------------

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "pg" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def own_pids(self) -> list[int]:
        """The relay's main process (its SMTP workers are its children)."""
        return [self.proc.pid] if self.proc and self.proc.poll() is None else []

    def roots(self) -> list[int]:
        """The relay process and, when embedded, its PostgreSQL's postmaster."""
        roots = [self.proc.pid] if self.proc and self.proc.poll() is None else []
        postmaster = self.postmaster_pid()
        if postmaster and not self.dsn:
            roots.append(postmaster)
        return roots

    # -- stopping, crashing, and the database going away ---------------------------------

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # After a kill -9 pgserver no longer knows the relay was its last user: stop it here.
        postmaster = self.postmaster_pid()
        if not self.dsn and postmaster and Path(f"/proc/{postmaster}").exists():
            self.pg_ctl("stop", "-m", "fast")

    def pg_ctl(self, *args: str) -> None:
        """Run the embedded server's pg_ctl as the user pgserver runs PostgreSQL as."""
        command = [str(_pg_bin() / "pg_ctl"), "-D", str(self.data_dir / "pg"), "-w", *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", PG_USER, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def stop_postgres(self) -> list[str]:
        """Stop the embedded PostgreSQL (fast: sessions cut); return how to start it again."""
        lines = (self.data_dir / "pg" / "postmaster.pid").read_text().splitlines()
        socket_dir = lines[4]
        self.pg_ctl("stop", "-m", "fast")
        return ["-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(self.data_dir / "pg" / "log")]

    def start_postgres(self, options: list[str]) -> None:
        self.pg_ctl(*options, "start")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
