"""Per-tenant messages-per-minute, enforced at MAIL in this process (like Postfix's anvil).

A token bucket refilled continuously: a tenant may burst up to its per-minute limit, then
gets one message per (60 / limit) seconds. The state is per process; limits shared by
several relay processes belong to the delivery side's shared rate state.
"""

import time


class TenantRateLimiter:
    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, tenant: str, per_minute: int) -> bool:
        """Take one token for `tenant` if there is one."""
        now = time.monotonic()
        tokens, last = self._buckets.get(tenant, (float(per_minute), now))
        tokens = min(float(per_minute), tokens + (now - last) * per_minute / 60.0)
        if tokens < 1.0:
            self._buckets[tenant] = (tokens, now)
            return False
        self._buckets[tenant] = (tokens - 1.0, now)
        return True
