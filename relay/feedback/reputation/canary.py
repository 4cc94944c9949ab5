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
  site) are compared with the thresholds: complaints and unsubscribes per delivered
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
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge

from relay.config.schema import CanarySection, Config
from relay.queue.canaries import CanaryStore, CanaryWork
from relay.queue.database import Pool
from relay.queue.events import FEEDBACK_EVENTS
from relay.queue.outage import every, sleeping

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


async def _event(work: CanaryWork, tenant: str, kind: str, campaign: str, **detail: Any) -> None:
    await work.event(tenant, kind, campaign, _detail(**detail))
    FEEDBACK_EVENTS.labels(tenant, "", kind).inc()


async def _decline(
    work: CanaryWork,
    tenant: str,
    campaign: str,
    holds: Sequence[str],
    by: str,
    reason: str | None,
) -> int:
    detail = _detail(rule="P-CANARY", by=by, reason=reason)
    count = await work.decline(tenant, campaign, holds, DECLINED_REPLY, detail)
    if count:
        FEEDBACK_EVENTS.labels(tenant, "", "canary-declined").inc(count)
    return count


async def _decide(
    work: CanaryWork,
    row: Mapping[str, Any],
    state: str,
    *,
    held: int = 0,
    by: str,
    reason: str,
    recipients: int | None = None,
) -> None:
    count = row["recipients"] if recipients is None else recipients
    await work.decide(row, state, count, held, by, reason)


async def rates_of(reads: CanaryStore | CanaryWork, row: Mapping[str, Any]) -> Rates:
    """The campaign's counts since its current run started."""
    return Rates(**await reads.rates(row["tenant"], row["campaign"], row["started_at"]))


async def write_settings(pool: Pool, settings: CanarySection) -> None:
    """Tell the trigger whether to hold new campaign deliveries (min_size 0: do not)."""
    await CanaryStore(pool).write_settings(
        settings.min_size if settings.enabled else 0,
        float(settings.remember),
        list(settings.exempt_tenants),
    )


# -- one round ---------------------------------------------------------------------------------


async def check_once(pool: Pool, settings: CanarySection) -> None:
    """Settle the campaigns that stopped growing, judge the canaries whose window ended,
    and refresh the gauges."""
    store = CanaryStore(pool)
    for row in await store.pending():
        async with store.transaction() as work:
            await _settle(work, settings, row["tenant"], row["campaign"], row["quiet"])
    for row in await store.windows_due():
        async with store.transaction() as work:
            await _judge(work, settings, row["tenant"], row["campaign"])
    await refresh_gauges(pool)


async def _settle(
    work: CanaryWork, settings: CanarySection, tenant: str, campaign: str, quiet: float
) -> None:
    """Deal with the deliveries of one campaign held while it grows."""
    await work.ensure(tenant, campaign)
    row = await work.locked(tenant, campaign)
    assert row is not None
    pending = PENDING + campaign
    count = await work.count_held(tenant, campaign, [pending])
    if not count:
        return  # another relay process dealt with them
    state = row["state"]
    if state in ("canary", "waiting"):  # late arrivals join the held rest
        await work.move(tenant, campaign, pending, REST + campaign)
        return
    if state == "released":  # submitted while the campaign was being released
        await work.release(tenant, campaign, [pending])
        return
    if state == "declined":  # the campaign's stragglers, within `remember` of the decline
        await _decline(work, tenant, campaign, [pending], row["decided_by"], row["reason"])
        return

    off = not settings.enabled or tenant in settings.exempt_tenants
    if not off and quiet < settings.settle and row["age"] < settings.max_collect:
        await work.collecting(tenant, campaign, count)
        return
    if off or count < settings.min_size:
        released = await work.release(tenant, campaign, [pending])
        why = "canaries are off" if off else f"below min_size {settings.min_size}"
        reason = f"{released} recipients, {why}"
        await _decide(work, row, "released", by="canary", reason=reason, recipients=released)
        return

    size = canary_size(count, settings.max_canary)
    sent, held = await work.start(tenant, campaign, pending, size, REST + campaign)
    recipients = sent + held
    window_ends = await work.begin(
        tenant, campaign, recipients, sent, held, float(settings.window),
        f"canary of {sent} sent, {held} held for the window",
    )  # fmt: skip
    await _event(
        work,
        tenant,
        "canary-held",
        campaign,
        rule="P-CANARY",
        recipients=recipients,
        canary=sent,
        held=held,
        window_ends=window_ends.isoformat(),
    )
    log.info(
        "canary started tenant=%s campaign=%s recipients=%d canary=%d held=%d",
        tenant,
        campaign,
        recipients,
        sent,
        held,
    )


async def _judge(work: CanaryWork, settings: CanarySection, tenant: str, campaign: str) -> None:
    """At the window's end: release the rest of a clean canary, or wait for an admin."""
    row = await work.locked(tenant, campaign)
    if row is None or row["state"] != "canary" or not row["window_over"]:
        return  # decided meanwhile (an admin, another relay process)
    rates = await rates_of(work, row)
    problem = judge(rates, row["canary_size"] or 0, settings)
    if problem is None:
        released = await work.release(tenant, campaign, [PENDING + campaign, REST + campaign])
        reason = "canary clean: " + ", ".join(f"{k} {v}" for k, v in rates.as_dict().items())
        await _decide(work, row, "released", by="canary", reason=reason)
        await _event(
            work,
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
    await _decide(work, row, "waiting", held=row["held"], by="canary", reason=problem)
    await _event(
        work,
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


async def refresh_gauges(pool: Pool) -> None:
    store = CanaryStore(pool)
    states = await store.states()
    held = await store.held_per_tenant()
    for state in STATES:
        CAMPAIGNS.labels(state).set(states.get(state, 0))
    HELD_DELIVERIES.clear()  # tenants with nothing held any more drop out
    for tenant, count in held.items():
        HELD_DELIVERIES.labels(tenant).set(count)


# -- what admins do ----------------------------------------------------------------------------


async def release(pool: Pool, tenant: str, campaign: str, by: str) -> int:
    """Release every held delivery of an open campaign (collecting, canary or waiting);
    the number released."""
    async with CanaryStore(pool).transaction() as work:
        row = await _open(work, tenant, campaign)
        released = await work.release(tenant, campaign, [PENDING + campaign, REST + campaign])
        await _decide(work, row, "released", by=by, reason="released by an admin")
        await _event(
            work, tenant, "canary-released", campaign, rule="P-CANARY", by=by, released=released
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
    pool: Pool, tenant: str, campaign: str, by: str, reason: str | None = None
) -> int:
    """End every held delivery of an open campaign, with an event each; the number ended."""
    async with CanaryStore(pool).transaction() as work:
        row = await _open(work, tenant, campaign)
        holds = [PENDING + campaign, REST + campaign]
        ended = await _decline(work, tenant, campaign, holds, by, reason)
        await _decide(work, row, "declined", by=by, reason=reason or "declined by an admin")
    log.info(
        "campaign declined tenant=%s campaign=%s by=%s deliveries=%d", tenant, campaign, by, ended
    )
    return ended


async def _open(work: CanaryWork, tenant: str, campaign: str) -> Mapping[str, Any]:
    row = await work.locked(tenant, campaign)
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

    def __init__(self, pool: Pool, config: Config) -> None:
        self.pool = pool
        self.settings = config.canary
        self._written: CanarySection | None = None  # what the settings row holds
        self._wake = asyncio.Event()

    def reload(self, config: Config) -> None:
        self.settings = config.canary
        self._wake.set()  # write the new settings now, not at the next round

    async def run(self) -> None:
        """Until cancelled; a database that does not answer is logged and tried again
        (`relay.queue.outage`)."""
        pause = sleeping(lambda: self.settings.check_every, self._wake)
        await every("canary round", self.round, pause)

    async def round(self) -> None:
        settings = self.settings
        if self._written is not settings:
            await write_settings(self.pool, settings)
            self._written = settings
        await check_once(self.pool, settings)
