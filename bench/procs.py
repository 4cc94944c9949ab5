"""CPU time and memory of a server's processes, read from /proc.

A server here is a tree of processes that is not always our child: Postfix's master and the
embedded PostgreSQL's postmaster daemonise, so each server names its root processes and the
tree under them is found by parent id at the moment of each sample. CPU time counts each
live process's own time plus the time of the children it has reaped (`cutime`, `cstime`),
so short-lived workers (Postfix's smtpd and smtp, PostgreSQL backends) are not missed, and a
difference between two samples is exact even when children come and go in between.
"""

import os
from collections.abc import Iterable
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 is the state)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def tree(roots: Iterable[int]) -> list[int]:
    """The roots that still exist and all their descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid for pid in roots if Path(f"/proc/{pid}").exists()]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """User plus system time of the processes and of their reaped children."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / _TICKS


def _kib(path: str, key: str) -> int:
    try:
        text = Path(path).read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def rss_bytes(pids: Iterable[int]) -> int:
    """Sum of resident set sizes (shared pages count once per process, as `ps` shows)."""
    return sum(_kib(f"/proc/{pid}/status", "VmRSS:") for pid in pids) * 1024


def rss_by_name(pids: Iterable[int]) -> dict[str, int]:
    """Sum of resident set sizes per command name (python, postgres, smtpd, ...)."""
    sums: dict[str, int] = {}
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        sums[name] = sums.get(name, 0) + rss_bytes([pid])
    return sums


def pss_bytes(pids: Iterable[int]) -> int:
    """Sum of proportional set sizes: shared pages divided among the processes sharing them."""
    return sum(_kib(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in pids) * 1024


def raise_file_limit() -> None:
    """Allow as many open files as the hard limit: the bench holds 1,000+ sockets."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
