"""Several relay processes on one submission port (`[relay] processes`).

One Python process does about one core's worth of SMTP, policy and DKIM work (the GIL), so
with `processes = N > 1` the `relay serve` process (the primary) does everything it does
alone and also starts N-1 SMTP workers, `relay serve --smtp-worker INDEX`. A worker opens
the submission listeners on the same addresses (SO_REUSEPORT: the kernel spreads new
connections over the processes by a hash of their addresses) and runs a submission handler
with its own group commit, DKIM signer and a small pool on the primary's database, so it
answers 250 only after its own commit, as the primary does. Delivery, the feedback
listener, the side tasks, HTTP, migrations and the embedded PostgreSQL stay in the primary:
they are one per relay, not per core.

Lifecycle:
- A worker asks the kernel for SIGTERM when the primary dies (PR_SET_PDEATHSIG), so a
  `kill -9` of the primary does not leave workers taking mail that nobody delivers.
- The primary starts a worker that exits unexpectedly again after a second.
- The primary forwards SIGHUP (after its own reload succeeded) and, on SIGTERM, stops the
  workers (each drains its sessions and group commit) before it stops the database.

Metrics: each worker answers a connection to `data_dir/run/smtp-worker-INDEX.sock` with a
JSON snapshot of its `relay_*` counters and histograms and of the gauges it shares with the
primary (`SUMMED_GAUGES`); the primary's `/metrics` reads them at scrape time and adds them
to its own sample by sample (`MergedMetrics`), so a counter reads the same whichever process
took the connection. Gauges only the primary sets (queue depth, database up, certificate
expiry) are not in the snapshots.
"""

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

DSN_ENV = "RELAY_SMTP_WORKER_DSN"
"""The primary's database DSN for its workers (not argv: a DSN may hold a password)."""
PARENT_ENV = "RELAY_SMTP_WORKER_PARENT"
"""The primary's pid, to notice a primary that died before PR_SET_PDEATHSIG was set."""
SUMMED_GAUGES = frozenset({"relay_smtp_sessions"})
"""Gauges that workers set too, so that the relay's value is the sum over its processes."""
POOL_SIZE = 4
"""Most PostgreSQL connections of a worker: its group commit needs few."""
_RESTART_SECONDS = 1.0
_READY_SECONDS = 30.0
_SCRAPE_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1
_MAX_UNIX_PATH = 107  # sun_path is 108 bytes with its NUL on Linux

Snapshot = list[dict[str, Any]]
_Samples = dict[tuple[str, tuple[tuple[str, str], ...]], tuple[dict[str, str], float]]


def socket_path(data_dir: str, index: int) -> Path:
    """Where worker `index` serves its metrics snapshot."""
    return Path(data_dir) / "run" / f"smtp-worker-{index}.sock"


# -- the worker's side ----------------------------------------------------------------------


def die_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM when the primary dies (Linux; elsewhere skipped), and
    stop at once if it died already, before the request was made."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM), 0, 0, 0) != 0:
                log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        raise SystemExit("the relay's main process is gone")


def snapshot(registry: Collector = REGISTRY) -> Snapshot:
    """This process's share of the relay's metrics, as JSON-ready families."""
    families = []
    for family in registry.collect():
        if not family.name.startswith("relay_"):
            continue  # process_* and python_* describe this process, not the relay
        if family.type == "gauge" and family.name not in SUMMED_GAUGES:
            continue
        if family.type not in ("counter", "histogram", "summary", "gauge"):
            continue
        families.append(
            {
                "name": family.name,
                "type": family.type,
                "help": family.documentation,
                "unit": family.unit,
                "samples": [[s.name, s.labels, s.value] for s in family.samples],
            }
        )
    return families


async def serve_snapshots(path: Path) -> asyncio.Server:
    """Answer each connection on the Unix socket `path` with `snapshot()` and close it."""
    _clear(path)  # a socket file left by a worker that was killed

    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(json.dumps(snapshot()).encode())
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_unix_server(answer, path=str(path))


def _clear(path: Path) -> None:
    """Make room for the socket `path`: its folder exists (private), no file is there."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.unlink(missing_ok=True)


# -- the primary's side ---------------------------------------------------------------------


class SmtpWorkers:
    """The primary's N-1 SMTP worker processes: started, restarted, signalled, scraped."""

    def __init__(self, config_path: Path, data_dir: str, count: int) -> None:
        self.config_path = config_path.resolve()
        self.count = count
        self.dsn = ""
        self.sockets = {i: socket_path(data_dir, i) for i in range(1, count + 1)}
        too_long = [str(p) for p in self.sockets.values() if len(os.fsencode(p)) > _MAX_UNIX_PATH]
        if too_long:
            raise SystemExit(
                f"[relay] processes: the metrics socket {too_long[0]} is longer than a Unix "
                f"socket path may be ({_MAX_UNIX_PATH} bytes): choose a shorter data_dir"
            )
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self, dsn: str) -> None:
        """Start every worker on the database `dsn` and wait (at most half a minute) until
        each answers on its metrics socket, which it opens once its listeners are up."""
        self.dsn = dsn
        for path in self.sockets.values():
            _clear(path)  # a stale one must not pass for a ready worker
        self._tasks = [
            asyncio.create_task(self._supervise(i), name=f"smtp-worker-{i}") for i in self.sockets
        ]
        try:
            async with asyncio.timeout(_READY_SECONDS):
                for index, path in self.sockets.items():
                    # Polled: readiness is another process's socket, no event of ours.
                    while await _read_snapshot(path, quiet=True) is None:  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
                    log.info("smtp worker %d ready", index)
        except TimeoutError:
            log.warning("not every smtp worker is ready after %.0f s; going on", _READY_SECONDS)

    async def _supervise(self, index: int) -> None:
        env = dict(os.environ, **{DSN_ENV: self.dsn, PARENT_ENV: str(os.getpid())})
        while not self._stopping:
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "relay", "serve", "--config", str(self.config_path),
                    "--smtp-worker", str(index), env=env,
                )  # fmt: skip
            except OSError as exc:  # out of processes or file descriptors, for now
                log.error("cannot start smtp worker %d: %r; trying again in %.0f s",
                          index, exc, _RESTART_SECONDS)  # fmt: skip
                await asyncio.sleep(_RESTART_SECONDS)
                continue
            self._procs[index] = proc
            log.info("smtp worker %d started, pid %d", index, proc.pid)
            code = await proc.wait()
            if self._stopping:
                return
            log.error(
                "smtp worker %d (pid %d) exited with %s; starting it again in %.0f s",
                index, proc.pid, code, _RESTART_SECONDS,
            )  # fmt: skip
            await asyncio.sleep(_RESTART_SECONDS)

    def _running(self) -> list[asyncio.subprocess.Process]:
        return [p for p in self._procs.values() if p.returncode is None]

    def pids(self) -> list[int]:
        return [p.pid for p in self._running()]

    def reload(self) -> None:
        """Forward SIGHUP: each worker reloads the file and its DKIM keys."""
        for proc in self._running():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGHUP)

    async def stop(self, grace: float) -> None:
        """SIGTERM every worker and wait for them; one still running after `grace` seconds
        is killed (what it answered 250 to is committed already)."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        running = self._running()
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if running:
            await asyncio.wait([asyncio.ensure_future(p.wait()) for p in running], timeout=grace)
        for proc in self._running():
            log.warning("smtp worker pid %d did not stop in %.0f s; killing it", proc.pid, grace)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        for path in self.sockets.values():
            _clear(path)

    async def snapshots(self) -> list[Snapshot]:
        """Every worker's metrics now; one that does not answer in time is left out."""
        found = await asyncio.gather(*(_read_snapshot(p) for p in self.sockets.values()))
        return [s for s in found if s is not None]


async def _read_snapshot(path: Path, *, quiet: bool = False) -> Snapshot | None:
    try:
        async with asyncio.timeout(_SCRAPE_SECONDS):
            reader, writer = await asyncio.open_unix_connection(str(path))
            try:
                data = await reader.read()
            finally:
                writer.close()
        found = json.loads(data)
        if not isinstance(found, list):
            raise ValueError("not a list of metric families")
        return found
    except (OSError, TimeoutError, ValueError) as exc:
        if not quiet:
            log.warning("no metrics from %s, left out of this scrape: %r", path.name, exc)
        return None


# -- merging ----------------------------------------------------------------------------------


class MergedMetrics:
    """A collector for `generate_latest`: the families of `registry` with the samples of
    the workers' snapshots added, by metric name and label set. `_created` samples (when a
    series began) take the earliest time instead of a sum."""

    def __init__(self, registry: Collector, snapshots: Iterable[Snapshot]) -> None:
        self.registry = registry
        self.snapshots = list(snapshots)

    def collect(self) -> Iterator[Metric]:
        theirs: dict[str, tuple[dict[str, Any], _Samples]] = {}
        for families in self.snapshots:
            for family in families:
                _, samples = theirs.setdefault(family["name"], (family, {}))
                for name, labels, value in family["samples"]:
                    _add(samples, name, labels, float(value))
        for family in self.registry.collect():
            found = theirs.pop(family.name, None)
            if found is None:
                yield family
                continue
            samples: _Samples = {}
            for sample in family.samples:
                _add(samples, sample.name, sample.labels, sample.value)
            for (name, _), (labels, value) in found[1].items():
                _add(samples, name, labels, value)
            yield _metric(family.name, family.documentation, family.type, family.unit, samples)
        for name, (family, samples) in theirs.items():  # a series no primary module declares
            yield _metric(name, family["help"], family["type"], family["unit"], samples)


def _add(samples: _Samples, name: str, labels: dict[str, str], value: float) -> None:
    key = (name, tuple(sorted(labels.items())))
    if key not in samples:
        samples[key] = (labels, value)
    elif name.endswith("_created"):
        samples[key] = (labels, min(samples[key][1], value))
    else:
        samples[key] = (labels, samples[key][1] + value)


def _metric(name: str, doc: str, typ: str, unit: str, samples: _Samples) -> Metric:
    metric = Metric(name, doc, typ, unit)
    for (sample, _), (labels, value) in samples.items():
        metric.add_sample(sample, labels, value)
    return metric
