"""Events: every delivery, deferral, bounce, complaint, unsubscribe and suppression, as a
row tenants can read (webhooks, `relay events tail`) and as counts in the hourly `rates`
buckets that P-COMPLAINT and P-BOUNCE act on.

`record` writes the events in the caller's transaction and the database counts them in
the same statement (a trigger), so the event rows and the counts are committed with the
change they report. Rates carry tenant, site (the registered domain of the destination's
MX hosts: its operator) and campaign (Feedback-ID or List-Id); metrics carry tenant and
site only, never an address.
"""

import json
from collections.abc import Iterable, Mapping, Sequence
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
    "Events recorded, by tenant, destination site (the MX operator, '' when unknown) and "
    "kind (delivered, deferred, bounced, complained, unsubscribed, suppressed, abuse-report, "
    "throttled, suspended, resumed, canary-held, canary-waiting, canary-released, "
    "canary-declined). "
    "Complaint rate: rate(complained) / rate(delivered) per tenant.",
    ["tenant", "site", "kind"],
)


@dataclass(frozen=True)
class Event:
    tenant: str
    kind: Kind
    recipient: str | None = None
    message_id: UUID | None = None
    site: str = ""
    campaign: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)


async def record(conn: asyncpg.Connection | asyncpg.Pool, events: Sequence[Event]) -> None:
    """Insert `events` in one statement; the database adds them to their rate buckets (a
    trigger on `events`, 0014_rates_from_events.sql)."""
    if not events:
        return
    await conn.execute(QUERIES["insert_events"], *columns(events))
    counted(events)


def columns(events: Sequence[Event]) -> tuple[list[Any], ...]:
    """The events as the parallel arrays the `events` inserts take (tenant, kind, recipient,
    message id, site, campaign, detail as JSON)."""
    return (
        [e.tenant for e in events],
        [e.kind for e in events],
        [e.recipient for e in events],
        [e.message_id for e in events],
        [e.site for e in events],
        [e.campaign for e in events],
        [json.dumps(dict(e.detail)) for e in events],
    )


def counted(events: Iterable[Event]) -> None:
    """Count recorded events in `relay_feedback_events_total`."""
    for e in events:
        FEEDBACK_EVENTS.labels(e.tenant, e.site, e.kind).inc()


class EventLog:
    """Events as tenants read them (`relay events tail`), by id, up to a horizon of
    committed ones (`relay.queue.webhooks.CommittedHorizon`)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def last(self, tenant: str | None, upto: int, count: int) -> list[Mapping[str, Any]]:
        """The last `count` events up to id `upto`, oldest first; every tenant's if None."""
        return list(await self._pool.fetch(QUERIES["events_last"], tenant, upto, count))

    async def window(
        self, tenant: str | None, after: int, upto: int, size: int
    ) -> list[Mapping[str, Any]]:
        """Events with ids in (after, upto], oldest first, at most `size`."""
        return list(await self._pool.fetch(QUERIES["events_window"], tenant, after, upto, size))
