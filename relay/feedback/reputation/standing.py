"""A process's copy of the reputation verdicts (P-COMPLAINT, P-BOUNCE, P-SUSPEND): the pace
factor of each tenant toward each site, and the open bulk suspensions.

The rounds (`relay.feedback.reputation.judge`) write the verdicts to PostgreSQL; every
process reads them into one `Standing`, which the delivery worker (the pace) and the DATA
check (the suspensions) are given. Reads come from memory: cheap enough per delivery and
per message, and never one query per message.
"""

import logging
import math
import time
from collections.abc import Iterable

from prometheus_client import Gauge

from relay.queue.database import Pool
from relay.queue.errors import DATABASE_ERRORS
from relay.queue.reputation import ReputationStore, Suspension

log = logging.getLogger(__name__)

REFRESH_SECONDS = 5.0
"""Longest time the SMTP path trusts its copy of the open suspensions."""

THROTTLE_FACTOR = Gauge(
    "relay_tenant_throttle_factor",
    "Share of its usual pace a tenant may use toward a site (1: unthrottled); cut while "
    "its complaint or hard-bounce rate there is above the warning level (P-COMPLAINT, "
    "P-BOUNCE), recovering gradually once below.",
    ["tenant", "site"],
)
SUSPENDED = Gauge(
    "relay_tenant_suspended",
    "1 while a tenant's bulk sending is suspended, by rule: P-COMPLAINT or P-BOUNCE (a rate "
    "above its limit) or manual (an admin); 0 once an admin resumed it.",
    ["tenant", "rule"],
)


class Standing:
    """The verdicts as this process last read them. A suspension read that finds the copy
    older than `max_age` reads again (one refresh at a time; a failed one keeps the last
    copy; with no copy yet the error reaches the caller, and the check defers the
    message)."""

    def __init__(self, pool: Pool, max_age: float = REFRESH_SECONDS) -> None:
        self.max_age = max_age
        self._store = ReputationStore(pool)
        self._factors: dict[tuple[str, str], float] = {}
        self._suspensions: dict[str, tuple[Suspension, ...]] | None = None
        self._loaded_at = -math.inf
        self._suspended_gauges: set[tuple[str, str]] = set()

    def throttle_factor(self, tenant: str, site: str) -> float:
        """The share of its usual pace `tenant` may use toward `site` (the registered
        domain of the MX hosts, as in `rates`): 1.0 unthrottled, down to `throttle_floor`
        while its complaint or hard-bounce rate there is above the warning level. The
        delivery worker multiplies the tenant's pace toward that site by it."""
        return self._factors.get((tenant, site), 1.0)

    async def suspensions(self, tenant: str) -> tuple[Suspension, ...]:
        """The open suspensions of `tenant` (empty: it sends bulk mail as usual)."""
        if self._suspensions is None:
            self._keep(await self._store.open_suspensions())
        elif time.monotonic() - self._loaded_at > self.max_age:
            self._loaded_at = time.monotonic()  # one refresh at a time; the rest read the copy
            try:
                self._keep(await self._store.open_suspensions())
            except DATABASE_ERRORS as exc:
                log.warning("cannot refresh bulk suspensions, keeping the last copy: %r", exc)
        assert self._suspensions is not None
        return self._suspensions.get(tenant, ())

    async def refresh(self) -> None:
        """Read the factors and the open suspensions again (whichever process ran the
        round), and set the gauges from them."""
        rows = await self._store.throttles(None)
        factors = {(r["tenant"], r["site"]): float(r["factor"]) for r in rows}
        for key in self._factors.keys() - factors.keys():
            THROTTLE_FACTOR.labels(*key).set(1.0)
        for key, factor in factors.items():
            THROTTLE_FACTOR.labels(*key).set(factor)
        self._factors = factors

        suspensions = await self._store.open_suspensions()
        self._keep(suspensions)
        open_now = {(s.tenant, s.rule) for s in suspensions}
        for key in self._suspended_gauges - open_now:
            SUSPENDED.labels(*key).set(0)
        for key in open_now:
            SUSPENDED.labels(*key).set(1)
        self._suspended_gauges = open_now

    def _keep(self, suspensions: Iterable[Suspension]) -> None:
        by_tenant: dict[str, tuple[Suspension, ...]] = {}
        for s in suspensions:
            by_tenant[s.tenant] = (*by_tenant.get(s.tenant, ()), s)
        self._suspensions, self._loaded_at = by_tenant, time.monotonic()
