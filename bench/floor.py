"""`python -m bench.floor`: what the relay's chosen parts cost per message before it does any
work of its own, beside Postfix doing all of its work, on this machine and in one run.

    python -m bench.floor [--size 2048] [--messages 8000] [--sessions 20] [--repeat 3]

The relay is built on aiosmtpd (the SMTP sessions), OpenSSL through `cryptography` (the DKIM
signature), PostgreSQL (the queue) and aiosmtplib (delivery). Each part is measured alone,
doing only its share of one message, with nothing of the relay around it:

- aiosmtpd: a bare server (uvloop, one process per core sharing the port with SO_REUSEPORT,
  as the relay runs with `processes = "auto"`; a handler that answers 250 and keeps nothing)
  under smtp-source: accepted messages/s, and CPU per message of its processes;
- RSA-2048: one PKCS#1 v1.5 signature of a SHA-256 digest, as every DKIM signature needs;
- commit: the relay's own `insert_messages` (the group commit's statement) in batches of 10
  into a fresh embedded PostgreSQL with `synchronous_commit` on: CPU per message of this
  process and of PostgreSQL's processes;
- aiosmtplib: `--sessions` clients, one connection each, sending the message to smtp-sink
  with `sendmail` (MAIL, RCPT, DATA): CPU per message of this process;
- Postfix: relaying to smtp-sink as in the side-by-side bench (`bench.postfix`): accepted
  messages/s, and CPU per message of all its processes, from smtp-source's start until the
  sink has the last message.

The four parts add up to a floor: while the relay keeps these parts it cannot spend less
CPU on a message, whatever its own code does. Set against Postfix's CPU per message (both
run on the same cores, with the same load tools beside them), the floor says how close to
Postfix's rates the relay can come at best. Results go to bench/results/floor-latest.json
and a dated copy. Run as root, like the side-by-side bench (Postfix's daemons and
smtp-sink drop to the postfix user).
"""

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiosmtplib
import asyncpg
import uvloop
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from bench import load, postfix, procs
from bench.ports import free_port, wait_port
from bench.results import write_results
from bench.side_by_side import throughput
from bench.sinks import SmtpSink
from relay.queue.database import EmbeddedPostgres
from relay.queue.migrate import migrate
from relay.queue.store import NewMessage, insert_messages

_BATCH = 10


class _Answer250:
    """An aiosmtpd handler that accepts every message and keeps nothing."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 2.0.0 OK"


def serve_bare(port: int) -> None:
    """One bare aiosmtpd process on 127.0.0.1:`port`, sharing it with its siblings."""

    async def serve() -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(1024)
        handler = _Answer250()
        loop = asyncio.get_running_loop()
        await loop.create_server(lambda: SMTP(handler, hostname="floor.localhost"), sock=listener)
        await asyncio.Event().wait()

    uvloop.run(serve())


def bare_aiosmtpd(args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    command = [sys.executable, "-m", "bench.floor", "--serve-bare", str(port)]
    servers = [subprocess.Popen(command) for _ in range(os.cpu_count() or 1)]
    try:
        wait_port(port)
        time.sleep(0.5)  # every process listening before the load starts
        load.smtp_source(port, args.sessions, 200, args.size)  # warm-up
        pids = [p.pid for p in servers]
        before = procs.cpu_seconds(pids)
        run = load.smtp_source(port, args.sessions, args.messages, args.size)
        cpu = procs.cpu_seconds(pids) - before
        if run.returncode != 0:
            raise SystemExit(f"smtp-source against bare aiosmtpd failed: {run.errors}")
        return {
            "accepted_per_s": args.messages / run.seconds,
            "cpu_ms_per_message": cpu / args.messages * 1000,
        }
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)


def rsa_signature(count: int = 2000) -> dict[str, float]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    digest = b"\x00" * 32
    started = time.process_time()
    for _ in range(count):
        key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    return {"cpu_ms_per_message": (time.process_time() - started) / count * 1000}


async def _commits(dsn: str, postmaster: int, args: argparse.Namespace) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        content = load.message("<floor@bench.example>", args.size)

        def batch() -> list[NewMessage]:
            return [
                NewMessage("bench", load.SENDER, (load.RECIPIENT,), content) for _ in range(_BATCH)
            ]

        for _ in range(20):  # warm-up: prepared statement, caches
            await insert_messages(conn, batch(), 3600.0)
        batches = [batch() for _ in range(args.messages // _BATCH)]
        database_before = procs.cpu_seconds(procs.tree([postmaster]))
        started = time.process_time()
        for messages in batches:
            await insert_messages(conn, messages, 3600.0)
        client = time.process_time() - started
        database = procs.cpu_seconds(procs.tree([postmaster])) - database_before
    finally:
        await conn.close()
    count = len(batches) * _BATCH
    return {
        "cpu_ms_per_message": (client + database) / count * 1000,
        "client_ms_per_message": client / count * 1000,
        "postgres_ms_per_message": database / count * 1000,
    }


def group_commit(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        database = EmbeddedPostgres(Path(tmp))
        dsn = database.start()
        try:
            postmaster = int((database.pgdata / "postmaster.pid").read_text().split()[0])
            return uvloop.run(_commits(dsn, postmaster, args))
        finally:
            database.stop()


async def _deliveries(port: int, args: argparse.Namespace) -> float:
    content = load.message("<floor@bench.example>", args.size)
    per_client = args.messages // args.sessions

    async def client() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="floor.localhost")
        await smtp.connect()
        for _ in range(per_client):
            await smtp.sendmail(load.SENDER, [load.RECIPIENT], content)
        await smtp.quit()

    started = time.process_time()
    await asyncio.gather(*(client() for _ in range(args.sessions)))
    return (time.process_time() - started) / (per_client * args.sessions) * 1000


def aiosmtplib_delivery(args: argparse.Namespace) -> dict[str, float]:
    sink = SmtpSink()
    try:
        return {"cpu_ms_per_message": uvloop.run(_deliveries(sink.port, args))}
    finally:
        sink.stop()


def postfix_relay(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        directory = Path(tmp)
        directory.chmod(0o755)  # Postfix's daemons run as the postfix user
        sink = SmtpSink()
        server = postfix.PostfixServer(directory / "postfix", free_port(), sink.port)
        try:
            server.configure()
            server.start()
            load.smtp_source(server.port, args.sessions, 200, args.size)  # warm-up
            sink.wait_count(200, timeout=120)
            cell = throughput(server, sink, args.size, args.sessions, args.messages)
        finally:
            server.stop()
            sink.stop()
    if "problem" in cell:
        raise SystemExit(f"Postfix run failed: {cell['problem']}")
    return {
        "accepted_per_s": cell["accepted_per_s"],
        "cpu_ms_per_message": cell["cpu_s_per_1000"],
    }


PARTS = {
    "aiosmtpd": bare_aiosmtpd,
    "rsa2048": lambda args: rsa_signature(),
    "commit": group_commit,
    "aiosmtplib": aiosmtplib_delivery,
    "postfix": postfix_relay,
}
LABELS = {
    "aiosmtpd": "bare aiosmtpd session (answers 250, keeps nothing)",
    "rsa2048": "RSA-2048 signature (OpenSSL via cryptography)",
    "commit": f"group commit, {_BATCH} per batch (this process + PostgreSQL)",
    "aiosmtplib": "aiosmtplib delivery over a kept connection",
}


def summarise(runs: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    medians = {
        part: {key: statistics.median(r[part][key] for r in runs) for key in runs[0][part]}
        for part in runs[0]
    }
    floor = sum(medians[part]["cpu_ms_per_message"] for part in LABELS)
    theirs = medians["postfix"]["cpu_ms_per_message"]
    return {
        "medians": medians,
        "floor_cpu_ms_per_message": floor,
        "postfix_cpu_ms_per_message": theirs,
        "floor_over_postfix": floor / theirs,
        "bare_aiosmtpd_accepted_over_postfix": (
            medians["aiosmtpd"]["accepted_per_s"] / medians["postfix"]["accepted_per_s"]
        ),
    }


def report(summary: dict[str, Any], size: int, sessions: int) -> str:
    medians = summary["medians"]
    lines = [f"CPU ms per message of {size} bytes, {sessions} sessions (medians)"]
    for part, label in LABELS.items():
        lines.append(f"  {label:58} {medians[part]['cpu_ms_per_message']:6.2f}")
    lines += [
        f"  {'floor: the four parts together':58} {summary['floor_cpu_ms_per_message']:6.2f}",
        f"  {'Postfix, all of its relaying (smtpd to smtp)':58} "
        f"{summary['postfix_cpu_ms_per_message']:6.2f}",
        f"  {'floor / Postfix':58} {summary['floor_over_postfix']:6.2f}",
        "accepted messages/s: bare aiosmtpd "
        f"{medians['aiosmtpd']['accepted_per_s']:.0f}, Postfix relaying "
        f"{medians['postfix']['accepted_per_s']:.0f} "
        f"({summary['bare_aiosmtpd_accepted_over_postfix']:.2f}x)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.floor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size", type=int, default=2048, help="payload bytes (2048)")
    parser.add_argument("--messages", type=int, default=8000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--serve-bare", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return
    postfix.require(install_if_missing=False)
    procs.raise_file_limit()
    runs = []
    for number in range(args.repeat):
        run = {}
        for part, measure in PARTS.items():
            run[part] = measure(args)
            print(f"repeat {number + 1}: {part:10} {run[part]}", flush=True)
        runs.append(run)
    summary = summarise(runs)
    print(report(summary, args.size, args.sessions))
    plan = {"size": args.size, "messages": args.messages, "sessions": args.sessions}
    path = write_results("floor", {"plan": plan, "runs": runs, **summary})
    print(f"results in {path} (and floor-latest.json)")


if __name__ == "__main__":
    main()
