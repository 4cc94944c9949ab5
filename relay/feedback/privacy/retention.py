"""P-RETENTION: keep personal data only as long as it serves a purpose, then let it go.

`relay serve` runs `Retention` in the background; each round (`purge_once`):

- bodies: a message whose deliveries are all final (delivered, bounced, deleted) keeps its
  content for `[feedback] retention_bodies` (default 7 days, for support questions) after
  its last delivery attempt ended; then the content becomes empty and `content_purged_at`
  is set. The envelope (sender, recipients, attempts, audit trail) stays;
- envelopes: once the last attempt is `retention_events` old (default 90 days) the message
  row goes too, with its deliveries, attempts and policy results;
- events, and feedback reports that were dealt with (processed, unmatched, malformed),
  older than `retention_events`. Reports still waiting for the processor stay. The hourly
  `rates` rows are the aggregate that remains: counts per tenant, site and campaign,
  without addresses.

Events and attempts live in time partitions (relay.queue.partitions): a round adds those
the next rows need and drops whole the ones past the window, so only the oldest partition
is ever deleted from row by row.

Mail still queued, or held for a suspended tenant or a canary, is never touched. Work is
done in batches of short transactions, so a large backlog does not hold locks for long,
and several relay processes may purge at once (rows being purged are skipped). The
windows are those of the configuration last loaded, so a reload changes them.
"""

import logging
from dataclasses import dataclass

from prometheus_client import Counter

from relay.config.schema import Config, FeedbackSection
from relay.queue.database import Pool
from relay.queue.outage import every, sleeping
from relay.queue.partitions import Partitions
from relay.queue.retention import Purgeable, RetentionStore

log = logging.getLogger(__name__)

INTERVAL = 300.0
"""Seconds between two rounds."""
BATCH = 1000
"""Rows per statement (one transaction each)."""

PURGED = Counter(
    "relay_retention_purged",
    "What P-RETENTION removed: message bodies, envelopes (messages with their deliveries), "
    "events and feedback reports.",
    ["what"],
)


@dataclass(frozen=True)
class Purged:
    bodies: int = 0
    envelopes: int = 0
    events: int = 0
    reports: int = 0


async def _drain(store: RetentionStore, what: Purgeable, window: float, batch: int) -> int:
    """Run one purge statement until it finds less than a full batch."""
    total = 0
    while True:
        count = await store.purge_batch(what, float(window), batch)
        total += count
        if count < batch:
            return total


async def purge_once(
    pool: Pool, feedback: FeedbackSection, *, queue_lifetime: float = 0.0, batch: int = BATCH
) -> Purged:
    """One round: add the partitions the next rows need, drop those past their window,
    purge what else is past it; return what went. An attempt is never older than its
    message's last delivery by more than `queue_lifetime`, so partitions of attempts older
    than that plus the window belong to envelopes already gone or going."""
    store = RetentionStore(pool)
    events_window = feedback.retention_events
    partitions = Partitions(pool)
    for table, window in (("events", events_window),
                          ("attempts", events_window + queue_lifetime)):  # fmt: skip
        await partitions.add(table, window)
        if dropped := await partitions.drop_older(table, window):
            log.info("retention dropped %d partitions of %s", dropped, table)
    # envelopes first: a body about to go with its envelope is not worth purging
    envelopes = await _drain(store, "envelopes", events_window, batch)
    purged = Purged(
        bodies=await _drain(store, "bodies", feedback.retention_bodies, batch),
        envelopes=envelopes,
        events=await _drain(store, "events", events_window, batch),
        reports=await _drain(store, "reports", events_window, batch),
    )
    for what, count in vars(purged).items():
        if count:
            PURGED.labels(what).inc(count)
    return purged


class Retention:
    """The retention task: a purge every `interval` seconds until cancelled, with the
    windows of the configuration last loaded (a reload changes them from the next round).
    A database that does not answer is logged and tried again next round
    (`relay.queue.outage`)."""

    def __init__(self, pool: Pool, config: Config, interval: float = INTERVAL) -> None:
        self.pool = pool
        self.interval = interval
        self.reload(config)

    def reload(self, config: Config) -> None:
        self.windows = config.feedback
        self.queue_lifetime = config.delivery.queue_lifetime

    async def run(self) -> None:
        await every("retention round", self.round, sleeping(lambda: self.interval))

    async def round(self) -> None:
        purged = await purge_once(self.pool, self.windows, queue_lifetime=self.queue_lifetime)
        if any(vars(purged).values()):
            log.info(
                "retention purged bodies=%d envelopes=%d events=%d reports=%d",
                purged.bodies,
                purged.envelopes,
                purged.events,
                purged.reports,
            )
