"""Traffic shaping per destination site, shared by every relay process on one database.

A site is the registered domain of a destination's MX hosts (`relay.psl.site_of`): the
domains one operator serves share its limits. Each site has
- `connections` per process and `messages_per_connection` (enforced in the worker);
- a rate in messages per minute for all processes together: a token bucket in the `sites`
  table, taken one message at a time with a single UPDATE, so two processes together stay
  within it;
- an adaptive rate below that ceiling (AIMD, as TCP does it): a deferral that means "slow
  down" (421, an RFC 3463 4.7.x code, or a site's rate-limit text classified as
  reputation) halves it, down to `MIN_RATE`; each delivered message adds 2% of the ceiling
  back, so a site recovers gradually once it accepts mail again;
- a pause: after `site_pause_after` consecutive failed connections the site is paused for
  `site_pause`; its deliveries then wait, not failed and with no attempt recorded, each
  due at its own time in the first half of a pause after it ends (so a backlog does not
  fall due at one instant; `OutcomeRecording.postpone`).
Limits come from `[[sites]]` in relay.toml, then `relay/delivery/data/sites.toml`, then the
`[delivery]` defaults, most specific first. A site without a rate ceiling (the default for
sites nobody named) has no bucket and no adaptive rate: nothing to take per message.
"""

import asyncio
import logging
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources

from prometheus_client import Gauge

from relay.config.schema import Config
from relay.delivery.outcome import Reply
from relay.feedback.reports.classify import Category, classify
from relay.queue.errors import DATABASE_ERRORS
from relay.queue.sites import SiteStore

log = logging.getLogger(__name__)

MIN_RATE = 1.0  # messages per minute: a throttled site still gets mail
DECREASE = 0.5  # multiplicative decrease on "slow down"
INCREASE = 0.02  # additive increase per delivered message, as a share of the ceiling
BURST_SECONDS = 2.0  # the bucket holds this many seconds' worth of messages (at least one)
MAX_WAIT = 60.0  # longest wait for a token before the delivery is rescheduled instead
UNLIMITED = 1e9  # the rate recorded for a site without a ceiling
PAUSE_FRESH_SECONDS = 1.0
"""How long a site's pause state, as read or set here, is used before it is read again: a
delivery chunk no longer costs a round trip for it."""

SITE_RATE = Gauge(
    "relay_site_rate_per_minute",
    "The adaptive delivery rate of a destination site (messages per minute, all relay "
    "processes together), as this process last set or saw it; below the site's ceiling "
    "after deferrals that mean 'slow down'.",
    ["site"],
)
SITE_PAUSED = Gauge(
    "relay_site_paused",
    "1 while a destination site is paused after repeated connection failures.",
    ["site"],
)


@dataclass(frozen=True)
class SiteLimits:
    connections: int
    messages_per_connection: int
    messages_per_minute: float


@cache
def _shipped() -> dict[str, dict[str, float]]:
    text = resources.files("relay.delivery.data").joinpath("sites.toml").read_text()
    sites: dict[str, dict[str, float]] = tomllib.loads(text).get("sites", {})
    return sites


def site_limits(config: Config, site: str) -> SiteLimits:
    """The limits of `site`: relay.toml's [[sites]], the shipped list, the defaults."""
    delivery = config.delivery
    values: dict[str, float] = {
        "connections": delivery.connections_per_site,
        "messages_per_connection": delivery.messages_per_connection,
        "messages_per_minute": delivery.default_site_messages_per_minute,
    }
    values.update(_shipped().get(site, {}))
    for entry in config.sites:
        if entry.name == site:
            values.update({k: v for k, v in entry.model_dump(exclude={"name"}).items() if v})
    return SiteLimits(
        int(values["connections"]),
        int(values["messages_per_connection"]),
        float(values["messages_per_minute"]),
    )


def means_slow_down(reply: Reply) -> bool:
    """A deferral that asks the sender to send less (not one about the message)."""
    if reply.code == 421 or reply.status.startswith("4.7."):
        return True
    return reply.code // 100 == 4 and classify(reply.status, reply.text).category == (
        Category.REPUTATION
    )


class SiteShaper:
    """This process's view of the shared site state, and its per-site connection slots."""

    def __init__(self, sites: SiteStore, config: Config) -> None:
        self.sites = sites
        self.config = config
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._known: set[str] = set()  # sites whose row exists
        self._paused: dict[str, tuple[float, datetime | None]] = {}  # site -> (seen, until)
        self._rates: dict[str, float] = {}  # site -> its adaptive rate as last seen here

    def rate(self, site: str) -> float:
        """The site's rate in messages per minute as this process last saw it (its
        ceiling before then); 0 for a site without a ceiling."""
        ceiling = self.limits(site).messages_per_minute
        return min(ceiling, self._rates.get(site, ceiling)) if ceiling else 0.0

    def reload(self, config: Config) -> None:
        self.config = config

    def limits(self, site: str) -> SiteLimits:
        return site_limits(self.config, site)

    def slots(self, site: str) -> asyncio.Semaphore:
        """Connection slots of `site` in this process (resized only for new sites)."""
        if site not in self._slots:
            self._slots[site] = asyncio.Semaphore(self.limits(site).connections)
        return self._slots[site]

    async def paused_until(self, site: str) -> datetime | None:
        """The end of the site's pause, if it is paused: as this process last read or set
        it, if that was less than PAUSE_FRESH_SECONDS ago (a pause set by another process
        or host is seen that much later), else read from the database."""
        seen = self._paused.get(site)
        if seen is not None and time.monotonic() - seen[0] < PAUSE_FRESH_SECONDS:
            return seen[1] if seen[1] is not None and seen[1] > datetime.now(UTC) else None
        try:
            until = await self.sites.paused_until(site)
        except DATABASE_ERRORS as exc:
            log.warning("cannot read the state of site %s: %r", site, exc)
            return None
        self._saw_pause(site, until)
        return until

    def _saw_pause(self, site: str, until: datetime | None) -> None:
        if until is not None and until <= datetime.now(UTC):
            until = None
        self._paused[site] = (time.monotonic(), until)
        SITE_PAUSED.labels(site).set(1 if until else 0)

    async def _ensure(self, site: str, ceiling: float) -> None:
        if site not in self._known:
            await self.sites.ensure(site, ceiling)
            self._known.add(site)

    async def take(self, site: str) -> bool:
        """Wait for the site's bucket to let one message start; False if that would take
        longer than MAX_WAIT (the caller reschedules instead of holding a connection)."""
        ceiling = self.limits(site).messages_per_minute
        if not ceiling:
            return True
        burst = max(1.0, ceiling / 60 * BURST_SECONDS)
        waited = 0.0
        while True:
            try:
                await self._ensure(site, ceiling)
                taken = await self.sites.take(site, ceiling, burst)
            except DATABASE_ERRORS as exc:  # the database is the queue: without it nothing moves
                log.warning("cannot take a token for site %s: %r", site, exc)
                return False
            SITE_RATE.labels(site).set(taken.rate)
            self._rates[site] = taken.rate
            if taken.granted:
                return True
            wait = max(0.05, (1 - taken.tokens) / (taken.rate / 60))
            if waited + wait > MAX_WAIT:
                return False
            await asyncio.sleep(wait)
            waited += wait

    async def record(self, site: str, replies: list[Reply], connected: bool) -> None:
        """Adapt the site's rate to what it answered, and count failed connections."""
        limited = bool(self.limits(site).messages_per_minute)
        ceiling = self.limits(site).messages_per_minute or UNLIMITED
        slow = limited and any(means_slow_down(r) for r in replies)
        delivered = sum(1 for r in replies if r.code // 100 == 2)
        try:
            await self._ensure(site, ceiling)
            adapted = await self.sites.adapt(
                site,
                ceiling,
                DECREASE if slow else 1.0,
                0.0 if slow else delivered * INCREASE * ceiling,
                MIN_RATE,
                connected,
                self.config.delivery.site_pause_after,
                self.config.delivery.site_pause,
            )
        except DATABASE_ERRORS as exc:
            log.warning("cannot record the outcome for site %s: %r", site, exc)
            return
        if adapted is None:
            return
        self._saw_pause(site, adapted.paused_until)
        rate = adapted.rate
        if limited:
            SITE_RATE.labels(site).set(rate)
            self._rates[site] = rate
            if slow:
                log.info("site %s asked to slow down: rate now %.1f/min", site, rate)
