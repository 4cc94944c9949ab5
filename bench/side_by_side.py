"""The relay and Postfix on loopback with identical work, measured the same way, in one run.

Each repeat starts a fresh test bed (a temp dir with the relay, its embedded PostgreSQL, a
private Postfix, and one smtp-sink per server), runs every cell on both servers in turn
(the order alternates between repeats), and tears everything down. Per cell (message size x
parallel sessions) and server:
- accepted messages/s: N messages / smtp-source's wall time;
- end-to-end messages/s: N / (first submission .. N-th message counted at the sink);
- CPU seconds per 1,000 messages: the server's processes (and reaped children) from /proc,
  from the start of the submission until the last message reached the sink plus 1 s.
Then per size: the time from the final dot to the 250, p50 and p99, with our own client
offering half the lower of the two servers' peak accepted rates (identical work for both);
and per server the resident memory (sum of RSS, and of PSS) while 1,000 idle connections
are held. Repeats give medians and min-max spreads; ratios are relay/Postfix.
"""

import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench import load, procs
from bench.ports import free_port
from bench.postfix import PostfixServer
from bench.relay_under_test import RelayServer
from bench.sinks import SmtpSink


class Server(Protocol):
    name: str
    port: int

    def roots(self) -> list[int]: ...


@dataclass
class Plan:
    sizes: list[int] = field(default_factory=lambda: [2048, 20480, 102400])
    sessions: list[int] = field(default_factory=lambda: [20, 200])
    messages: int = 5000
    repeat: int = 3
    latency_seconds: float = 10.0
    idle_connections: int = 1000
    dsn: str = ""
    faults: bool = False
    fault_messages: int = 20000


@dataclass
class Bed:
    """What one repeat runs on: each server with its own sink."""

    servers: list[tuple[Server, SmtpSink]]


@contextlib.contextmanager
def test_bed(plan: Plan, directory: Path) -> Iterator[Bed]:
    """Start the relay and Postfix, each relaying to its own smtp-sink; stop all after."""
    directory.chmod(0o755)  # Postfix's daemons run as the postfix user
    with contextlib.ExitStack() as stack:
        relay_sink = SmtpSink(plan.idle_connections)
        stack.callback(relay_sink.stop)
        postfix_sink = SmtpSink(plan.idle_connections)
        stack.callback(postfix_sink.stop)
        relay = RelayServer(directory / "relay", free_port(), relay_sink.port, plan.dsn)
        relay.root.mkdir()
        relay.configure()
        stack.callback(relay.stop)
        relay.start()
        postfix = PostfixServer(directory / "postfix", free_port(), postfix_sink.port)
        postfix.configure()
        stack.callback(postfix.stop)
        postfix.start()
        yield Bed([(relay, relay_sink), (postfix, postfix_sink)])


def throughput(server: Server, sink: SmtpSink, size: int, sessions: int, n: int) -> dict[str, Any]:
    """One smtp-source run; accepted and end-to-end rates and CPU per 1,000 messages."""
    base = sink.count
    cpu_before = procs.cpu_seconds(procs.tree(server.roots()))
    started = time.monotonic()
    run = load.smtp_source(server.port, sessions, n, size)
    arrived = sink.wait_count(base + n, timeout=600, stall=30)
    time.sleep(1.0)  # the last deliveries' bookkeeping (queue file removal, delivered rows)
    cpu = procs.cpu_seconds(procs.tree(server.roots())) - cpu_before
    cell: dict[str, Any] = {
        "accepted_per_s": n / run.seconds,
        "end_to_end_per_s": n / (arrived - started) if arrived else None,
        "cpu_s_per_1000": cpu / n * 1000,
        "delivered": sink.count - base,
    }
    if run.returncode != 0 or arrived is None:
        cell["problem"] = f"smtp-source exit {run.returncode}: {run.errors.strip()[-200:]}"
    return cell


def latency(server: Server, size: int, rate: float, seconds: float) -> dict[str, Any]:
    count = max(100, int(rate * seconds))
    done, failed = asyncio.run(load.latencies(server.port, rate, count, size))
    done.sort()
    if not done:
        return {"rate": rate, "count": count, "failed": failed, "p50_ms": None, "p99_ms": None}
    return {
        "rate": rate,
        "count": count,
        "failed": failed,
        "p50_ms": 1000 * done[len(done) // 2],
        "p99_ms": 1000 * done[min(len(done) - 1, int(len(done) * 0.99))],
    }


def idle_memory(server: Server, connections: int) -> dict[str, Any]:
    """RSS and PSS of the server's processes, idle, then holding `connections` sessions."""

    async def held() -> dict[str, Any]:
        before = procs.tree(server.roots())
        figures: dict[str, Any] = {"rss_idle_mb": procs.rss_bytes(before) / 2**20}
        writers = await load.hold_idle(server.port, connections)
        try:
            await asyncio.sleep(1.0)
            pids = procs.tree(server.roots())
            figures |= {
                "connections": len(writers),
                "processes": len(pids),
                "rss_mb": procs.rss_bytes(pids) / 2**20,
                "pss_mb": procs.pss_bytes(pids) / 2**20,
                "rss_mb_by_name": {
                    name: round(size / 2**20, 1) for name, size in procs.rss_by_name(pids).items()
                },
            }
        finally:
            await load.close_all(writers)
        return figures

    return asyncio.run(held())


def one_repeat(plan: Plan, number: int, log: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-sbs-") as tmp, test_bed(plan, Path(tmp)) as bed:
        order = bed.servers if number % 2 == 0 else bed.servers[::-1]
        for server, sink in order:  # warm-up: processes forked, caches and pools filled
            throughput(server, sink, 2048, 20, 200)
        cells: list[dict[str, Any]] = []
        for size in plan.sizes:
            for sessions in plan.sessions:
                for server, sink in order:
                    cell = throughput(server, sink, size, sessions, plan.messages)
                    cell |= {"server": server.name, "size": size, "sessions": sessions}
                    cells.append(cell)
                    log(f"  {server.name:8} {size // 1024:>4} KB {sessions:>4} sessions: "
                        f"{cell['accepted_per_s']:8.1f} accepted/s "
                        f"{cell['end_to_end_per_s'] or 0:8.1f} end-to-end/s "
                        f"{cell['cpu_s_per_1000']:7.2f} CPU s/1000"
                        + (f"  ({cell['problem']})" if "problem" in cell else ""))  # fmt: skip
        latencies: list[dict[str, Any]] = []
        for size in plan.sizes:
            peaks = [max(c["accepted_per_s"] for c in cells
                         if c["server"] == s.name and c["size"] == size)
                     for s, _ in order]  # fmt: skip
            rate = min(peaks) / 2
            for server, _ in order:
                figures = latency(server, size, rate, plan.latency_seconds)
                latencies.append(figures | {"server": server.name, "size": size})
                log(f"  {server.name:8} {size // 1024:>4} KB at {rate:6.1f}/s: "
                    f"p50 {figures['p50_ms'] or 0:7.1f} ms  p99 {figures['p99_ms'] or 0:7.1f} ms"
                    f"  ({figures['failed']} not accepted)")  # fmt: skip
        memory = []
        for server, _ in order:
            figures = idle_memory(server, plan.idle_connections)
            memory.append(figures | {"server": server.name})
            log(
                f"  {server.name:8} {figures['connections']} idle connections: "
                f"RSS {figures['rss_mb']:.0f} MB (idle before: {figures['rss_idle_mb']:.0f} MB), "
                f"PSS {figures['pss_mb']:.0f} MB, {figures['processes']} processes"
            )
        return {"cells": cells, "latency": latencies, "memory": memory}


# -- summary ------------------------------------------------------------------------------


def spread(values: list[float | None]) -> dict[str, float] | None:
    known = [v for v in values if v is not None]
    if not known:
        return None
    return {"median": statistics.median(known), "min": min(known), "max": max(known),
            "runs": len(known)}  # fmt: skip


FIGURES = [
    ("cells", "accepted_per_s", "accepted msg/s", True),
    ("cells", "end_to_end_per_s", "end-to-end msg/s", True),
    ("cells", "cpu_s_per_1000", "CPU s per 1000 msg", False),
    ("latency", "p50_ms", "dot-to-250 p50 ms", False),
    ("latency", "p99_ms", "dot-to-250 p99 ms", False),
    ("memory", "rss_mb", "RSS MB, 1000 idle conns", False),
    ("memory", "pss_mb", "PSS MB, 1000 idle conns", False),
]


def summarise(repeats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per figure, size and sessions: each server's spread and the ratio."""
    rows = []
    for table, key, label, _ in FIGURES:
        keys = sorted({(r.get("size", 0), r.get("sessions", 0))
                       for rep in repeats for r in rep[table]})  # fmt: skip
        for size, sessions in keys:
            row: dict[str, Any] = {"figure": label, "key": key, "size": size, "sessions": sessions}
            for name in ("relay", "postfix"):
                row[name] = spread([r.get(key) for rep in repeats for r in rep[table]
                                    if r["server"] == name and r.get("size", 0) == size
                                    and r.get("sessions", 0) == sessions])  # fmt: skip
            relay, postfix = row["relay"], row["postfix"]
            row["ratio"] = (relay["median"] / postfix["median"]
                            if relay and postfix and postfix["median"] else None)  # fmt: skip
            rows.append(row)
    return rows


def _fmt(s: dict[str, float] | None) -> str:
    if s is None:
        return "-"
    digits = 2 if s["median"] < 10 else 0 if s["median"] >= 100 else 1
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'figure':26} {'size':>6} {'sess':>5}  {'relay [min-max]':>24}  "
             f"{'postfix [min-max]':>24}  {'relay/postfix':>13}"]  # fmt: skip
    for row in rows:
        size = f"{row['size'] // 1024}KB" if row["size"] else "-"
        sessions = str(row["sessions"]) if row["sessions"] else "-"
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "-"
        lines.append(f"{row['figure']:26} {size:>6} {sessions:>5}  {_fmt(row['relay']):>24}  "
                     f"{_fmt(row['postfix']):>24}  {ratio:>13}")  # fmt: skip
    return "\n".join(lines)


def run(plan: Plan, log: Any = print) -> dict[str, Any]:
    procs.raise_file_limit()
    repeats = []
    for number in range(plan.repeat):
        log(f"repeat {number + 1} of {plan.repeat}")
        repeats.append(one_repeat(plan, number, log))
    rows = summarise(repeats)
    log("")
    log(table(rows))
    return {"plan": asdict(plan), "summary": rows, "repeats": repeats}
