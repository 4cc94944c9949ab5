"""Faults under load, with counts: what a crash, a database outage, a failing destination,
idle connections and a slow client do to each server.

Every message of these runs carries its own Message-ID, the client remembers which got 250,
and the sink (`bench.capture_sink`) records which arrived, so a loss (a 250 that never
arrives), a duplicate (one that arrives twice) and an extra (a message delivered though
its client saw no 250: the outcome was unknown, as after a crash) are counted, not guessed.
- kill -9 of the relay halfway through the run, then a restart;
- the embedded PostgreSQL stopped (`pg_ctl stop -m fast`) for 10 s mid-run, then started;
- the destination answering 421 to every third delivery (both servers);
- time to the banner while 500 idle connections are held (both servers);
- a client trickling DATA, one line a second: the relay cuts it at its data timeout
  (5 s in the bench config); Postfix has no whole-DATA limit, only smtpd_timeout per read;
- a MIME bomb and four large messages at once (`bench.heavy`), with the other sessions'
  worst reply time and the memory before, during and after (both servers).
"""

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import heavy, load, procs
from bench.ports import free_port
from bench.postfix import PostfixServer
from bench.relay_under_test import RelayServer
from bench.side_by_side import Plan, Server
from bench.sinks import CaptureSink

SESSIONS = 20
SIZE = 2048
DATA_TIMEOUT = 5.0


@contextlib.contextmanager
def relay_with(directory: Path, sink: CaptureSink, dsn: str) -> Iterator[RelayServer]:
    relay = RelayServer(directory, free_port(), sink.port, dsn, data_timeout=DATA_TIMEOUT)
    directory.mkdir()
    relay.configure()
    try:
        relay.start()
        yield relay
    finally:
        relay.stop()


@contextlib.contextmanager
def postfix_with(directory: Path, sink: CaptureSink) -> Iterator[PostfixServer]:
    postfix = PostfixServer(directory, free_port(), sink.port)
    postfix.configure()
    try:
        postfix.start()
        yield postfix
    finally:
        postfix.stop()


@contextlib.contextmanager
def capture(directory: Path, fail_every: int = 0) -> Iterator[CaptureSink]:
    sink = CaptureSink(directory, fail_every)
    try:
        yield sink
    finally:
        sink.stop()


def outcome(sent: load.Recorded, sink: CaptureSink, tag: str, timeout: float) -> dict[str, Any]:
    """Wait for every accepted message at the sink; count losses, duplicates and extras."""
    started = time.monotonic()
    arrived = sink.wait_ids(sent.accepted, timeout)
    ours = {i: n for i, n in arrived.items() if i.startswith(f"<{tag}.")}
    return {
        "attempts": sent.attempts,
        "replies": dict(sent.replies),
        "accepted": len(sent.accepted),
        "delivered": len(sent.accepted & ours.keys()),
        "missing": len(sent.accepted - ours.keys()),
        "duplicates": sum(n - 1 for n in ours.values() if n > 1),
        "extra": len(ours.keys() - sent.accepted),
        "drain_s": time.monotonic() - started,
        "waited_up_to_s": timeout,
    }


async def _run_with_fault(
    port: int, messages: int, tag: str, at: float, fault: Any
) -> tuple[load.Recorded, dict[str, Any]]:
    """Send while `fault` (a blocking function, run in a thread) happens once `at` of the
    messages were accepted; also count the 250s that came after the fault was over."""
    event = asyncio.Event()
    latest: list[load.Recorded] = []

    def progress(sent: load.Recorded) -> None:
        latest[:] = [sent]
        if not event.is_set() and len(sent.accepted) >= messages * at:
            event.set()

    details: dict[str, Any] = {}

    async def trigger() -> None:
        await event.wait()
        details["accepted_before"] = len(latest[0].accepted)
        details.update(await asyncio.to_thread(fault))
        details["accepted_at_recovery"] = len(latest[0].accepted)

    task = asyncio.create_task(trigger())
    sent = await load.record(port, messages, SESSIONS, SIZE, tag, progress)
    if not event.is_set():  # too few accepted to reach the trigger: no fault happened
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task  # a fault under way (a restart) finishes before the counting
    if "accepted_at_recovery" in details:
        details["accepted_after_recovery"] = len(sent.accepted) - details["accepted_at_recovery"]
    return sent, details


def kill9(relay: RelayServer, sink: CaptureSink, messages: int) -> dict[str, Any]:
    def crash() -> dict[str, Any]:
        started = time.monotonic()
        relay.kill9()
        relay.start()
        return {"down_s": time.monotonic() - started}

    sent, details = asyncio.run(_run_with_fault(relay.port, messages, "k9", 0.5, crash))
    return outcome(sent, sink, "k9", timeout=180) | details


def postgres_outage(relay: RelayServer, sink: CaptureSink, messages: int) -> dict[str, Any]:
    def outage() -> dict[str, Any]:
        options = relay.stop_postgres()
        time.sleep(10)
        started = time.monotonic()
        relay.start_postgres(options)
        return {"outage_s": 10, "restart_s": time.monotonic() - started}

    sent, details = asyncio.run(_run_with_fault(relay.port, messages, "pg", 0.3, outage))
    return outcome(sent, sink, "pg", timeout=180) | details


def sink_421(server: Server, sink: CaptureSink, messages: int) -> dict[str, Any]:
    started = time.monotonic()
    tag = f"f421{server.name}"
    sent = asyncio.run(load.record(server.port, messages, SESSIONS, SIZE, tag))
    result = outcome(sent, sink, tag, timeout=300)
    result["all_delivered_s"] = time.monotonic() - started
    return result


def banner_under_idle(server: Server, idle: int, probes: int = 50) -> dict[str, Any]:
    async def measure() -> dict[str, Any]:
        writers = await load.hold_idle(server.port, idle)
        try:
            times = sorted(await load.banner_times(server.port, probes))
        finally:
            await load.close_all(writers)
        return {
            "idle": len(writers),
            "probes": probes,
            "p50_ms": 1000 * times[len(times) // 2],
            "max_ms": 1000 * times[-1],
        }

    return asyncio.run(measure())


def slow_client(server: Server, limit: float) -> dict[str, Any]:
    result = asyncio.run(load.trickle(server.port, interval=1.0, limit=limit))
    return {"cut": result.cut, "after_s": result.seconds, "reply": result.reply}


def _scenario(results: dict[str, Any], key: str, what: str, log: Any, action: Any) -> None:
    """Run one scenario; a failure is recorded and logged, and the next scenario runs."""
    log(f"faults: {what}")
    try:
        results[key] = action()
    except Exception as exc:
        results[key] = {"error": repr(exc)}
    log(f"  {results[key]}")


def _check_alive(relay: RelayServer, results: dict[str, Any], key: str, log: Any) -> None:
    """After a scenario: if the relay process has exited, keep its last log lines, and the
    lines before them that say why it stopped (`relay.serve.relay`'s), with the scenario's result
    and start it again for the next scenarios."""
    if relay.proc is None or relay.proc.poll() is None:
        return
    lines = relay.log().splitlines()
    tail = [line for line in lines[:-40] if " relay.serve.relay: " in line] + lines[-40:]
    results[key]["relay_exited"] = relay.proc.returncode
    results[key]["relay_log_tail"] = tail
    log(f"  the relay exited with {relay.proc.returncode}; its last log lines:")
    for line in tail:
        log(f"    {line}")
    relay.start()


def run(plan: Plan, log: Any = print) -> dict[str, Any]:
    procs.raise_file_limit()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        with capture(root) as sink, relay_with(root / "relay", sink, plan.dsn) as relay:
            messages = plan.fault_messages
            _scenario(results, "kill9", f"kill -9 of the relay halfway through {messages} "
                      "messages", log, lambda: kill9(relay, sink, messages))  # fmt: skip
            _check_alive(relay, results, "kill9", log)
            if plan.dsn:
                log("faults: PostgreSQL outage skipped (--dsn names a server the bench does "
                    "not own)")  # fmt: skip
            else:
                n = max(3000, plan.fault_messages // 4)
                _scenario(results, "postgres_outage", f"PostgreSQL stopped for 10 s during {n} "
                          "messages", log, lambda: postgres_outage(relay, sink, n))  # fmt: skip
                _check_alive(relay, results, "postgres_outage", log)
            _scenario(results, "slow_client_relay", "slow client trickling DATA (relay)", log,
                      lambda: slow_client(relay, DATA_TIMEOUT + 10))  # fmt: skip
            _scenario(results, "banner_relay", "time to banner, 500 idle connections (relay)",
                      log, lambda: banner_under_idle(relay, 500))  # fmt: skip
            _heavy_runs(results, "relay", relay, lambda: procs.tree(relay.own_pids()), log)
        with capture(root) as sink, postfix_with(root / "postfix", sink) as postfix:
            _scenario(results, "slow_client_postfix", "slow client trickling DATA (postfix)",
                      log, lambda: slow_client(postfix, 20))  # fmt: skip
            _scenario(results, "banner_postfix", "time to banner, 500 idle connections "
                      "(postfix)", log, lambda: banner_under_idle(postfix, 500))  # fmt: skip
            _heavy_runs(results, "postfix", postfix, lambda: procs.tree(postfix.roots()), log)
        n = max(300, plan.fault_messages // 10)
        for name in ("relay", "postfix"):
            with capture(root, fail_every=3) as sink:
                context = (relay_with(root / "relay-421", sink, plan.dsn) if name == "relay"
                           else postfix_with(root / "postfix-421", sink))  # fmt: skip
                with context as server:
                    what = f"sink answers 421 to every third delivery, {n} messages ({name})"

                    def action(server: Server = server, sink: CaptureSink = sink) -> Any:
                        return sink_421(server, sink, n)

                    _scenario(results, f"sink_421_{name}", what, log, action)
    log("")
    log(fault_table(results))
    log("")
    log(heavy.table(results))
    return results


def _heavy_runs(results: dict[str, Any], name: str, server: Server, own_pids: Any,
                log: Any) -> None:  # fmt: skip
    _scenario(results, f"bomb_{name}", f"MIME bomb of {heavy.BOMB_PARTS} parts ({name})", log,
              lambda: heavy.bomb_run(server, own_pids))  # fmt: skip
    _scenario(results, f"large_{name}", f"{heavy.LARGE_MESSAGES} messages of "
              f"{heavy.LARGE_SIZE >> 20} MB at once ({name})", log,
              lambda: heavy.large_run(server, own_pids))  # fmt: skip


LABELS = {
    "kill9": ("kill -9 + restart", "relay"),
    "postgres_outage": ("PostgreSQL down 10 s", "relay"),
    "sink_421_relay": ("sink 421 on every 3rd", "relay"),
    "sink_421_postfix": ("sink 421 on every 3rd", "postfix"),
}


def fault_table(results: dict[str, Any]) -> str:
    """The counts of the delivery faults, then the connection faults, one line each."""
    columns = ("sent", "250", "4xx", "refused", "dropped", "arrived", "missing", "dup", "extra")
    lines = [f"{'fault':24} {'server':8} " + " ".join(f"{c:>7}" for c in columns) + " drain s"]
    for key, (label, server) in LABELS.items():
        r = results.get(key)
        if r is None or "error" in r:
            continue
        replies = r["replies"]
        counts = (r["attempts"], r["accepted"], replies.get("4", 0), replies.get("connect", 0),
                  replies.get("dropped", 0), r["delivered"], r["missing"], r["duplicates"],
                  r["extra"])  # fmt: skip
        lines.append(f"{label:24} {server:8} " + " ".join(f"{c:>7}" for c in counts)
                     + f" {r['drain_s']:7.1f}")  # fmt: skip
    for server in ("relay", "postfix"):
        banner = results.get(f"banner_{server}")
        if banner and "error" not in banner:
            lines.append(f"time to banner, {banner['idle']} idle connections, {server}: "
                         f"p50 {banner['p50_ms']:.1f} ms, max {banner['max_ms']:.1f} ms "
                         f"({banner['probes']} connections)")  # fmt: skip
        slow = results.get(f"slow_client_{server}")
        if slow and "error" not in slow:
            verdict = (f"cut after {slow['after_s']:.1f} s: {slow['reply']}" if slow["cut"]
                       else f"not cut after {slow['after_s']:.0f} s")  # fmt: skip
            lines.append(f"client trickling DATA, {server}: {verdict}")
    return "\n".join(lines)
