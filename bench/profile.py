"""`python -m bench.profile`: the relay alone under smtp-source, with where its CPU goes.

    python -m bench.profile [--size 2048] [--messages 4000] [--sessions 20] [--repeat 3]
                            [--py-spy FILE] [--rate PER_SECOND [--body text]]

The relay runs as in the side-by-side bench (`bench.relay_under_test`: policy and DKIM on,
one process per core, its embedded PostgreSQL). After a warm-up, each repeat sends
`--messages` with Postfix's smtp-source and reports accepted and end-to-end messages/s, CPU
per message of the relay's processes and of PostgreSQL's apart, the mean time from the final
dot to the 250 (the relay's own `relay_accept_seconds` histogram) and its stages (policy,
signing, storage: `relay_accept_stage_seconds`), the mean number of
messages per group commit (`relay_group_commit_messages`) and PostgreSQL's work per
message from its statistics views: transactions, rows written, read by index, WAL records,
full-page images and bytes, WAL buffers found full, checkpoints, and data pages written out
(by the checkpointer, the background writer or the backends themselves). With
`--py-spy FILE` the first repeat is sampled with py-spy (`pip install py-spy`) into FILE as
collapsed stacks, for `python -m bench.profile_report FILE`. With `--rate` the messages
are offered at that steady rate by the bench's own client (a new connection each, as the
side-by-side latency figure does) instead of smtp-source, and the client's p50 and p99
final-dot-to-250 are reported: where the wait goes below saturation; `--body text` then
sends lines of newsletter words instead of smtp-source's lines of X. This is the tool each step in
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
from prometheus_client.parser import text_string_to_metric_families

from bench import load, procs
from bench.ports import free_port
from bench.relay_under_test import RelayServer
from bench.results import write_results
from bench.sinks import SmtpSink

_HISTOGRAMS = (
    "relay_accept_seconds",
    "relay_accept_stage_seconds",
    "relay_group_commit_messages",
)
_STAGES = ("policy", "signing", "storage")
_PG_TOTALS = (
    "SELECT xact_commit, tup_inserted, tup_updated, tup_fetched, wal_records, wal_fpi, "
    "wal_bytes::bigint, wal_buffers_full, checkpoints_timed + checkpoints_req AS checkpoints, "
    "buffers_checkpoint + buffers_clean + buffers_backend AS buffers_written "
    "FROM pg_stat_database, pg_stat_wal, pg_stat_bgwriter WHERE datname = current_database()"
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
    """Sums and counts of the relay's DATA-to-250, its stages and group-commit-size
    histograms, keyed `name_sum` or `name_sum:stage`."""
    url = f"http://127.0.0.1:{relay.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        if family.name not in _HISTOGRAMS:
            continue
        for sample in family.samples:
            if sample.name.endswith(("_sum", "_count")):
                stage = sample.labels.get("stage")
                values[f"{sample.name}:{stage}" if stage else sample.name] = sample.value
    return values


def _mean(
    before: dict[str, float], after: dict[str, float], histogram: str, stage: str = ""
) -> float | None:
    suffix = f":{stage}" if stage else ""
    count = after[f"{histogram}_count{suffix}"] - before[f"{histogram}_count{suffix}"]
    total = after[f"{histogram}_sum{suffix}"] - before[f"{histogram}_sum{suffix}"]
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
    if args.rate:
        offered = _offer(relay, args)
    else:
        run = load.smtp_source(relay.port, args.sessions, n, args.size)
        offered = {"accepted_per_s": n / run.seconds, "smtp_source_exit": run.returncode}
    arrived = sink.wait_count(base + n, timeout=600)
    time.sleep(1.0)
    if sampler is not None:
        sampler.send_signal(2)
        sampler.wait(60)
    pg_after = asyncio.run(_pg_totals(relay))
    histograms_after = _histograms(relay)
    return {
        **offered,
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
        **{
            f"{stage}_mean_ms": 1000
            * (_mean(histograms, histograms_after, "relay_accept_stage_seconds", stage) or 0.0)
            for stage in _STAGES
        },
        "group_commit_mean_messages": _mean(
            histograms, histograms_after, "relay_group_commit_messages"
        ),
        "postgres_per_message": {k: (pg_after[k] - pg[k]) / n for k in pg},
    }


def _offer(relay: RelayServer, args: argparse.Namespace) -> dict[str, Any]:
    """`--rate`: the messages offered at a steady rate by our own client (open loop, a new
    connection each), with the final-dot-to-250 times it saw."""
    done, failed = asyncio.run(
        load.latencies(relay.port, args.rate, args.messages, args.size, args.body)
    )
    done.sort()
    if failed or not done:
        raise SystemExit(f"{failed} of {args.messages} messages were not accepted")
    return {
        "offered_per_s": args.rate,
        "client_p50_ms": 1000 * done[len(done) // 2],
        "client_p99_ms": 1000 * done[min(len(done) - 1, int(len(done) * 0.99))],
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
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="offer the messages at this rate (per second) with our own client instead of "
        "smtp-source's sessions, and report the client's p50/p99 final-dot-to-250",
    )
    parser.add_argument(
        "--body",
        choices=("x", "text"),
        default="x",
        help="with --rate: lines of X as smtp-source sends (x), or of newsletter words (text)",
    )
    args = parser.parse_args()
    if args.body != "x" and not args.rate:
        parser.error("--body text needs --rate: smtp-source sends only lines of X")
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
        shutil.rmtree(directory, ignore_errors=True)  # its PostgreSQL: up to a GB a run
    keys = [k for k, v in runs[0].items() if isinstance(v, float)]
    medians = {k: statistics.median(r[k] for r in runs if r[k] is not None) for k in keys}
    for key, value in medians.items():
        print(f"{key:28} {value:8.2f}  (runs: {', '.join(f'{r[key]:.2f}' for r in runs)})")
    plan = {"size": args.size, "messages": args.messages, "sessions": args.sessions}
    plan |= {"rate": args.rate, "body": args.body} if args.rate else {}
    path = write_results("profile", {"plan": plan, "runs": runs, "medians": medians})
    print(f"results in {path} (and profile-latest.json)")


if __name__ == "__main__":
    main()
