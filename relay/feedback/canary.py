"""P-CANARY: a large bulk campaign goes out as a canary, and the rest waits for its verdict.

POLICY.md: the first 10% of a large campaign's recipients (at most 1,000) go out; the rest
is held for a window (default 6 hours) while bounces, unsubscribes and complaints are
measured; then the rest is released, or declined by an admin. Opens and clicks are not
measured: the relay does not track recipients.

How a campaign is caught. Its size is not known while its messages arrive, and the relay
queues every message the moment it is accepted. So, with `[canary] enabled`, each delivery
of a bulk message with a campaign (its Feedback-ID, else its List-Id) is held as it is
inserted: a trigger on `deliveries` (migration 0009) sets `hold = 'canary-pending:CAMPAIGN'`
in the enqueue transaction itself, so no worker can lease it first, and the enqueue path
needs no change. The trigger reads whether canaries are on from `canary_settings`, which
the running relay writes from `[canary]` at start and on reload (no row, or `min_size` 0:
nothing is held). A campaign released within `remember` lets its stragglers through; one
declined within `remember` has its stragglers held and then declined like the rest; a
campaign decided longer ago starts a new run (a list's next send under the same List-Id).

What the task here does, every `check_every`, in one transaction per campaign with the
campaign's row locked (several relay processes and the admin commands take turns):

- collecting: once no recipient has arrived for `settle` (or the campaign has collected
  for `max_collect`, so a list that never pauses does not wait forever), a campaign below
  `min_size` is released whole; a larger one sends its canary: the first 10% of its held
  deliveries by id (the order they were submitted in), at most `max_canary`; the rest is
  held again as 'canary:CAMPAIGN' until `window_ends`, and the tenant gets a
  `canary-held` event. Recipients arriving later join the held rest.
- canary, at the window's end: the campaign's `rates` since its run started (every
  provider) are compared with the thresholds: complaints and unsubscribes per delivered
  message, hard bounces per finished delivery (delivered or hard-bounced). Clean: the rest
  is released (`canary-released`). Over a threshold, or fewer than half of the canary
  finished (mostly deferred says nothing good): the campaign waits for an admin
  (`canary-waiting`, with the reason); nothing is released or dropped on its own.
- `relay campaign release|decline` settle a campaign by hand, in any open state. Decline
  ends every held delivery (state deleted, `declined by admin (P-CANARY)`) with a
  `canary-declined` event each: a recipient is never dropped silently.

A released delivery is due at once, and the time it waited is added to its queue lifetime,
so holding it did not bring its bounce closer. Held deliveries are never leased, so they do
not expire while held.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from prometheus_client import Gauge

from relay.config.schema import CanarySection, Config
from relay.queue.errors import DATABASE_ERRORS
from relay.queue.events import FEEDBACK_EVENTS
from relay.queue.sql import QUERIES

log = logging.getLogger(__name__)

CANARY_PERCENT = 10
"""POLICY.md P-CANARY: the canary is the first 10% of the campaign's recipients."""
PENDING = "canary-pending:"
"""Hold prefix of a campaign's deliveries while it grows."""
REST = "canary:"
"""Hold prefix of the rest of a campaign while its canary is judged."""
STATES = ("collecting", "canary", "waiting", "released", "declined")
DECLINED_REPLY = "declined by admin (P-CANARY)"

CAMPAIGNS = Gauge(
    "relay_campaigns",
    "Campaigns by P-CANARY state: collecting (held while they grow), canary (the rest held "
    "until the window ends), waiting (the canary went badly: an admin must release or "
    "decline), released, declined. Read from PostgreSQL every [canary] check_every.",
    ["state"],
)
HELD_DELIVERIES = Gauge(
    "relay_campaign_held_deliveries",
    "Deliveries held by P-CANARY (collecting campaigns, and the rest of those in canary or "
    "waiting), by tenant.",
    ["tenant"],
)


class CampaignError(Exception):
    """An admin action that does not apply: no such campaign, or it is already decided."""


@dataclass(frozen=True)
class Rates:
    """A campaign's counts since its run started, from the hourly `rates` buckets."""

    delivered: int = 0
    deferred: int = 0
    hard_bounced: int = 0
    soft_bounced: int = 0
    complained: int = 0
    unsubscribed: int = 0

    @property
    def finished(self) -> int:
        """Deliveries with a final outcome that says something about the list."""
        return self.delivered + self.hard_bounced

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def canary_size(recipients: int, max_canary: int) -> int:
    """The first 10% of `recipients` (rounded up), at most `max_canary`."""
    return min(max_canary, -(-recipients * CANARY_PERCENT // 100))


def judge(rates: Rates, canary: int, settings: CanarySection) -> str | None:
    """None when the canary came back clean; otherwise why the rest must wait for an admin."""
    if rates.finished * 2 < canary:
        return (
            f"only {rates.finished} of {canary} canary deliveries finished (delivered or "
            "hard-bounced): too few to judge the list by"
        )
    measured = (
        ("complaint", rates.complained, rates.delivered, settings.max_complaint_rate),
        ("hard-bounce", rates.hard_bounced, rates.finished, settings.max_bounce_rate),
        ("unsubscribe", rates.unsubscribed, rates.delivered, settings.max_unsubscribe_rate),
    )
    problems = [
        f"{what} rate {count / base:.2%} ({count} of {base}) is above {limit:.2%}"
        for what, count, base, limit in measured
        if base and count / base > limit
    ]
    return "; ".join(problems) or None


def _detail(**values: Any) -> str:
    return json.dumps(values, default=str)


async def _event(
    conn: asyncpg.Connection, tenant: str, kind: str, campaign: str, **detail: Any
) -> None:
    await conn.execute(QUERIES["canary_event"], tenant, kind, campaign, _detail(**detail))
    FEEDBACK_EVENTS.labels(tenant, "", kind).inc()


async def _locked(conn: asyncpg.Connection, tenant: str, campaign: str) -> asyncpg.Record | None:
    return await conn.fetchrow(QUERIES["canary_lock"], tenant, campaign)


async def _release(
    conn: asyncpg.Connection, tenant: str, campaign: str, holds: Sequence[str]
) -> int:
    count = int(await conn.fetchval(QUERIES["canary_release"], tenant, campaign, list(holds)))
    if count:
        await conn.execute(QUERIES["notify_queue"])  # wake the workers now, not at their poll
    return count


async def _decline(
    conn: asyncpg.Connection,
    tenant: str,
    campaign: str,
    holds: Sequence[str],
    by: str,
    reason: str | None,
) -> int:
    detail = _detail(rule="P-CANARY", by=by, reason=reason)
    count = int(
        await conn.fetchval(
            QUERIES["canary_decline"], tenant, campaign, list(holds), DECLINED_REPLY, detail
        )
    )
    if count:
        FEEDBACK_EVENTS.labels(tenant, "", "canary-declined").inc(count)
    return count


async def _decide(
    conn: asyncpg.Connection,
    row: Mapping[str, Any],
    state: str,
    *,
    held: int = 0,
    by: str,
    reason: str,
    recipients: int | None = None,
) -> None:
    await conn.execute(
        QUERIES["canary_decide"],
        row["tenant"],
        row["campaign"],
        state,
        row["recipients"] if recipients is None else recipients,
        row["canary_size"],
        held,
        row["window_ends"],
        by,
        reason,
    )


async def rates_of(conn: asyncpg.Connection | asyncpg.Pool, row: Mapping[str, Any]) -> Rates:
    """The campaign's counts since its current run started."""
    counts = await conn.fetchrow(
        QUERIES["canary_rates"], row["tenant"], row["campaign"], row["started_at"]
    )
    return Rates(**dict(counts))


async def write_settings(pool: asyncpg.Pool, settings: CanarySection) -> None:
    """Tell the trigger whether to hold new campaign deliveries (min_size 0: do not)."""
    await pool.execute(
        QUERIES["canary_settings_write"],
        settings.min_size if settings.enabled else 0,
        float(settings.remember),
        list(settings.exempt_tenants),
    )


# -- one round ---------------------------------------------------------------------------------


async def check_once(pool: asyncpg.Pool, settings: CanarySection) -> None:
    """Settle the campaigns that stopped growing, judge the canaries whose window ended,
    and refresh the gauges."""
    for row in await pool.fetch(QUERIES["canary_pending"]):
        async with pool.acquire() as conn, conn.transaction():
            await _settle(conn, settings, row["tenant"], row["campaign"], row["quiet"])
    for row in await pool.fetch(QUERIES["canary_windows_due"]):
        async with pool.acquire() as conn, conn.transaction():
            await _judge(conn, settings, row["tenant"], row["campaign"])
    await refresh_gauges(pool)


async def _settle(
    conn: asyncpg.Connection, settings: CanarySection, tenant: str, campaign: str, quiet: float
) -> None:
    """Deal with the deliveries of one campaign held while it grows."""
    await conn.execute(QUERIES["canary_ensure"], tenant, campaign)
    row = await _locked(conn, tenant, campaign)
    assert row is not None
    pending = PENDING + campaign
    count = int(await conn.fetchval(QUERIES["canary_count_held"], tenant, campaign, [pending]))
    if not count:
        return  # another relay process dealt with them
    state = row["state"]
    if state in ("canary", "waiting"):  # late arrivals join the held rest
        moved = await conn.fetchval(
            QUERIES["canary_move"], tenant, campaign, pending, REST + campaign
        )
        await conn.execute(QUERIES["canary_add_held"], tenant, campaign, moved)
        return
    if state == "released":  # submitted while the campaign was being released
        await _release(conn, tenant, campaign, [pending])
        return
    if state == "declined":  # the campaign's stragglers, within `remember` of the decline
        await _decline(conn, tenant, campaign, [pending], row["decided_by"], row["reason"])
        return

    off = not settings.enabled or tenant in settings.exempt_tenants
    if not off and quiet < settings.settle and row["age"] < settings.max_collect:
        await conn.execute(QUERIES["canary_collecting"], tenant, campaign, count)
        return
    if off or count < settings.min_size:
        released = await _release(conn, tenant, campaign, [pending])
        why = "canaries are off" if off else f"below min_size {settings.min_size}"
        reason = f"{released} recipients, {why}"
        await _decide(conn, row, "released", by="canary", reason=reason, recipients=released)
        return

    size = canary_size(count, settings.max_canary)
    split = await conn.fetchrow(
        QUERIES["canary_start"], tenant, campaign, pending, size, REST + campaign
    )
    recipients = split["released"] + split["held"]
    window_ends = await conn.fetchval(
        QUERIES["canary_begin"],
        tenant,
        campaign,
        recipients,
        split["released"],
        split["held"],
        float(settings.window),
        f"canary of {split['released']} sent, {split['held']} held for the window",
    )
    await _event(
        conn,
        tenant,
        "canary-held",
        campaign,
        rule="P-CANARY",
        recipients=recipients,
        canary=split["released"],
        held=split["held"],
        window_ends=window_ends.isoformat(),
    )
    log.info(
        "canary started tenant=%s campaign=%s recipients=%d canary=%d held=%d",
        tenant,
        campaign,
        recipients,
        split["released"],
        split["held"],
    )


async def _judge(
    conn: asyncpg.Connection, settings: CanarySection, tenant: str, campaign: str
) -> None:
    """At the window's end: release the rest of a clean canary, or wait for an admin."""
    row = await _locked(conn, tenant, campaign)
    if row is None or row["state"] != "canary" or not row["window_over"]:
        return  # decided meanwhile (an admin, another relay process)
    rates = await rates_of(conn, row)
    problem = judge(rates, row["canary_size"] or 0, settings)
    if problem is None:
        released = await _release(conn, tenant, campaign, [PENDING + campaign, REST + campaign])
        reason = "canary clean: " + ", ".join(f"{k} {v}" for k, v in rates.as_dict().items())
        await _decide(conn, row, "released", by="canary", reason=reason)
        await _event(
            conn,
            tenant,
            "canary-released",
            campaign,
            rule="P-CANARY",
            by="canary",
            released=released,
            rates=rates.as_dict(),
        )
        log.info(
            "canary clean, released tenant=%s campaign=%s deliveries=%d", tenant, campaign, released
        )
        return
    await _decide(conn, row, "waiting", held=row["held"], by="canary", reason=problem)
    await _event(
        conn,
        tenant,
        "canary-waiting",
        campaign,
        rule="P-CANARY",
        reason=problem,
        held=row["held"],
        rates=rates.as_dict(),
    )
    log.warning(
        "canary waits for an admin tenant=%s campaign=%s held=%d: %s",
        tenant,
        campaign,
        row["held"],
        problem,
    )


async def refresh_gauges(pool: asyncpg.Pool) -> None:
    states = {r["state"]: r["n"] for r in await pool.fetch(QUERIES["canary_gauges_states"])}
    held = await pool.fetch(QUERIES["canary_gauges_held"])
    for state in STATES:
        CAMPAIGNS.labels(state).set(states.get(state, 0))
    HELD_DELIVERIES.clear()  # tenants with nothing held any more drop out
    for r in held:
        HELD_DELIVERIES.labels(r["tenant"]).set(r["held"])


# -- what admins do ----------------------------------------------------------------------------


async def release(pool: asyncpg.Pool, tenant: str, campaign: str, by: str) -> int:
    """Release every held delivery of an open campaign (collecting, canary or waiting);
    the number released."""
    async with pool.acquire() as conn, conn.transaction():
        row = await _open(conn, tenant, campaign)
        released = await _release(conn, tenant, campaign, [PENDING + campaign, REST + campaign])
        await _decide(conn, row, "released", by=by, reason="released by an admin")
        await _event(
            conn, tenant, "canary-released", campaign, rule="P-CANARY", by=by, released=released
        )
    log.info(
        "campaign released tenant=%s campaign=%s by=%s deliveries=%d",
        tenant,
        campaign,
        by,
        released,
    )
    return released


async def decline(
    pool: asyncpg.Pool, tenant: str, campaign: str, by: str, reason: str | None = None
) -> int:
    """End every held delivery of an open campaign, with an event each; the number ended."""
    async with pool.acquire() as conn, conn.transaction():
        row = await _open(conn, tenant, campaign)
        holds = [PENDING + campaign, REST + campaign]
        ended = await _decline(conn, tenant, campaign, holds, by, reason)
        await _decide(conn, row, "declined", by=by, reason=reason or "declined by an admin")
    log.info(
        "campaign declined tenant=%s campaign=%s by=%s deliveries=%d", tenant, campaign, by, ended
    )
    return ended


async def _open(conn: asyncpg.Connection, tenant: str, campaign: str) -> asyncpg.Record:
    row = await _locked(conn, tenant, campaign)
    if row is None:
        raise CampaignError(f"tenant {tenant} has no campaign {campaign!r}")
    if row["state"] in ("released", "declined"):
        raise CampaignError(
            f"campaign {campaign!r} of {tenant} was already {row['state']} "
            f"({row['decided_by']}, {row['decided_at']:%Y-%m-%d %H:%M:%S %Z})"
        )
    return row


# -- the background task -----------------------------------------------------------------------


class CanaryTask:
    """Runs `check_once` every `[canary] check_every` in `relay serve`; writes the settings
    the trigger reads at start and after each reload."""

    def __init__(self, pool: asyncpg.Pool, config: Config) -> None:
        self.pool = pool
        self.settings = config.canary
        self._written: CanarySection | None = None  # what the settings row holds
        self._wake = asyncio.Event()

    def reload(self, config: Config) -> None:
        self.settings = config.canary
        self._wake.set()  # write the new settings now, not at the next round

    async def run(self) -> None:
        """Until cancelled; a database that does not answer is logged and tried again."""
        while True:
            try:
                settings = self.settings
                if self._written is not settings:
                    await write_settings(self.pool, settings)
                    self._written = settings
                await check_once(self.pool, settings)
            except DATABASE_ERRORS as exc:
                log.warning("canary round failed, trying again: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.check_every)
            self._wake.clear()
