"""Postfix from Debian's package, run as a private instance on loopback.

The machine's own Postfix (if any) is left alone: this instance has its own configuration
directory, queue and data directories under a temporary directory, listens on a free port
of 127.0.0.1 and relays everything to the bench's sink (`relayhost = [127.0.0.1]:PORT`).
It keeps Postfix's normal durable queue: smtpd answers 250 only after the cleanup daemon
has fsync'd the queue file, which is the promise the relay makes with its commit.
`postfix -c DIR start|stop` manage it; no `postmulti` is needed.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.ports import wait_port

SBIN = Path("/usr/sbin")
TOOLS = ("postfix", "postconf", "smtp-source", "smtp-sink")
INSTALL_HINT = """Postfix is not installed; the benchmark needs Debian's postfix package (postfix,
smtp-source, smtp-sink). Install it without configuring a system mail server:

    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y postfix

or let the benchmark do that: python -m bench --install"""


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if not (SBIN / tool).exists()]


def install() -> None:
    """Install Debian's postfix package with debconf's "No configuration" (no system MTA)."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(
        ["debconf-set-selections"],
        input=b"postfix postfix/main_mailer_type select No configuration\n",
        check=True,
    )
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=120", "postfix"],
        check=True,
        env=env,
    )


def require(install_if_missing: bool) -> None:
    """Make sure Postfix's programs are there, installing them when asked to."""
    if not missing_tools():
        return
    if install_if_missing:
        install()
        if not missing_tools():
            return
    raise SystemExit(INSTALL_HINT)


class PostfixServer:
    """A private Postfix instance under `root`, relaying to 127.0.0.1:`sink_port`."""

    name = "postfix"

    def __init__(self, root: Path, port: int, sink_port: int, process_limit: int = 1100) -> None:
        self.root = root
        self.port = port
        self.sink_port = sink_port
        self.process_limit = process_limit
        self.config_dir = root / "etc"
        self.queue_dir = root / "spool"
        self.maillog = root / "maillog"

    def _postconf(self, *args: str) -> None:
        subprocess.run(
            [str(SBIN / "postconf"), "-c", str(self.config_dir), *args],
            check=True,
            capture_output=True,
        )

    def configure(self) -> None:
        """Write main.cf and master.cf for this instance."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # the postfix user must reach its queue (so must the parents)
        self.config_dir.mkdir(parents=True)
        self.queue_dir.mkdir()
        (self.root / "lib").mkdir()
        shutil.chown(self.root / "lib", "postfix", "postfix")
        main = Path("/etc/postfix/main.cf")
        (self.config_dir / "main.cf").write_text(main.read_text() if main.exists() else "")
        shutil.copy(Path("/etc/postfix/master.cf"), self.config_dir / "master.cf")
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.root / "lib"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix.bench.localhost",
            "mydomain": "bench.localhost",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "relayhost": f"[127.0.0.1]:{self.sink_port}",
            "default_process_limit": str(self.process_limit),
            "smtp_destination_concurrency_limit": "20",
            "default_destination_concurrency_limit": "20",
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "message_size_limit": str(25 * 1024 * 1024),
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            # Retries as soon as the relay's bench configuration retries (1 s, at most 5 s).
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "5s",
            "queue_run_delay": "1s",
            "biff": "no",
        }
        self._postconf("-e", *(f"{key}={value}" for key, value in settings.items()))
        # smtpd on our port instead of 25, one process per session up to the limit; nothing
        # chrooted (the private queue has no copies of /etc files).
        master = (self.config_dir / "master.cf").read_text().splitlines()
        master = [line for line in master if not line.startswith("smtp      inet")]
        master.append(f"127.0.0.1:{self.port} inet n - n - {self.process_limit} smtpd")
        (self.config_dir / "master.cf").write_text("\n".join(master) + "\n")
        self._postconf("-F", "*/*/chroot = n")

    def start(self) -> None:
        subprocess.run(
            [str(SBIN / "postfix"), "-c", str(self.config_dir), "start"],
            check=True,
            capture_output=True,
        )
        wait_port(self.port)

    def master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def roots(self) -> list[int]:
        """Postfix's master; every Postfix daemon of this instance is its child."""
        pid = self.master_pid()
        return [pid] if pid else []

    def stop(self) -> None:
        pid = self.master_pid()
        subprocess.run(
            [str(SBIN / "postfix"), "-c", str(self.config_dir), "stop"], capture_output=True
        )
        deadline = time.monotonic() + 30
        while pid and Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    def log(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""
