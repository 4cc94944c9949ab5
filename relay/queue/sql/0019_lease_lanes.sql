-- Leasing that a backlog cannot stall. The lease walked one index per tenant in time order
-- and filtered out the destinations already busy after the walk, so 1,000,000 due rows of
-- one rate-limited destination were read on every lease (about a second each), and a
-- tenant's fresh mail waited behind its whole deferred backlog.
--
-- Now each tenant has two lanes taken in turns, as Postfix's queue manager alternates its
-- incoming and deferred queues: mail never answered yet (`last_reply` NULL) and mail that
-- was (a retry, or postponed by a site's pause). A leased row is due again only when its
-- lease would expire (the lease moves `next_attempt_at`), so rows in flight are not walked
-- either. The per-destination index lets a process move the due backlog of a destination
-- that cannot take it now to the times it can (`defer_pair`).
--
-- The index of all due deliveries by time alone served the leases of 0001 only. Every
-- index costs each write of a delivery (moving a backlog rewrites every row), so it goes;
-- the due count of /metrics reads deliveries_waiting while the queue is short and the
-- planner's estimate beyond.
DROP INDEX deliveries_due_per_tenant;
DROP INDEX deliveries_due;
CREATE INDEX deliveries_fresh ON deliveries (tenant, next_attempt_at)
    WHERE state = 'queued' AND hold IS NULL AND last_reply IS NULL;
CREATE INDEX deliveries_retried ON deliveries (tenant, next_attempt_at)
    WHERE state = 'queued' AND hold IS NULL AND last_reply IS NOT NULL;
CREATE INDEX deliveries_per_destination ON deliveries (tenant, domain, next_attempt_at)
    WHERE state = 'queued' AND hold IS NULL;
