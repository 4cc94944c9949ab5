"""Heavy messages: what one client's MIME bomb or large messages cost everyone else.

Two runs against each server, each while a few other sessions (in a process of their own)
send NOOP in a loop and time every reply:
- a MIME bomb: one message of 50,000 parts in 2 MB (the relay refuses it, `554 5.6.0`);
- large messages: four sessions sending a 24 MB message each at once (under Postfix's
  25 MiB `message_size_limit` in the bench config).
Reported: the heavy messages' replies and times, the other sessions' worst, median and 99th
percentile NOOP reply time, and the memory of the server's own processes (the relay's, or
Postfix's master and its children; not PostgreSQL) before, at its highest during, and a
few seconds after, as proportional set size: a page shared by Postfix's hundreds of smtpd
processes counts once, not once per process as in their resident sizes.
"""

import asyncio
import contextlib
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from typing import Any

from bench import load, procs
from bench.side_by_side import Server

PROBES = 5
BOMB_PARTS = 50_000
LARGE_MESSAGES = 4
LARGE_SIZE = 24 * 1024 * 1024
SETTLE_SECONDS = 5.0


def mime_bomb(parts: int = BOMB_PARTS) -> bytes:
    """A multipart/mixed message of `parts` tiny text parts (about 40 bytes each)."""
    boundary = b"b"
    part = b"--" + boundary + b"\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    head = (
        f"From: <{load.SENDER}>\r\nTo: <{load.RECIPIENT}>\r\nSubject: parts\r\n"
        f"Message-ID: <bomb.{time.time_ns()}@bench.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    ).encode()
    return head + part * parts + b"--" + boundary + b"--\r\n"


class _Sampler:
    """The highest memory (PSS) of a process tree, sampled every 50 ms in a thread."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, procs.pss_bytes(self.pids()))

    def __enter__(self) -> "_Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _probe(port: int, stop: EventType, times: list[float]) -> None:
    """One session sending NOOP until `stop`, timing each reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await load._reply(reader)
        await load._command(reader, writer, f"EHLO {load.HELO}", "250")
        while not stop.is_set():
            started = time.perf_counter()
            await load._command(reader, writer, "NOOP", "250")
            times.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()


def _probe_process(port: int, stop: EventType, ready: EventType, sink: Connection) -> None:
    """PROBES sessions sending NOOP until `stop`; their reply times go back through `sink`."""
    times: list[float] = []

    async def probe_all() -> None:
        probes = [asyncio.ensure_future(_probe(port, stop, times)) for _ in range(PROBES)]
        await asyncio.sleep(0.5)  # connected and answering
        ready.set()
        await asyncio.gather(*probes, return_exceptions=True)

    asyncio.run(probe_all())
    sink.send(times)


@contextlib.contextmanager
def _probing(port: int) -> Iterator[list[float]]:
    """NOOP probes in a process of their own while the block runs: in a thread of the
    sender's process they also timed the sender's own work under the GIL (building and
    dot-stuffing 24 MB), which is no delay of the server's."""
    context = multiprocessing.get_context("spawn")
    stop, ready = context.Event(), context.Event()
    receiving, sending = context.Pipe(duplex=False)
    process = context.Process(target=_probe_process, args=(port, stop, ready, sending))
    process.start()
    times: list[float] = []
    try:
        ready.wait(30)
        yield times
    finally:
        stop.set()
        if receiving.poll(60):
            times.extend(receiving.recv())
        process.join(10)


async def _while_probed(port: int, messages: list[bytes]) -> dict[str, Any]:
    """Send `messages` at once, each on its own connection, while PROBES sessions NOOP."""
    with _probing(port) as times:
        started = time.perf_counter()
        sent = await asyncio.gather(*(load.send(port, m, within=600) for m in messages),
                                    return_exceptions=True)  # fmt: skip
        elapsed = time.perf_counter() - started
    replies = [s.reply if isinstance(s, load.Sent) else repr(s) for s in sent]
    after_dot = [s.seconds for s in sent if isinstance(s, load.Sent)]
    return {
        "replies": replies,
        "seconds": elapsed,
        "reply_after_dot_s": max(after_dot, default=None),
        "noop_replies": len(times),
        "noop_worst_ms": 1000 * max(times, default=0.0),
        "noop_p50_ms": 1000 * statistics.median(times) if times else None,
        "noop_p99_ms": 1000 * sorted(times)[int(len(times) * 0.99)] if times else None,
        "noop_over_100ms": sum(t > 0.1 for t in times),
    }


@contextlib.contextmanager
def _memory(pids: Callable[[], list[int]], result: dict[str, Any]) -> Iterator[None]:
    result["pss_before_mb"] = procs.pss_bytes(pids()) / 2**20
    with _Sampler(pids) as sampler:
        yield
    result["pss_peak_mb"] = sampler.peak / 2**20
    time.sleep(SETTLE_SECONDS)
    result["pss_after_mb"] = procs.pss_bytes(pids()) / 2**20


def run_one(server: Server, own_pids: Callable[[], list[int]], messages: list[bytes]) -> dict:
    result: dict[str, Any] = {}
    with _memory(own_pids, result):
        result |= asyncio.run(_while_probed(server.port, messages))
    return result


def bomb_run(server: Server, own_pids: Callable[[], list[int]]) -> dict[str, Any]:
    return run_one(server, own_pids, [mime_bomb()])


def large_run(server: Server, own_pids: Callable[[], list[int]]) -> dict[str, Any]:
    messages = [
        load.message(f"<large.{i}.{time.time_ns()}@bench.example>", LARGE_SIZE, body="text")
        for i in range(LARGE_MESSAGES)
    ]
    return run_one(server, own_pids, messages)


def table(results: dict[str, Any]) -> str:
    """One line per run and server."""
    lines = [f"{'run':24} {'server':8} {'reply':28} {'NOOP worst ms':>13} {'p50 ms':>7} "
             f"{'PSS MB before':>13} {'peak':>6} {'after':>6}"]  # fmt: skip
    for key, label in (("bomb", f"MIME bomb, {BOMB_PARTS} parts"),
                       ("large", f"{LARGE_MESSAGES} x {LARGE_SIZE >> 20} MB at once")):  # fmt: skip
        for server in ("relay", "postfix"):
            r = results.get(f"{key}_{server}")
            if r is None or "error" in r:
                continue
            reply = sorted(set(r["replies"]))[0][:28]
            lines.append(
                f"{label:24} {server:8} {reply:28} {r['noop_worst_ms']:13.1f} "
                f"{r['noop_p50_ms'] or 0:7.1f} {r['pss_before_mb']:13.0f} "
                f"{r['pss_peak_mb']:6.0f} {r['pss_after_mb']:6.0f}"
            )
    return "\n".join(lines)
