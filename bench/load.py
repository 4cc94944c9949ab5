"""The work both servers get: Postfix's smtp-source, and a small asyncio SMTP client.

smtp-source is the load generator Postfix's own author measures with; it speaks plain SMTP
with one message per connection (no `-d`), and its wall time gives the accepted rate.
What it cannot do, the asyncio client does: time each final dot to its reply (latency at a
fixed offered rate), remember which Message-IDs got 250 (the fault runs), hold idle
connections, time banners, and trickle DATA. Sender and recipient are the same for both
servers: the bench tenant's domain and the routed sink domain.
"""

import asyncio
import contextlib
import random
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate

SENDER = "load@bench.example"
RECIPIENT = "rcpt@sink.example"
HELO = "client.bench.example"


@dataclass
class SourceRun:
    seconds: float
    returncode: int
    errors: str


def smtp_source(port: int, sessions: int, messages: int, size: int) -> SourceRun:
    """Send `messages` of `size` payload bytes over `sessions` parallel sessions."""
    command = [
        "/usr/sbin/smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size),
        "-f", SENDER, "-t", RECIPIENT, "-M", HELO, f"127.0.0.1:{port}",
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    return SourceRun(
        time.monotonic() - started, done.returncode, (done.stdout + done.stderr)[-500:]
    )


def message(message_id: str, size: int, body: str = "x") -> bytes:
    """A message like smtp-source's (headers, then lines of X), with our own Message-ID;
    with `body="text"`, lines of newsletter words instead, which compress as mail does
    (lines of X compress about 35 times, plain text about 5 with PostgreSQL's pglz)."""
    head = (
        f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nDate: {formatdate()}\r\n"
        f"Message-ID: {message_id}\r\nSubject: bench\r\n\r\n"
    )
    if body == "text":
        return head.encode() + newsletter_text(size, size)
    line = b"X" * 78 + b"\r\n"
    lines = line * (size // len(line)) + b"X" * (size % len(line)) + b"\r\n"
    return head.encode() + lines


def newsletter_text(seed: int, length: int) -> bytes:
    """Lines of twelve words from a newsletter's vocabulary, at least `length` bytes."""
    rng = random.Random(seed)
    words = "the of offer your order news week price free shipping update account".split()
    lines = []
    total = 0
    while total < length:
        line = " ".join(rng.choice(words) for _ in range(12)).encode() + b"\r\n"
        lines.append(line)
        total += len(line)
    return b"".join(lines)


class SmtpError(Exception):
    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


async def _reply(reader: asyncio.StreamReader) -> str:
    """One (possibly multi-line) reply; its last line."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionResetError("connection closed")
        if line[3:4] != b"-":
            return line.decode("ascii", "replace").rstrip()


async def _command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str,
                   expect: str) -> str:  # fmt: skip
    writer.write(line.encode() + b"\r\n")
    reply = await _reply(reader)
    if not reply.startswith(expect):
        raise SmtpError(reply)
    return reply


@dataclass
class Sent:
    reply: str
    seconds: float
    """From writing the final dot to reading the reply."""


async def send(port: int, data: bytes, within: float = 120.0) -> Sent:
    """One message over one new connection: EHLO, MAIL, RCPT, DATA, then QUIT."""
    async with asyncio.timeout(within):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            banner = await _reply(reader)
            if not banner.startswith("220"):
                raise SmtpError(banner)
            await _command(reader, writer, f"EHLO {HELO}", "250")
            await _command(reader, writer, f"MAIL FROM:<{SENDER}>", "250")
            await _command(reader, writer, f"RCPT TO:<{RECIPIENT}>", "250")
            await _command(reader, writer, "DATA", "354")
            writer.write(data)  # no line of ours starts with a dot
            await writer.drain()
            started = time.perf_counter()
            writer.write(b".\r\n")
            reply = await _reply(reader)
            seconds = time.perf_counter() - started
            with contextlib.suppress(OSError, ConnectionError):
                writer.write(b"QUIT\r\n")
                await writer.drain()
            return Sent(reply, seconds)
        finally:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()


async def latencies(
    port: int, rate: float, count: int, size: int, body: str = "x"
) -> tuple[list[float], int]:
    """Offer `count` messages at `rate` per second (open loop); return the final-dot-to-250
    times of the accepted ones and the number of the others."""
    done: list[float] = []
    failed = 0
    limit = asyncio.Semaphore(400)

    async def one(i: int) -> None:
        nonlocal failed
        async with limit:
            try:
                message_id = f"<lat.{i}.{time.time_ns()}@bench.example>"
                sent = await send(port, message(message_id, size, body))
            except (OSError, SmtpError, TimeoutError, ConnectionError):
                failed += 1
                return
        if sent.reply.startswith("250"):
            done.append(sent.seconds)
        else:
            failed += 1

    start = time.monotonic()
    tasks = []
    for i in range(count):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return done, failed


@dataclass
class Recorded:
    """What a recording client saw: which Message-IDs got 250, and how the others fared."""

    accepted: set[str] = field(default_factory=set)
    replies: Counter[str] = field(default_factory=Counter)
    """Count per first digit of the final reply ("2", "4", "5") or "connect"/"dropped"."""
    attempts: int = 0


async def record(
    port: int, messages: int, sessions: int, size: int, tag: str,
    progress: Callable[[Recorded], None] | None = None,
) -> Recorded:  # fmt: skip
    """Send `messages` over `sessions` parallel workers, one message per connection, each
    with its own Message-ID. A refused or failed message is not retried (only a 250 is a
    promise); after one, the worker pauses 100 ms, as a client backing off would, so an
    outage does not use up the run."""
    result = Recorded()
    numbers = iter(range(messages))

    async def worker() -> None:
        for i in numbers:
            message_id = f"<{tag}.{i}@bench.example>"
            result.attempts += 1
            try:
                sent = await send(port, message(message_id, size), within=60)
            except SmtpError as exc:
                outcome = exc.reply[:1]
            except ConnectionRefusedError:
                outcome = "connect"
            except (OSError, ConnectionError, TimeoutError):
                outcome = "dropped"
            else:
                outcome = sent.reply[:1]
                if sent.reply.startswith("250"):
                    result.accepted.add(message_id)
            result.replies[outcome] += 1
            if outcome != "2":
                await asyncio.sleep(0.1)
            if progress is not None:
                progress(result)

    await asyncio.gather(*(worker() for _ in range(sessions)))
    return result


async def hold_idle(port: int, count: int, within: float = 120.0) -> list[asyncio.StreamWriter]:
    """Open `count` connections and read each banner; the caller closes them."""
    writers: list[asyncio.StreamWriter] = []
    limit = asyncio.Semaphore(100)

    async def one() -> None:
        async with limit:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
            await _reply(reader)

    async with asyncio.timeout(within):
        await asyncio.gather(*(one() for _ in range(count)))
    return writers


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
    for writer in writers:
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()


async def banner_times(port: int, count: int) -> list[float]:
    """Connect `count` times in turn; seconds from connect() to the banner's 220."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        banner = await asyncio.wait_for(_reply(reader), 60)
        times.append(time.perf_counter() - started)
        writer.write(b"QUIT\r\n")
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()
        if not banner.startswith("220"):
            raise SmtpError(banner)
    return times


@dataclass
class Trickle:
    cut: bool
    seconds: float
    reply: str


async def trickle(port: int, interval: float, limit: float) -> Trickle:
    """Start DATA and send one short line every `interval` s; report when the server cut
    the session (and its last words), or that it had not after `limit` s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await _reply(reader)
        for line, expect in ((f"EHLO {HELO}", "250"), (f"MAIL FROM:<{SENDER}>", "250"),
                             (f"RCPT TO:<{RECIPIENT}>", "250"), ("DATA", "354")):  # fmt: skip
            await _command(reader, writer, line, expect)
        started = time.monotonic()
        reading = asyncio.ensure_future(reader.readline())
        while time.monotonic() - started < limit:
            done, _ = await asyncio.wait({reading}, timeout=interval)
            if done:
                line = reading.result().decode("ascii", "replace").strip()
                return Trickle(True, time.monotonic() - started, line or "(closed)")
            try:
                writer.write(b"slow line\r\n")
                await writer.drain()
            except (OSError, ConnectionError):
                return Trickle(True, time.monotonic() - started, "(reset)")
        reading.cancel()
        return Trickle(False, time.monotonic() - started, "")
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()
