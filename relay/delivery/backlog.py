"""Backlogs moved to the times their destination can take them.

KumoMTA keeps mail that is due but cannot go yet (its destination rate-limited or paused)
in a scheduled queue, apart from the ready queues the workers take from. Here the queue is
PostgreSQL's `deliveries`, and the same is done by moving such a backlog's due rows to
later times: a tenant's mail to one domain that fills its share of this process at the
site's rate keeps about `keep` deliveries due (what the next leases take) and has the rest
scheduled one per interval of the site's current rate, so the lease does not read them
again until they can go (`lease_due` reads only the head of each lane). A paused site's
due backlog is moved past the pause, spread over half a pause, at once rather than a
lease's worth at a time.

Each delivery is moved once for each time it falls due and cannot go, never once per lease;
no attempt is recorded for a move (nothing was tried) and none is counted against the
delivery's retries.
"""

import asyncio
import logging
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from relay.queue.deliveries import DEFER_BATCH, DeliveryQueue
from relay.queue.errors import DATABASE_ERRORS

log = logging.getLogger(__name__)

Pair = tuple[str, str]
"""(tenant, destination domain): what a connection carries and what the lease skips."""

RECHECK_SECONDS = 5.0
"""A pair's backlog is looked at no more often than this: one deferral that finds nothing
to move costs one short statement."""


class BacklogScheduler:
    """The deferrals of one relay process's delivery worker."""

    def __init__(self, queue: DeliveryQueue) -> None:
        self.queue = queue
        self._booked: dict[Pair, datetime] = {}
        """How far each pair's rate is already booked by deferrals from this process."""
        self._paused: dict[Pair, datetime] = {}
        self._tasks: dict[Pair, asyncio.Task[None]] = {}
        self._looked: dict[Pair, float] = {}

    def rate_limited(self, pair: Pair, per_minute: float, keep: int, ahead: float) -> None:
        """`pair` is full at `per_minute`: schedule its due backlog past the first `keep`,
        one per interval of that rate from `ahead` seconds on (or after what is already
        booked)."""
        loop = asyncio.get_running_loop()
        if pair in self._tasks or loop.time() - self._looked.get(pair, -1e9) < RECHECK_SECONDS:
            return
        self._looked[pair] = loop.time()
        self._start(pair, self._by_rate(pair, 60.0 / per_minute, keep, ahead))

    def paused(self, pair: Pair, site: str, until: datetime, spread: float, reply: str) -> None:
        """The site of `pair` is paused until `until`: its due backlog waits for then,
        spread over `spread` seconds after it, with `reply` as the reason. Once per pause;
        a delivery that falls due later in the pause is postponed when it is leased."""
        now = datetime.now(UTC)
        for done in [p for p, end in self._paused.items() if end <= now]:
            del self._paused[done]
        if self._paused.get(pair) == until or pair in self._tasks:
            return
        self._paused[pair] = until
        self._start(pair, self._past_pause(pair, site, until, spread, reply))

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _start(self, pair: Pair, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=f"defer:{pair[0]}/{pair[1]}")
        self._tasks[pair] = task
        task.add_done_callback(lambda _: self._tasks.pop(pair, None))

    async def _by_rate(self, pair: Pair, interval: float, keep: int, ahead: float) -> None:
        now = datetime.now(UTC)
        self._forget_past(now)
        try:
            while True:
                start = max(self._booked.get(pair, now), now + timedelta(seconds=ahead))
                moved = await self.queue.defer(pair, start, interval, keep=keep)
                if moved:
                    self._booked[pair] = start + timedelta(seconds=moved * interval)
                    log.info("%d deliveries of %s to %s scheduled at its rate", moved, *pair)
                if moved < DEFER_BATCH:
                    return
        except DATABASE_ERRORS as exc:
            log.warning("cannot schedule the backlog of %s to %s: %r", *pair, exc)

    async def _past_pause(
        self, pair: Pair, site: str, until: datetime, spread: float, reply: str
    ) -> None:
        try:
            while moved := await self.queue.defer(pair, until, spread, reply=reply, site=site):
                log.info("%d deliveries of %s to %s wait for the site's pause", moved, *pair)
                if moved < DEFER_BATCH:
                    return
        except DATABASE_ERRORS as exc:
            log.warning("cannot move the backlog of %s to %s past a pause: %r", *pair, exc)

    def _forget_past(self, now: datetime) -> None:
        for pair in [p for p, booked in self._booked.items() if booked <= now]:
            del self._booked[pair]
