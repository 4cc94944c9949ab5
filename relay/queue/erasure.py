"""P-ERASURE: delete everything the relay holds about one address, on the data subject's
request (GDPR art. 17), except that it stays suppressed.

One transaction, so an erasure is complete or did not happen. The address is matched
case-insensitively. What goes:

- every message with a delivery to the address, with all its deliveries, attempts and
  policy results: the other recipients' copies too, since a queued copy holds the address in
  its headers (To, Cc, the trace header), so mail still queued for them is not sent;
- the relay's own DSNs (null sender) that report on the address;
- the bodies of other, finished messages whose text names it (purged, not deleted: their
  envelopes hold other people's addresses, not this one); messages still queued for others
  that name it are counted and left, since deleting them would lose other people's mail;
- events with it as recipient or in their detail, its consent records, the stored feedback
  reports whose raw bytes, sender, recipients, reporter or problem contain it;
- its suppression entries, each replaced by a keyed hash (`suppression_key`) with the same
  reason, for every tenant that had one, so P-SUPPRESS still refuses it at RCPT.

Webhook payloads are not stored (they are built from events), and the hourly `rates` hold
no address. Text is matched as it is written: an address hidden in base64 or split by a
quoted-printable soft line break is not found, and a message to other people that names it
that way keeps its body until P-RETENTION purges it.

The keyed hash uses the deployment's signing secret (`[policy] unsubscribe_secret_file` or
RELAY_UNSUBSCRIBE_SECRET): changing that secret orphans the hashed entries.
"""

import logging
from dataclasses import dataclass, field

import asyncpg

from relay.queue.sql import QUERIES
from relay.queue.suppressions import suppression_key

log = logging.getLogger(__name__)

_DELETED = ("messages", "deliveries", "attempts", "events",
            "consent_records", "suppressions", "feedback_reports")  # fmt: skip


@dataclass(frozen=True)
class Erasure:
    """What one erasure removed, per table, and what it could not."""

    deleted: dict[str, int] = field(default_factory=dict)
    hashed_for: tuple[str, ...] = ()
    """Tenants whose suppression of the address is now kept as its keyed hash."""
    bodies_purged: int = 0
    """Finished messages to others whose body named the address."""
    queued_mentions: int = 0
    """Messages still queued for others whose body names the address (left as they are)."""
    webhook_errors: int = 0

    @property
    def total(self) -> int:
        return sum(self.deleted.values()) + self.bodies_purged + self.webhook_errors


async def erase(pool: asyncpg.Pool, address: str, secret: bytes) -> Erasure:
    """Erase `address` (P-ERASURE) in one transaction; see the module docstring."""
    needle = address.lower()
    async with pool.acquire() as conn, conn.transaction():
        ids = [r["id"] for r in await conn.fetch(QUERIES["erase_find_messages"], needle)]
        deleted = {
            "attempts": await conn.fetchval(QUERIES["erase_attempts"], ids),
            "deliveries": await conn.fetchval(QUERIES["erase_deliveries"], ids),
            "messages": await conn.fetchval(QUERIES["erase_messages"], ids),
            "events": await conn.fetchval(QUERIES["erase_events"], needle),
            "consent_records": await conn.fetchval(QUERIES["erase_consent_records"], needle),
            "feedback_reports": await conn.fetchval(QUERIES["erase_feedback_reports"], needle),
        }
        bodies = await conn.fetchval(QUERIES["erase_mentions_purge"], needle)
        queued = await conn.fetchval(QUERIES["erase_mentions_queued"], needle)
        webhook_errors = await conn.fetchval(QUERIES["erase_webhook_errors"], needle)
        tenants = [
            r["tenant"]
            for r in await conn.fetch(
                QUERIES["erase_suppressions"], needle, suppression_key(secret, needle)
            )
        ]
        deleted["suppressions"] = len(tenants)
    result = Erasure(
        deleted={name: int(deleted[name]) for name in _DELETED},
        hashed_for=tuple(tenants),
        bodies_purged=int(bodies),
        queued_mentions=int(queued),
        webhook_errors=int(webhook_errors),
    )
    # never the address itself: the log must not keep what was just erased
    log.info(
        "erased an address: %s; suppressions hashed for %d tenants",
        ", ".join(f"{k}={v}" for k, v in result.deleted.items()),
        len(tenants),
    )
    return result
