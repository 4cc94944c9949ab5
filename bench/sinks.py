"""The destinations the servers under test deliver to, and how the bench counts arrivals.

`SmtpSink` is Postfix's own `smtp-sink` with running counters (`-c`): a C event loop that
costs next to nothing, so it never limits either server. Its counter line is read as it is
written, and the time each count is reached is kept, for the end-to-end rate.
`CaptureSink` runs `bench.capture_sink` (which records Message-IDs and can refuse some) for
the fault runs, where which messages arrived matters more than speed.
"""

import contextlib
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from bench.ports import free_port, wait_port

_MESG = re.compile(rb"mesg=(\d+)")


class SmtpSink:
    """`smtp-sink -c` on 127.0.0.1, counting messages received (the final dot)."""

    def __init__(self, max_connections: int = 1000) -> None:
        self.port = free_port()
        self.count = 0
        self._changed = threading.Condition()
        self._reached: list[float] = []
        self.proc = subprocess.Popen(
            ["/usr/sbin/smtp-sink", "-c", "-u", "postfix", "-m", str(max_connections),
             f"127.0.0.1:{self.port}", "1024"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True, name="smtp-sink")
        self._reader.start()
        wait_port(self.port)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(65536):
            found = _MESG.findall(chunk)
            if found:
                now = time.monotonic()
                with self._changed:
                    self.count = max(self.count, int(found[-1]))
                    self._reached.append(now)
                    self._changed.notify_all()

    def wait_count(self, count: int, timeout: float, stall: float = 30.0) -> float | None:
        """Block until `count` messages arrived; return when (monotonic), or None if the
        count did not move for `stall` seconds or `timeout` ran out."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.count < count:
                last = self._reached[-1] if self._reached else time.monotonic()
                left = min(deadline, last + stall) - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(min(left, 1.0))
            return self._reached[-1] if self._reached else time.monotonic()

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class CaptureSink:
    """`python -m bench.capture_sink` in a child process; arrivals read from its ID file."""

    def __init__(self, directory: Path, fail_every: int = 0) -> None:
        self.port = free_port()
        self.ids_path = directory / f"capture-{self.port}.ids"
        self.ids_path.touch()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.capture_sink", "--port", str(self.port),
             "--ids", str(self.ids_path), "--fail-every", str(fail_every)],
            stdout=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        wait_port(self.port)

    def ids(self) -> Counter[str]:
        """How many times each Message-ID arrived."""
        lines = self.ids_path.read_text(encoding="ascii", errors="replace").splitlines()
        return Counter(line for line in lines if line)

    @property
    def count(self) -> int:
        return sum(self.ids().values())

    def wait_ids(self, wanted: set[str], timeout: float) -> Counter[str]:
        """Wait until every wanted ID arrived or `timeout` ran out; return what arrived."""
        deadline = time.monotonic() + timeout
        while True:
            arrived = self.ids()
            if wanted <= arrived.keys() or time.monotonic() > deadline:
                return arrived
            time.sleep(0.25)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
