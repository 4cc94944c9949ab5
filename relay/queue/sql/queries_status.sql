-- `relay status`: one screen for the admin. Read-only, run in one REPEATABLE READ
-- transaction so every section describes the same moment. Each query reads queued rows
-- through the partial indexes on state = 'queued', never the history of finished ones.

-- name: status_database
SELECT current_setting('server_version') AS version, current_database() AS database,
       pg_is_in_recovery() AS in_recovery;

-- name: status_queue
-- Queued deliveries by what they wait for, each counted once: held (a suspension or a
-- canary holds them), in flight (a worker holds the lease), due (may go now) or scheduled
-- (waiting for their retry time).
SELECT CASE WHEN d.hold IS NOT NULL THEN 'held'
            WHEN d.lease_expires_at > now() THEN 'in-flight'
            WHEN d.next_attempt_at <= now() THEN 'due'
            ELSE 'scheduled' END AS state,
       count(*)::bigint AS deliveries,
       count(DISTINCT d.message_id)::bigint AS messages
FROM deliveries AS d
WHERE d.state = 'queued'
GROUP BY 1;

-- name: status_oldest
-- The oldest message with a delivery still queued and not held (held mail waits on
-- purpose), and why it is still there: the head of deliveries_waiting (0017), whose ids
-- follow the order messages were stored in, however long the queue.
SELECT m.id, m.tenant, d.recipient, d.domain, d.attempts, d.last_reply, d.next_attempt_at,
       extract(epoch FROM now() - m.received_at)::float8 AS age_seconds
FROM deliveries AS d JOIN messages AS m ON m.id = d.message_id
WHERE d.state = 'queued' AND d.hold IS NULL
ORDER BY d.id
LIMIT 1;

-- name: status_destinations
-- Queued deliveries per destination domain and its site (the registered domain of its MX
-- hosts, known once a delivery was attempted), the $1 domains with most first; the newest
-- reply says why they wait.
SELECT d.domain, coalesce(max(d.site), '') AS site,
       count(*) FILTER (WHERE d.hold IS NULL AND d.lease_expires_at > now())::bigint
           AS in_flight,
       count(*) FILTER (WHERE d.hold IS NULL AND d.next_attempt_at <= now()
                        AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= now()))::bigint
           AS due,
       count(*) FILTER (WHERE d.hold IS NULL AND d.next_attempt_at > now()
                        AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= now()))::bigint
           AS scheduled,
       count(*) FILTER (WHERE d.hold IS NOT NULL)::bigint AS held,
       extract(epoch FROM now() - min(m.received_at))::float8 AS oldest_seconds,
       (array_agg(d.last_reply ORDER BY d.updated_at DESC)
            FILTER (WHERE d.last_reply IS NOT NULL))[1] AS last_reply
FROM deliveries AS d JOIN messages AS m ON m.id = d.message_id
WHERE d.state = 'queued'
GROUP BY d.domain
ORDER BY count(*) DESC, d.domain
LIMIT $1;

-- name: status_held
-- Held deliveries by tenant and hold (P-COMPLAINT, P-BOUNCE, manual-suspension,
-- canary-pending:CAMPAIGN, canary:CAMPAIGN), with the oldest one's age.
SELECT d.tenant, d.hold, count(*)::bigint AS deliveries,
       extract(epoch FROM now() - min(m.received_at))::float8 AS oldest_seconds
FROM deliveries AS d JOIN messages AS m ON m.id = d.message_id
WHERE d.state = 'queued' AND d.hold IS NOT NULL
GROUP BY d.tenant, d.hold
ORDER BY d.tenant, d.hold;

-- name: status_rates
-- Per tenant, the hourly buckets from the start of the previous hour on ($1: that start),
-- every site and campaign together.
SELECT tenant,
       sum(delivered)::bigint AS delivered, sum(deferred)::bigint AS deferred,
       sum(hard_bounced)::bigint AS hard_bounced, sum(soft_bounced)::bigint AS soft_bounced,
       sum(complained)::bigint AS complained, sum(unsubscribed)::bigint AS unsubscribed
FROM rates
WHERE bucket >= $1
GROUP BY tenant
ORDER BY tenant;

-- name: status_clock
-- The moment the snapshot describes (now() is the transaction's start), and where the
-- rates begin: the start of the previous hourly bucket, so they cover 60 to 120 minutes.
SELECT now() AS now, date_trunc('hour', now()) - interval '1 hour' AS rates_since;

-- name: status_suspensions
SELECT tenant, rule, reason, since, suspended_by,
       extract(epoch FROM now() - since)::float8 AS age_seconds
FROM tenant_suspensions
WHERE resumed_at IS NULL
ORDER BY tenant, since;

-- name: status_campaigns
-- Campaigns that hold mail now: collecting (growing), canary (the rest waits for the
-- window) and waiting (an admin must release or decline).
SELECT tenant, campaign, state, started_at, recipients, canary_size, held, window_ends,
       reason, extract(epoch FROM now() - started_at)::float8 AS age_seconds
FROM campaigns
WHERE state IN ('collecting', 'canary', 'waiting')
ORDER BY CASE state WHEN 'waiting' THEN 0 WHEN 'canary' THEN 1 ELSE 2 END, started_at;

-- name: status_sites
-- Every site's shared state; the caller compares the rate with the site's ceiling, which
-- lives in the configuration, not here.
SELECT site, rate, failures, paused_until, coalesce(paused_until > now(), false) AS paused,
       updated_at
FROM sites
ORDER BY site;

-- name: status_throttles
SELECT tenant, site, factor, rule, reason, updated_at
FROM tenant_throttles
WHERE factor < 1
ORDER BY tenant, site;

-- A long queue is not counted row by row: past relay.queue.status.COUNTED_UP_TO waiting
-- deliveries (read from the counts of 0017), the sections below come from a sample of the
-- table's pages (TABLESAMPLE SYSTEM, $1 percent, about SAMPLE_ROWS rows), and the caller
-- scales their counts up. Pages are sampled whole, and a message's deliveries are written
-- together, so its recipients are sampled together and the counts of messages hold too.

-- name: status_kept_counts
-- The waiting deliveries as the triggers of 0017 count them, and the share of the table
-- (percent) that holds about $1 rows, from its statistics.
SELECT (SELECT coalesce(sum(queued + held), 0) FROM queue_counts)::bigint AS waiting,
       least(100, 100.0 * $1 / greatest(c.reltuples, 1))::float8 AS sample_percent
FROM pg_class AS c WHERE c.oid = 'deliveries'::regclass;

-- name: status_queue_sampled
SELECT CASE WHEN d.hold IS NOT NULL THEN 'held'
            WHEN d.lease_expires_at > now() THEN 'in-flight'
            WHEN d.next_attempt_at <= now() THEN 'due'
            ELSE 'scheduled' END AS state,
       count(*)::bigint AS deliveries,
       count(DISTINCT d.message_id)::bigint AS messages
FROM deliveries AS d TABLESAMPLE SYSTEM ($1)
WHERE d.state = 'queued'
GROUP BY 1;

-- name: status_destinations_sampled
SELECT d.domain, coalesce(max(d.site), '') AS site,
       count(*) FILTER (WHERE d.hold IS NULL AND d.lease_expires_at > now())::bigint
           AS in_flight,
       count(*) FILTER (WHERE d.hold IS NULL AND d.next_attempt_at <= now()
                        AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= now()))::bigint
           AS due,
       count(*) FILTER (WHERE d.hold IS NULL AND d.next_attempt_at > now()
                        AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= now()))::bigint
           AS scheduled,
       count(*) FILTER (WHERE d.hold IS NOT NULL)::bigint AS held,
       extract(epoch FROM now() - min(m.received_at))::float8 AS oldest_seconds,
       (array_agg(d.last_reply ORDER BY d.updated_at DESC)
            FILTER (WHERE d.last_reply IS NOT NULL))[1] AS last_reply
FROM deliveries AS d TABLESAMPLE SYSTEM ($1) JOIN messages AS m ON m.id = d.message_id
WHERE d.state = 'queued'
GROUP BY d.domain
ORDER BY count(*) DESC, d.domain
LIMIT $2;

-- name: status_held_sampled
SELECT d.tenant, d.hold, count(*)::bigint AS deliveries,
       extract(epoch FROM now() - min(m.received_at))::float8 AS oldest_seconds
FROM deliveries AS d TABLESAMPLE SYSTEM ($1) JOIN messages AS m ON m.id = d.message_id
WHERE d.state = 'queued' AND d.hold IS NOT NULL
GROUP BY d.tenant, d.hold
ORDER BY d.tenant, d.hold;
