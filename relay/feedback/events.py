"""Events: every delivery, deferral, bounce, complaint, unsubscribe and suppression, as a
row tenants can read (webhooks, `relay events tail`) and as counts in the hourly `rates`
buckets that P-COMPLAINT and P-BOUNCE act on.

`record` writes both in the caller's transaction, so the event rows and the counts are
committed with the change they report. Rates carry tenant, provider (the destination's MX
operator) and campaign (Feedback-ID or List-Id); metrics carry tenant and provider only,
never an address.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

import asyncpg
from prometheus_client import Counter

from relay.queue.sql import QUERIES

Kind = Literal[
    "delivered",
    "deferred",
    "bounced",
    "complained",
    "unsubscribed",
    "suppressed",
    "abuse-report",
    "throttled",
    "suspended",
    "resumed",
    "canary-held",
    "canary-waiting",
    "canary-released",
    "canary-declined",
]

FEEDBACK_EVENTS = Counter(
    "relay_feedback_events_total",
    "Events recorded, by tenant, destination provider (the MX operator, '' when unknown) and "
    "kind (delivered, deferred, bounced, complained, unsubscribed, suppressed, abuse-report, "
    "throttled, suspended, resumed, canary-held, canary-waiting, canary-released, "
    "canary-declined). "
    "Complaint rate: rate(complained) / rate(delivered) per tenant.",
    ["tenant", "provider", "kind"],
)

# Which `rates` column an event adds to (bounced: hard or soft by its detail).
_RATE_COLUMN: Mapping[str, str] = {
    "delivered": "delivered",
    "deferred": "deferred",
    "complained": "complained",
    "abuse-report": "complained",
    "unsubscribed": "unsubscribed",
}


@dataclass(frozen=True)
class Event:
    tenant: str
    kind: Kind
    recipient: str | None = None
    message_id: UUID | None = None
    provider: str = ""
    campaign: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def rate_column(self) -> str | None:
        if self.kind == "bounced":
            return "hard_bounced" if self.detail.get("hard") else "soft_bounced"
        return _RATE_COLUMN.get(self.kind)


async def record(conn: asyncpg.Connection | asyncpg.Pool, events: Sequence[Event]) -> None:
    """Insert `events` and add them to their rate buckets (one statement each)."""
    if not events:
        return
    await conn.execute(
        QUERIES["insert_events"],
        [e.tenant for e in events],
        [e.kind for e in events],
        [e.recipient for e in events],
        [e.message_id for e in events],
        [e.provider for e in events],
        [e.campaign for e in events],
        [json.dumps(dict(e.detail)) for e in events],
    )
    counted = [e for e in events if e.rate_column]
    if counted:
        await conn.execute(
            QUERIES["add_rates"],
            [e.tenant for e in counted],
            [e.provider for e in counted],
            [e.campaign for e in counted],
            [e.rate_column for e in counted],
        )
    for e in events:
        FEEDBACK_EVENTS.labels(e.tenant, e.provider, e.kind).inc()
