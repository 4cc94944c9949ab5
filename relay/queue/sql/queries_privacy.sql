-- Personal data (POLICY.md): P-RETENTION purges what is no longer needed, P-ERASURE deletes
-- what the relay holds about one address. Loaded by relay.queue.sql with queries.sql.

-- name: retention_purge_bodies
-- P-RETENTION: the bodies of messages whose deliveries are all final (delivered, bounced,
-- deleted) and whose last update is older than $1 seconds. The content becomes empty, the
-- envelope stays. At most $2 messages per call, so each transaction stays short; rows
-- another relay process is purging at the same time are skipped, not waited for.
WITH due AS (
    SELECT m.id FROM messages AS m
    WHERE m.content_purged_at IS NULL
      AND m.received_at < now() - make_interval(secs => $1)
      AND NOT EXISTS (
          SELECT 1 FROM deliveries AS d
          WHERE d.message_id = m.id
            AND (d.state = 'queued' OR d.updated_at >= now() - make_interval(secs => $1))
      )
    LIMIT $2
    FOR UPDATE OF m SKIP LOCKED
), done AS (
    UPDATE messages AS m SET content = ''::bytea, content_purged_at = now()
    FROM due WHERE m.id = due.id
    RETURNING 1
)
SELECT count(*) FROM done;

-- name: retention_delete_envelopes
-- P-RETENTION: envelopes (the message row, its deliveries, attempts and audit trail) are
-- kept longer than bodies, then deleted: all deliveries final, last update older than $1
-- seconds. At most $2 messages per call.
WITH due AS (
    SELECT m.id FROM messages AS m
    WHERE m.received_at < now() - make_interval(secs => $1)
      AND NOT EXISTS (
          SELECT 1 FROM deliveries AS d
          WHERE d.message_id = m.id
            AND (d.state = 'queued' OR d.updated_at >= now() - make_interval(secs => $1))
      )
    LIMIT $2
    FOR UPDATE OF m SKIP LOCKED
), done AS (
    DELETE FROM messages AS m USING due WHERE m.id = due.id
    RETURNING 1
)
SELECT count(*) FROM done;

-- name: retention_delete_events
-- P-RETENTION: events older than $1 seconds, at most $2 per call. Their counts stay in the
-- hourly `rates` buckets, which hold no address.
WITH due AS (
    SELECT id FROM events WHERE at < now() - make_interval(secs => $1) LIMIT $2
), done AS (
    DELETE FROM events AS e USING due WHERE e.id = due.id
    RETURNING 1
)
SELECT count(*) FROM done;

-- name: retention_delete_reports
-- P-RETENTION: stored feedback reports that were dealt with (processed, unmatched,
-- malformed) and are older than $1 seconds, at most $2 per call. New ones wait for the
-- processor, whatever their age.
WITH due AS (
    SELECT id FROM feedback_reports
    WHERE state IN ('processed', 'unmatched', 'malformed')
      AND received_at < now() - make_interval(secs => $1)
    LIMIT $2
), done AS (
    DELETE FROM feedback_reports AS r USING due WHERE r.id = due.id
    RETURNING 1
)
SELECT count(*) FROM done;

-- name: partitions_add
-- The partitions of table $1 ($2 seconds each) from the last one until $3 seconds ahead
-- (0020_partitions.sql).
SELECT add_partitions($1, make_interval(secs => $2), make_interval(secs => $3));

-- name: partitions_drop
-- P-RETENTION: the partitions of table $1 whose rows are all older than $2 seconds, whole.
SELECT drop_partitions($1, now() - make_interval(secs => $2));

-- In the erasure queries $1 is the address, lower-cased. Text is searched case-insensitively;
-- bytes as text with non-ASCII octets escaped (so an ASCII address is found in any case),
-- and as the lower-cased UTF-8 bytes (so a non-ASCII one is found too).

-- name: erase_find_messages
-- P-ERASURE: the messages to delete: every one with a delivery to the address (its other
-- recipients' copies too: the headers name every recipient), and the relay's own DSNs
-- (null sender) that report on the address. Locked until the erasure commits.
SELECT m.id FROM messages AS m
WHERE EXISTS (
    SELECT 1 FROM deliveries AS d WHERE d.message_id = m.id AND lower(d.recipient) = lower($1)
) OR (
    m.mail_from = ''
    AND (position(lower($1) in lower(encode(m.content, 'escape'))) > 0
         OR position(convert_to($1, 'UTF8') in m.content) > 0)
)
FOR UPDATE OF m;

-- name: erase_attempts
WITH done AS (
    DELETE FROM attempts AS a USING deliveries AS d
    WHERE a.delivery_id = d.id AND d.message_id = ANY($1::uuid[])
    RETURNING 1
)
SELECT count(*) FROM done;

-- name: erase_deliveries
WITH done AS (
    DELETE FROM deliveries WHERE message_id = ANY($1::uuid[]) RETURNING 1
)
SELECT count(*) FROM done;

-- name: erase_messages
WITH done AS (
    DELETE FROM messages WHERE id = ANY($1::uuid[]) RETURNING 1
)
SELECT count(*) FROM done;

-- name: erase_mentions_purge
-- P-ERASURE: messages to other people whose text names the address (a Cc line, a
-- forwarded signature): once their deliveries are all final the body is purged now instead
-- of at the end of the retention window; the envelope (no address of the subject) stays.
WITH done AS (
    UPDATE messages AS m SET content = ''::bytea, content_purged_at = now()
    WHERE m.content_purged_at IS NULL
      AND (position(lower($1) in lower(encode(m.content, 'escape'))) > 0
           OR position(convert_to($1, 'UTF8') in m.content) > 0)
      AND NOT EXISTS (
          SELECT 1 FROM deliveries AS d WHERE d.message_id = m.id AND d.state = 'queued'
      )
    RETURNING 1
)
SELECT count(*) FROM done;

-- name: erase_mentions_queued
-- Messages still queued for other recipients whose text names the address: not deleted
-- (that would lose other people's mail); counted so the admin is told.
SELECT count(*) FROM messages AS m
WHERE m.content_purged_at IS NULL
  AND (position(lower($1) in lower(encode(m.content, 'escape'))) > 0
       OR position(convert_to($1, 'UTF8') in m.content) > 0)
  AND EXISTS (SELECT 1 FROM deliveries AS d WHERE d.message_id = m.id AND d.state = 'queued');

-- name: erase_events
WITH done AS (
    DELETE FROM events
    WHERE lower(recipient) = lower($1) OR position(lower($1) in lower(detail::text)) > 0
    RETURNING 1
)
SELECT count(*) FROM done;

-- name: erase_consent_records
WITH done AS (
    DELETE FROM consent_records WHERE lower(address) = lower($1) RETURNING 1
)
SELECT count(*) FROM done;

-- name: erase_suppressions
-- P-ERASURE: each tenant's entry of the address is replaced by its keyed hash $2 (same
-- reason and time, source "erasure"), so the address stays suppressed (P-SUPPRESS) without
-- being stored. An entry already hashed by an earlier erasure is kept as it is.
WITH gone AS (
    DELETE FROM suppressions WHERE lower(address) = lower($1) AND NOT hashed
    RETURNING tenant, reason, created_at
), kept AS (
    INSERT INTO suppressions (tenant, address, reason, source, created_at, hashed)
    SELECT tenant, $2, reason, 'erasure', created_at, true FROM gone
    ON CONFLICT (tenant, address) DO NOTHING
    RETURNING tenant
)
SELECT tenant FROM gone ORDER BY tenant;

-- name: erase_feedback_reports
WITH done AS (
    DELETE FROM feedback_reports
    WHERE position(lower($1) in lower(encode(raw, 'escape'))) > 0
       OR position(convert_to($1, 'UTF8') in raw) > 0
       OR position(lower($1) in lower(mail_from)) > 0
       OR position(lower($1) in lower(coalesce(reporter, ''))) > 0
       OR position(lower($1) in lower(coalesce(problem, ''))) > 0
       OR EXISTS (SELECT 1 FROM unnest(recipients) AS r WHERE position(lower($1) in lower(r)) > 0)
    RETURNING 1
)
SELECT count(*) FROM done;

-- name: erase_webhook_errors
-- A webhook endpoint's last error may quote an event; it is dropped, the cursor kept.
WITH done AS (
    UPDATE webhook_cursors SET last_error = NULL
    WHERE position(lower($1) in lower(coalesce(last_error, ''))) > 0
    RETURNING 1
)
SELECT count(*) FROM done;
