"""What admins do with a tenant's reputation (`relay tenant suspend|resume|status`): suspend
its bulk sending by hand (P-SUSPEND), lift every suspension and release what they held, and
read where it stands: its rates per site since the last resume, its throttles, open
suspensions, held deliveries and history."""

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from relay.config.schema import ReputationSection
from relay.feedback.reputation.judge import HOLDS, Counts, reputation_event
from relay.queue.database import Pool
from relay.queue.reputation import ReputationStore, Suspension

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resumed:
    suspensions: list[Suspension]
    released: int


async def resume(pool: Pool, tenant: str, by: str) -> Resumed:
    """Lift every open suspension of `tenant` (an admin's decision, recorded with `by`),
    release its held bulk deliveries (due now, the held time added to their lifetime) and
    record a `resumed` event. From now on its rates count afresh."""
    async with ReputationStore(pool).transaction() as work:
        await work.wait_for_round()
        lifted = await work.resume(tenant, by)
        since = min((s.since for s in lifted), default=None)
        released = await work.release(tenant, list(HOLDS.values()), since)
        if lifted or released:
            rules = [s.rule for s in lifted]
            await work.record(
                [reputation_event(tenant, "resumed", rules=rules, by=by, released=released)]
            )
    if lifted or released:
        log.warning(
            "tenant %s: bulk sending resumed by %s (%s); %d deliveries released",
            tenant,
            by,
            ", ".join(s.rule for s in lifted) or "-",
            released,
        )
    return Resumed(lifted, released)


async def suspend(pool: Pool, tenant: str, reason: str, by: str) -> tuple[bool, int]:
    """An admin suspends `tenant`'s bulk sending by hand (P-SUSPEND, rule `manual`): its
    queued bulk deliveries are held like an automatic suspension's. Returns whether a new
    suspension was opened and how many deliveries were held."""
    async with ReputationStore(pool).transaction() as work:
        await work.wait_for_round()  # holds in one order: no deadlock
        opened = await work.suspend(tenant, "manual", reason, by) is not None
        held = await work.hold(tenant, HOLDS["manual"])
        if opened:
            event = reputation_event(
                tenant, "suspended", rule="manual", reason=reason, by=by, held=held
            )
            await work.record([event])
    if opened:
        log.warning(
            "tenant %s: bulk sending suspended by %s: %s; %d deliveries held",
            tenant,
            by,
            reason,
            held,
        )
    return opened, held


@dataclass(frozen=True)
class Standing:
    """A tenant's reputation as `relay tenant status` shows it."""

    tenant: str
    sites: dict[str, Counts]
    total: Counts
    counted_since: datetime | None
    """The last resume: only buckets that began after it count."""
    factors: dict[str, float]
    suspensions: list[Suspension]
    held: dict[str, int]
    history: list[Mapping[str, Any]]


async def standing(pool: Pool, tenant: str, settings: ReputationSection) -> Standing:
    store = ReputationStore(pool)
    rows = await store.counts(settings.window, tenant)
    sites = {r["site"]: Counts.of(r) for r in rows}
    total = sum(sites.values(), Counts())
    history = await store.history(tenant, 10)
    resumed = max((r["resumed_at"] for r in history if r["resumed_at"]), default=None)
    throttles = await store.throttles(tenant)
    held = await store.held(list(HOLDS.values()), tenant)
    return Standing(
        tenant=tenant,
        sites=sites,
        total=total,
        counted_since=resumed,
        factors={r["site"]: float(r["factor"]) for r in throttles},
        suspensions=await store.open_suspensions(tenant),
        held={r["hold"]: int(r["deliveries"]) for r in held},
        history=history,
    )
