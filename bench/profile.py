"""`python -m bench.profile`: the relay alone under smtp-source, with where its CPU goes.

    python -m bench.profile [--size 2048] [--messages 4000] [--sessions 20] [--repeat 3]
                            [--py-spy FILE]

The relay runs as in the side-by-side bench (`bench.relay_under_test`: policy and DKIM on,
one process per core, its embedded PostgreSQL). After a warm-up, each repeat sends
`--messages` with Postfix's smtp-source and reports accepted and end-to-end messages/s, CPU
per message of the relay's processes and of PostgreSQL's apart, the mean time from the final
dot to the 250 (the relay's own `relay_accept_seconds` histogram), the mean number of
messages per group commit (`relay_group_commit_messages`) and PostgreSQL's work per
message (transactions, rows written, read by index) from its statistics views. With
`--py-spy FILE` the first repeat is sampled with py-spy (`pip install py-spy`) into FILE as
collapsed stacks, for `python -m bench.profile_report FILE`. This is the tool each step in
bench/README.md's "Making it fast" was measured with; results go to
bench/results/profile-latest.json and a dated copy.
"""

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg

from bench import load, procs
from bench.ports import free_port
from bench.relay_under_test import RelayServer
from bench.results import write_results
from bench.sinks import SmtpSink

_HISTOGRAMS = ("relay_accept_seconds", "relay_group_commit_messages")
_PG_TOTALS = (
    "SELECT xact_commit, tup_inserted, tup_updated, tup_fetched FROM pg_stat_database "
    "WHERE datname = current_database()"
)


async def _pg_totals(relay: RelayServer) -> dict[str, int]:
    pid_file = (relay.data_dir / "pg" / "postmaster.pid").read_text().splitlines()
    conn = await asyncpg.connect(f"postgresql://postgres@/relay?host={pid_file[4]}")
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        return dict(await conn.fetchrow(_PG_TOTALS))
    finally:
        await conn.close()


def _histograms(relay: RelayServer) -> dict[str, float]:
    """Sums and counts of the relay's DATA-to-250 and group-commit-size histograms."""
    url = f"http://127.0.0.1:{relay.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith(_HISTOGRAMS) and name.endswith(("_sum", "_count")):
            values[name] = float(value)
    return values


def _mean(before: dict[str, float], after: dict[str, float], histogram: str) -> float | None:
    count = after[f"{histogram}_count"] - before[f"{histogram}_count"]
    total = after[f"{histogram}_sum"] - before[f"{histogram}_sum"]
    return total / count if count else None


def _py_spy() -> str:
    """py-spy from PATH or from the environment this bench runs in."""
    beside = Path(sys.executable).parent / "py-spy"
    found = shutil.which("py-spy") or (str(beside) if beside.exists() else None)
    if found is None:
        raise SystemExit("--py-spy needs py-spy: pip install py-spy")
    return found


def one_run(
    relay: RelayServer, sink: SmtpSink, args: argparse.Namespace, spy: str
) -> dict[str, Any]:
    relay_cpu = procs.cpu_seconds(procs.tree([relay.proc.pid]))  # type: ignore[union-attr]
    pg_cpu = procs.cpu_seconds(procs.tree([relay.postmaster_pid() or 0]))
    pg = asyncio.run(_pg_totals(relay))
    histograms = _histograms(relay)
    sampler = None
    if spy:
        sampler = subprocess.Popen(
            [_py_spy(), "record", "--subprocesses", "--nonblocking", "-r", "200", "-f", "raw",
             "-o", spy, "-p", str(relay.proc.pid)],  # type: ignore[union-attr]
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    base, n = sink.count, args.messages
    started = time.monotonic()
    run = load.smtp_source(relay.port, args.sessions, n, args.size)
    arrived = sink.wait_count(base + n, timeout=600)
    time.sleep(1.0)
    if sampler is not None:
        sampler.send_signal(2)
        sampler.wait(60)
    pg_after = asyncio.run(_pg_totals(relay))
    histograms_after = _histograms(relay)
    return {
        "accepted_per_s": n / run.seconds,
        "end_to_end_per_s": n / (arrived - started) if arrived else None,
        "relay_cpu_ms_per_message": (
            procs.cpu_seconds(procs.tree([relay.proc.pid])) - relay_cpu  # type: ignore[union-attr]
        )
        / n
        * 1000,
        "postgres_cpu_ms_per_message": (
            procs.cpu_seconds(procs.tree([relay.postmaster_pid() or 0])) - pg_cpu
        )
        / n
        * 1000,
        "dot_to_250_mean_ms": 1000
        * (_mean(histograms, histograms_after, "relay_accept_seconds") or 0.0),
        "group_commit_mean_messages": _mean(
            histograms, histograms_after, "relay_group_commit_messages"
        ),
        "postgres_per_message": {k: (pg_after[k] - pg[k]) / n for k in pg},
        "smtp_source_exit": run.returncode,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size", type=int, default=2048, help="payload bytes (2048)")
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--py-spy", dest="spy", default="", help="sample the first repeat")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="relay-profile-"))
    directory.chmod(0o755)
    sink = SmtpSink()
    relay = RelayServer(directory / "relay", free_port(), sink.port)
    runs = []
    try:
        relay.root.mkdir()
        relay.configure()
        relay.start()
        load.smtp_source(relay.port, args.sessions, 200, args.size)  # warm-up
        sink.wait_count(200, timeout=120)
        for number in range(args.repeat):
            runs.append(one_run(relay, sink, args, args.spy if number == 0 else ""))
            print(json.dumps(runs[-1]))
    finally:
        relay.stop()
        sink.stop()
    keys = [k for k, v in runs[0].items() if isinstance(v, float)]
    medians = {k: statistics.median(r[k] for r in runs if r[k] is not None) for k in keys}
    for key, value in medians.items():
        print(f"{key:28} {value:8.2f}  (runs: {', '.join(f'{r[key]:.2f}' for r in runs)})")
    plan = {"size": args.size, "messages": args.messages, "sessions": args.sessions}
    path = write_results("profile", {"plan": plan, "runs": runs, "medians": medians})
    print(f"results in {path} (and profile-latest.json)")


if __name__ == "__main__":
    main()
