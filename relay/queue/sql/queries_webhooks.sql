-- Webhooks and `relay events tail`: reading `events` in id order without skipping any, and
-- each tenant's webhook cursor (`webhook_cursors`) used as a lease with an expiry.

-- name: events_last_allocated_id
-- The highest event id handed out so far (committed or not); 0 before the first event.
SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('events', 'id')::regclass), 0);

-- name: events_writers
-- Transactions that may still commit events: an INSERT holds RowExclusiveLock on the table
-- from before it takes an id from the sequence until its transaction ends.
SELECT coalesce(array_agg(virtualtransaction), '{}')
FROM pg_locks
WHERE locktype = 'relation' AND mode = 'RowExclusiveLock'
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND relation = 'events'::regclass AND pid IS DISTINCT FROM pg_backend_pid();

-- name: events_writers_left
-- How many of the transactions in $1 (from events_writers) are still running.
SELECT count(*)
FROM pg_locks
WHERE locktype = 'relation' AND mode = 'RowExclusiveLock'
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND relation = 'events'::regclass AND virtualtransaction = ANY($1::text[]);

-- name: events_last
-- The last $3 events up to id $2 (of tenant $1, or all when NULL), oldest first.
SELECT * FROM (
    SELECT id, tenant, kind, at, message_id, recipient, site, campaign, detail
    FROM events WHERE ($1::text IS NULL OR tenant = $1) AND id <= $2
    ORDER BY id DESC LIMIT $3
) AS last ORDER BY id;

-- name: events_window
-- Events with $2 < id <= $3 (of tenant $1, or all when NULL), in id order.
SELECT id, tenant, kind, at, message_id, recipient, site, campaign, detail
FROM events WHERE ($1::text IS NULL OR tenant = $1) AND id > $2 AND id <= $3
ORDER BY id LIMIT $4;

-- name: webhook_due
-- Which of the tenants in $1 have events up to id $2 past their cursor and are not backing
-- off or being posted for (a tenant without a cursor row yet starts at event 0).
SELECT t.tenant
FROM unnest($1::text[]) AS t (tenant)
LEFT JOIN webhook_cursors AS c ON c.tenant = t.tenant
WHERE coalesce(c.next_try_at, now()) <= now()
  AND EXISTS (SELECT 1 FROM events AS e
              WHERE e.tenant = t.tenant AND e.id > coalesce(c.last_event, 0) AND e.id <= $2);

-- name: webhook_claim
-- Take tenant $1's cursor for $2 seconds (creating it on first use): next_try_at moves past
-- the POST's timeout, so no other relay process claims it meanwhile. The returned
-- next_try_at is the lease: the result is written only where it still matches.
INSERT INTO webhook_cursors AS c (tenant, next_try_at)
VALUES ($1, now() + make_interval(secs => $2))
ON CONFLICT (tenant) DO UPDATE SET next_try_at = excluded.next_try_at
WHERE c.next_try_at <= now()
RETURNING last_event, failures, next_try_at;

-- name: webhook_batch
SELECT id, tenant, kind, at, message_id, recipient, site, campaign, detail
FROM events WHERE tenant = $1 AND id > $2 AND id <= $3
ORDER BY id LIMIT $4;

-- name: webhook_advance
-- The receiver acknowledged events up to $3: move the cursor and end the lease.
UPDATE webhook_cursors
SET last_event = greatest(last_event, $3), failures = 0, last_error = NULL, next_try_at = now()
WHERE tenant = $1 AND next_try_at = $2;

-- name: webhook_failed
-- The POST failed: keep the cursor, try again in $4 seconds.
UPDATE webhook_cursors
SET failures = failures + 1, last_error = $3, next_try_at = now() + make_interval(secs => $4)
WHERE tenant = $1 AND next_try_at = $2;

-- name: webhook_release
-- Give back a lease without a result (shutdown during a POST): due again at once.
UPDATE webhook_cursors SET next_try_at = now() WHERE tenant = $1 AND next_try_at = $2;
