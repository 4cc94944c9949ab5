"""Adding an address to a tenant's suppression list (P-SUPPRESS) from what came back: a
hard bounce, a complaint, a one-click unsubscribe, an abuse report.

The entry and a `suppressed` event are written in the caller's transaction; an address
already on the list keeps its first reason and time (the first cause is the one to show).
"""

import asyncpg

from relay.feedback.events import Event, record
from relay.queue.sql import QUERIES

Reason = str  # unsubscribe | complaint | hard-bounce | abuse-report | manual


async def suppress(
    conn: asyncpg.Connection, tenant: str, address: str, reason: Reason, source: str
) -> bool:
    """Suppress `address` for `tenant`; True if it was not on the list before."""
    added = await conn.fetch(QUERIES["suppression_add"], tenant, [address], reason, source)
    if added:
        await record(
            conn,
            [Event(tenant, "suppressed", address.lower(), detail={"reason": reason,
                                                                  "source": source})],
        )  # fmt: skip
    return bool(added)
