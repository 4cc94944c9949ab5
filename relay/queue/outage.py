"""What the relay's recurring work does when PostgreSQL is down, restarting or out of reach.

`relay.queue.errors.DATABASE_ERRORS` says what an outage looks like; this module says what
a round of background work (reputation, retention, canaries, feedback processing, domain
verdicts) does about one: log it once per round and try again after the usual pause. The
database coming back needs nobody's help, and a round that is late judges nothing wrong.
Anything else a round raises is a bug: it reaches the task's supervisor, which logs it with
its traceback and starts the task again (`relay.serve.relay`).
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from relay.queue.errors import DATABASE_ERRORS

log = logging.getLogger(__name__)


async def every(
    what: str, work: Callable[[], Awaitable[object]], pause: Callable[[], Awaitable[None]]
) -> None:
    """Run `work`, then `pause`, until cancelled; an outage during `work` is logged as a
    warning naming `what`, and the next round tries again."""
    while True:
        try:
            await work()
        except DATABASE_ERRORS as exc:
            log.warning("%s: the database did not answer, trying again: %r", what, exc)
        await pause()


def sleeping(
    seconds: Callable[[], float], wake: asyncio.Event | None = None
) -> Callable[[], Awaitable[None]]:
    """A pause of `seconds()` (read each time, so a reload changes it), cut short when
    `wake` is set (new work arrived, or new settings)."""

    async def pause() -> None:
        if wake is None:
            await asyncio.sleep(seconds())
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), seconds())
        wake.clear()

    return pause
