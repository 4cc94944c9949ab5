"""Outbound connections kept open for a moment after their messages are sent.

Postfix's SMTP client caches a connection for `smtp_connection_cache_time_limit` (2 s) after
its work and gives it to the next delivery to the same host: with mail arriving steadily,
new deliveries otherwise pay a TCP handshake, the greeting, EHLO (and STARTTLS) and QUIT for
a handful of messages each. Same here: a connection whose transactions all completed goes
back idle, keyed by the host it reached, for `IDLE_SECONDS`; the next delivery to that host
takes it after an RSET shows it is still alive (a server that hung up in between costs that
round trip, never a deferred message). A connection is reused only while its messages stay
within the destination's `messages_per_connection`.
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from relay.delivery.transaction import Connection

log = logging.getLogger(__name__)
IDLE_SECONDS = 2.0

Target = tuple[str, str, int]
"""(host name, address, port) of a destination host."""


@dataclass
class _Idle:
    connection: Connection
    target: Target
    sent: int
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class IdleConnections:
    """Connections between deliveries, per target; one process's, never shared."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self._idle: dict[Target, list[_Idle]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def take(self, targets: list[Target], messages: int, limit: int) -> tuple[
        Connection, Target, int
    ] | None:  # fmt: skip
        """An idle connection to one of `targets` that can carry `messages` more within
        `limit`, checked with RSET; with the target and how many it has carried."""
        for target in targets:
            waiting = self._idle.get(target, [])
            while waiting:
                idle = waiting.pop()
                if idle.timer is not None:
                    idle.timer.cancel()
                if idle.sent + messages > limit:
                    self._close_later(idle.connection)
                    continue
                if await _alive(idle.connection):
                    return idle.connection, target, idle.sent
                self._close_later(idle.connection)
        return None

    def give_back(self, connection: Connection, target: Target, sent: int) -> None:
        """Keep `connection` (all its transactions completed) for the next delivery."""
        idle = _Idle(connection, target, sent)
        idle.timer = asyncio.get_running_loop().call_later(self.idle_seconds, self._expire, idle)
        self._idle.setdefault(target, []).append(idle)

    def _expire(self, idle: _Idle) -> None:
        waiting = self._idle.get(idle.target, [])
        if idle in waiting:
            waiting.remove(idle)
            if not waiting:
                del self._idle[idle.target]
            self._close_later(idle.connection)

    def _close_later(self, connection: Connection) -> None:
        task = asyncio.get_running_loop().create_task(connection.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """QUIT every idle connection (shutdown)."""
        for waiting in self._idle.values():
            for idle in waiting:
                if idle.timer is not None:
                    idle.timer.cancel()
                self._close_later(idle.connection)
        self._idle.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


async def _alive(connection: Connection) -> bool:
    if not connection.is_connected:
        return False
    with contextlib.suppress(OSError, TimeoutError):
        return await connection.reset()
    return False
