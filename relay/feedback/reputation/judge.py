"""P-COMPLAINT and P-BOUNCE: a tenant whose recipients complain, or whose list bounces, is
slowed down, and then its bulk sending is suspended until an admin resumes it.

Every `[reputation] check_every` a round (`evaluate`) reads the hourly `rates` buckets of
the last `window` (default 7 days):

- the complaint rate is complained / delivered (complaints and abuse reports, RFC 5965
  feedback loops); the hard-bounce rate is hard_bounced / (delivered + hard_bounced), so a
  list that mostly bounces is judged too. A rate is judged only once its denominator
  reaches `min_volume` (default 1,000): three complaints among a hundred messages say
  little;
- per tenant and site (the MX operator), above the warning level (0.1% complaints, 5%
  hard bounces) the tenant's pace toward that site is halved each round, down to
  `throttle_floor` (1/16); below it, `throttle_recovery` is added back each round up to 1.
  The delivery worker reads the factor through `Standing.throttle_factor`: the site's mailbox
  owners are the ones complaining, so that is where the sending slows;
- over the tenant's whole traffic, above the limit (0.3% complaints, 10% hard bounces) its
  bulk sending is suspended: a `tenant_suspensions` row, its queued bulk deliveries held
  (`deliveries.hold` = the rule), a `suspended` event for the tenant, a log line and
  `relay_tenant_suspended`. Transactional mail (receipts, password resets) keeps flowing:
  those recipients asked for it. New bulk submissions are refused at DATA
  (`relay.policy.checks.reputation`).

A suspension is sticky: a rate that falls (complaints age out of the window) does not lift
it; an admin does (`relay tenant resume`), which releases the held deliveries and starts
the tenant's record afresh: from then on only hourly buckets that began after the resume
count, or the same old complaints would suspend it again at the next round. An admin may
also suspend a tenant's bulk sending by hand (rule `manual`, P-SUSPEND).

Several relay processes on one database share the work: a round claims the single row of
`reputation_rounds` (locked until it commits, and skipped when the last round is recent),
so a factor is halved once per interval, not once per process. Every process refreshes its
caches (the factors, and the open suspensions the SMTP path reads) after each round.
"""

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

from relay.config.schema import Config, ReputationSection
from relay.feedback.reputation.standing import Standing
from relay.queue.database import Pool
from relay.queue.events import Event, Kind
from relay.queue.outage import every, sleeping
from relay.queue.reputation import ReputationStore, ReputationWork, Suspension

log = logging.getLogger(__name__)

HOLDS: Mapping[str, str] = {
    "P-COMPLAINT": "P-COMPLAINT",
    "P-BOUNCE": "P-BOUNCE",
    "manual": "manual-suspension",
}
"""The `deliveries.hold` each kind of suspension puts on the tenant's queued bulk mail."""

# -- rates ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    delivered: int = 0
    hard_bounced: int = 0
    complained: int = 0

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(
            self.delivered + other.delivered,
            self.hard_bounced + other.hard_bounced,
            self.complained + other.complained,
        )

    @classmethod
    def of(cls, row: Mapping[str, int]) -> "Counts":
        return cls(int(row["delivered"]), int(row["hard_bounced"]), int(row["complained"]))


@dataclass(frozen=True)
class Measure:
    """One rate, judged against its levels."""

    rule: str  # P-COMPLAINT | P-BOUNCE
    what: str  # "complaint rate" | "hard-bounce rate"
    rate: float
    warn: float
    limit: float

    @property
    def above_warning(self) -> bool:
        return self.rate > self.warn

    @property
    def above_limit(self) -> bool:
        return self.rate > self.limit

    def describe(self, window: float, level: str = "limit") -> str:
        """`complaint rate 0.45% over 7 days (limit 0.3%)`."""
        threshold = self.limit if level == "limit" else self.warn
        name = "limit" if level == "limit" else "warning level"
        return (
            f"{self.what} {percent(self.rate)} over {duration(window)} "
            f"({name} {percent(threshold, exact=True)})"
        )


def measures(counts: Counts, settings: ReputationSection) -> list[Measure]:
    """The rates `counts` has enough volume for, complaints first."""
    found = []
    if counts.delivered >= settings.min_volume:
        rate = counts.complained / counts.delivered
        found.append(
            Measure(
                "P-COMPLAINT",
                "complaint rate",
                rate,
                settings.complaint_warn,
                settings.complaint_limit,
            )
        )
    attempted = counts.delivered + counts.hard_bounced
    if attempted >= settings.min_volume:
        rate = counts.hard_bounced / attempted
        found.append(
            Measure(
                "P-BOUNCE", "hard-bounce rate", rate, settings.bounce_warn, settings.bounce_limit
            )
        )
    return found


def next_factor(current: float, above_warning: bool, settings: ReputationSection) -> float:
    """Halve while above the warning level (down to the floor); add the recovery step back
    while below (up to 1): cut fast, recover gradually."""
    if above_warning:
        return max(settings.throttle_floor, current / 2)
    recovered = current + settings.throttle_recovery
    return 1.0 if recovered >= 1.0 - 1e-9 else recovered


def percent(rate: float, *, exact: bool = False) -> str:
    """0.0045 -> '0.45%'; with `exact` (a configured level) 0.003 -> '0.3%'."""
    return f"{rate * 100:g}%" if exact else f"{rate * 100:.2f}%"


def duration(seconds: float) -> str:
    """604800 -> '7 days', 3600 -> '1 hour', 5400 -> '90 minutes'."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and math.isclose(seconds % size, 0, abs_tol=1e-6):
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} seconds"


# -- one round ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    """What a round changed."""

    factors: dict[tuple[str, str], float] = field(default_factory=dict)
    """(tenant, site) -> the new factor, for those that changed."""
    suspended: list[Suspension] = field(default_factory=list)
    """Suspensions this round opened."""
    held: dict[tuple[str, str], int] = field(default_factory=dict)
    """(tenant, rule) -> queued bulk deliveries this round held."""


def reputation_event(tenant: str, kind: str, site: str = "", **detail: object) -> Event:
    # events.Kind names the feedback kinds; migration 0008 allows these three as well.
    return Event(tenant, cast(Kind, kind), site=site, detail=detail)


async def evaluate(
    pool: Pool, settings: ReputationSection, *, min_gap: float | None = None
) -> Round | None:
    """Judge every tenant's rates once, in one transaction; None when another process ran a
    round less than `min_gap` seconds ago (default: half of `check_every`)."""
    gap = settings.check_every / 2 if min_gap is None else min_gap
    async with ReputationStore(pool).transaction() as work:
        if not await work.claim_round(gap):
            return None
        rows = await work.counts(settings.window, None)
        per_site = {(r["tenant"], r["site"]): Counts.of(r) for r in rows}
        per_tenant: dict[str, Counts] = {}
        for (tenant, _), counts in per_site.items():
            per_tenant[tenant] = per_tenant.get(tenant, Counts()) + counts
        events: list[Event] = []
        factors = await _throttle(work, per_site, settings, events)
        opened = await _suspend_over_limit(work, per_tenant, settings)
        held = await _hold_bulk(work)
        for s in opened:
            count = held.get((s.tenant, s.rule), 0)
            events.append(
                reputation_event(s.tenant, "suspended", rule=s.rule, reason=s.reason, held=count)
            )
            log.warning(
                "tenant %s: bulk sending suspended (%s): %s; %d queued bulk deliveries held, "
                "transactional mail flows; `relay tenant resume %s` lifts it",
                s.tenant,
                s.rule,
                s.reason,
                count,
                s.tenant,
            )
        for (tenant, rule), count in held.items():
            if count and not any(s.tenant == tenant and s.rule == rule for s in opened):
                log.info("tenant %s: %d more bulk deliveries held (%s)", tenant, count, rule)
        await work.record(events)
    return Round(factors, opened, held)


async def _throttle(
    work: ReputationWork,
    per_site: Mapping[tuple[str, str], Counts],
    settings: ReputationSection,
    events: list[Event],
) -> dict[tuple[str, str], float]:
    """Step each (tenant, site) factor; an event for each cut and for a lifted one."""
    stored = {
        (r["tenant"], r["site"]): (float(r["factor"]), r["rule"], r["reason"])
        for r in await work.throttles(None)
    }
    changed: dict[tuple[str, str], float] = {}
    for key in sorted(per_site.keys() | stored.keys()):
        tenant, site = key
        if not site:  # traffic of no known site: nothing to slow down
            continue
        over = [m for m in measures(per_site.get(key, Counts()), settings) if m.above_warning]
        current, rule, reason = stored.get(key, (1.0, "", ""))
        new = next_factor(current, bool(over), settings)
        if math.isclose(new, current):
            continue
        changed[key] = new
        if over:
            rule = over[0].rule
            reason = "; ".join(m.describe(settings.window, "warn") for m in over)
        await work.set_throttle(tenant, site, new, rule, reason)
        if over or new >= 1.0:
            events.append(
                reputation_event(
                    tenant,
                    "throttled",
                    site,
                    rule=rule,
                    factor=new,
                    reason=reason if over else "below the warning level",
                )
            )
            log.info(
                "tenant %s: pace toward %s now %g (%s)",
                tenant,
                site,
                new,
                reason if over else "recovered",
            )
    return changed


async def _suspend_over_limit(
    work: ReputationWork, per_tenant: Mapping[str, Counts], settings: ReputationSection
) -> list[Suspension]:
    opened = []
    for tenant, counts in sorted(per_tenant.items()):
        for m in measures(counts, settings):
            if not m.above_limit:
                continue
            reason = m.describe(settings.window)
            since = await work.suspend(tenant, m.rule, reason, None)
            if since is not None:
                opened.append(Suspension(tenant, m.rule, reason, since))
    return opened


async def _hold_bulk(work: ReputationWork) -> dict[tuple[str, str], int]:
    """Hold the queued bulk deliveries of every suspended tenant that nothing holds yet:
    those of a new suspension, and any queued since (a message accepted before this
    process saw the suspension, or another hold lifted)."""
    held = {}
    for s in await work.open_suspensions():
        held[(s.tenant, s.rule)] = await work.hold(s.tenant, HOLDS[s.rule])
    return held


class ReputationRounds:
    """The reputation task: a round every `check_every` until cancelled, then `standing`
    refreshed from what the round (this process's or another's) decided. A reload changes
    the settings from the next round on. A round the database did not answer is tried
    again (`relay.queue.outage`): judging late is better than a relay that stops."""

    def __init__(self, pool: Pool, config: Config, standing: Standing) -> None:
        self.pool = pool
        self.standing = standing
        self.reload(config)

    def reload(self, config: Config) -> None:
        self.settings = config.reputation

    async def run(self) -> None:
        await every("reputation round", self.round, sleeping(lambda: self.settings.check_every))

    async def round(self) -> None:
        await evaluate(self.pool, self.settings)
        await self.standing.refresh()
