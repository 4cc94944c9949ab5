"""The shared state the policy reads during a transaction, served from the queue's stores:
suppressions and consent records from PostgreSQL, open bulk suspensions from the process's
copy of the reputation verdicts (`Standing`). The process builds one and hands it to every
`PolicyContext`; offline runs have none."""

import contextlib
from collections.abc import Iterator, Sequence

from relay.feedback.reputation.standing import Standing
from relay.policy.context import LookupUnavailable
from relay.queue.consent import ConsentStore
from relay.queue.database import Pool
from relay.queue.errors import DATABASE_ERRORS
from relay.queue.reputation import Suspension
from relay.queue.suppressions import Suppression, SuppressionList


class DatabaseLookups:
    def __init__(self, pool: Pool, standing: Standing) -> None:
        self._standing = standing
        self._suppressions = SuppressionList(pool)
        self._consent = ConsentStore(pool)

    async def suppression(self, tenant: str, address: str, key: str | None) -> Suppression | None:
        with _unavailable("suppression list"):
            return await self._suppressions.find(tenant, address, key)

    async def without_consent(self, tenant: str, addresses: Sequence[str]) -> list[str]:
        with _unavailable("consent records"):
            return await self._consent.without_record(tenant, addresses)

    async def suspensions(self, tenant: str) -> tuple[Suspension, ...]:
        with _unavailable("suspensions"):
            return await self._standing.suspensions(tenant)


@contextlib.contextmanager
def _unavailable(what: str) -> Iterator[None]:
    """The database's outage errors, whichever the driver raised, as the one the policy
    pipeline knows (`LookupUnavailable`)."""
    try:
        yield
    except DATABASE_ERRORS as exc:
        raise LookupUnavailable(what, exc) from exc
