-- Named queries, loaded by relay.queue.sql. Each block starts with "-- name: NAME".

-- name: store_messages
-- Messages and their deliveries in one statement: one round trip and its own transaction.
-- No NOTIFY here: the committer sends it afterwards (relay/queue/store.py says why). A
-- retried group commit re-sends the same ids: only messages not yet stored, and their
-- deliveries, are written, and their count comes back.
WITH new AS (
    INSERT INTO messages (id, tenant, mail_from, content, size, header_message_id,
                          client_address, campaign, bulk, policy)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::int[],
                         $6::text[], $7::text[], $8::text[], $9::boolean[], $10::jsonb[])
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), added AS (
    INSERT INTO deliveries (message_id, recipient, domain, expires_at, tenant)
    SELECT x.m, x.r, x.d, now() + make_interval(secs => $11), x.t
    FROM unnest($12::uuid[], $13::text[], $14::text[], $15::text[]) AS x (m, r, d, t)
    WHERE x.m IN (SELECT id FROM new)
    RETURNING 1
)
SELECT (SELECT count(*) FROM new) AS messages, (SELECT count(*) FROM added) AS deliveries;

-- name: notify_queue
SELECT pg_notify('relay_queue', '');

-- name: lease_due
-- Due deliveries for this process ($1, lease token $2, for $3 seconds), at most $4, taken in
-- turns between tenants ($5: the tenants whose mail may go; a suspended tenant's mail is
-- held) and, within a tenant, between its two lanes (0019): mail never answered and mail
-- retried, so neither a retried backlog nor another tenant's delays fresh mail. Each lane
-- reads at most $8 rows from its head, leaving out the `tenant/domain` pairs whose share of
-- this process is in flight ($6), and gives at most $7; a destination that cannot take its
-- backlog has it moved to later times (defer_destination) instead of being read again on
-- every lease. SKIP LOCKED lets several processes and hosts take disjoint batches. A leased
-- delivery is due again when its lease would expire: after a crash, any process takes it.
WITH candidates AS (
    SELECT c.id, c.lane, c.next_attempt_at,
           row_number() OVER (PARTITION BY t.tenant, c.lane ORDER BY c.next_attempt_at)
               AS turn
    FROM unnest($5::text[]) AS t (tenant)
    CROSS JOIN LATERAL (
        (SELECT head.id, 0 AS lane, head.next_attempt_at FROM (
            SELECT id, domain, next_attempt_at, lease_expires_at FROM deliveries
            WHERE tenant = t.tenant AND state = 'queued' AND hold IS NULL
              AND last_reply IS NULL AND next_attempt_at <= now()
            ORDER BY next_attempt_at
            LIMIT $8
        ) AS head
        WHERE (head.lease_expires_at IS NULL OR head.lease_expires_at < now())
          AND (t.tenant || '/' || head.domain) <> ALL($6::text[])
        LIMIT least($4::bigint, $7::bigint))
        UNION ALL
        (SELECT head.id, 1 AS lane, head.next_attempt_at FROM (
            SELECT id, domain, next_attempt_at, lease_expires_at FROM deliveries
            WHERE tenant = t.tenant AND state = 'queued' AND hold IS NULL
              AND last_reply IS NOT NULL AND next_attempt_at <= now()
            ORDER BY next_attempt_at
            LIMIT $8
        ) AS head
        WHERE (head.lease_expires_at IS NULL OR head.lease_expires_at < now())
          AND (t.tenant || '/' || head.domain) <> ALL($6::text[])
        LIMIT least($4::bigint, $7::bigint))
    ) AS c
), chosen AS (
    SELECT d.id FROM deliveries AS d
    WHERE d.id IN (SELECT id FROM candidates ORDER BY turn, lane, next_attempt_at LIMIT $4)
      AND d.state = 'queued' AND (d.lease_expires_at IS NULL OR d.lease_expires_at < now())
    FOR UPDATE SKIP LOCKED
)
UPDATE deliveries AS d
SET lease_owner = $1, lease_token = $2, lease_expires_at = now() + make_interval(secs => $3),
    next_attempt_at = now() + make_interval(secs => $3)
FROM chosen, messages AS m
WHERE d.id = chosen.id AND m.id = d.message_id
RETURNING d.id, d.message_id, d.recipient, d.domain, d.attempts, d.expires_at,
          m.tenant, m.mail_from, m.received_at, m.campaign;

-- name: defer_destination
-- Up to $5 of the oldest due deliveries of one tenant to one destination domain ($1, $2),
-- not leased, past the first $7 (left for the leases to come), moved to the times the
-- destination can take them: the n-th at $3 plus n times $4 seconds, or, with a reply $6
-- (why they wait, kept as their last reply), at a random time within $4 seconds after $3 (a
-- paused site's backlog, spread over the time after its pause), with $8 as their site. No
-- attempt is recorded and none counted: nothing was tried. The number moved comes back.
WITH due AS (
    SELECT id, row_number() OVER (ORDER BY next_attempt_at) AS n FROM (
        SELECT id, next_attempt_at FROM deliveries
        WHERE tenant = $1 AND domain = $2 AND state = 'queued' AND hold IS NULL
          AND next_attempt_at <= now()
          AND (lease_expires_at IS NULL OR lease_expires_at < now())
        ORDER BY next_attempt_at
        LIMIT $5 OFFSET $7
        FOR UPDATE SKIP LOCKED
    ) AS oldest
), moved AS (
    UPDATE deliveries AS d
    SET next_attempt_at = least(d.expires_at, $3::timestamptz + make_interval(secs =>
            CASE WHEN $6::text IS NULL THEN due.n * $4::float8 ELSE random() * $4::float8 END)),
        last_reply = coalesce($6, d.last_reply), site = coalesce($8, d.site),
        updated_at = now()
    FROM due
    WHERE d.id = due.id
    RETURNING 1
)
SELECT count(*) FROM moved;

-- name: message_content
SELECT content FROM messages WHERE id = $1;

-- name: message_contents
SELECT id, content FROM messages WHERE id = ANY($1::uuid[]);

-- name: renew_leases
-- A leased delivery is due again when its lease would expire (lease_due): both move on.
UPDATE deliveries SET lease_expires_at = now() + make_interval(secs => $2),
                      next_attempt_at = now() + make_interval(secs => $2)
WHERE lease_token = ANY($1::uuid[]) AND state = 'queued';

-- name: release_leases
UPDATE deliveries SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                      next_attempt_at = now()
WHERE lease_owner = $1 AND state = 'queued';

-- name: postpone_deliveries
-- A paused site's deliveries wait for the pause to end, each until its own time $3: the
-- lease given back, no attempt recorded (none was made) and the count of attempts as it was.
UPDATE deliveries AS d
SET next_attempt_at = x.at, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
    last_reply = $4, site = coalesce($5, d.site), updated_at = now()
FROM unnest($1::bigint[], $2::uuid[], $3::timestamptz[]) AS x (id, token, at)
WHERE d.id = x.id AND d.lease_token = x.token AND d.state = 'queued';

-- name: finish_attempts
-- Completes a connection's attempts in one statement, each only while the caller still holds
-- its lease: a delivery whose lease expired (and was taken by another worker) changes nothing
-- and is not among the ids that come back. The events of the attempts completed ($9: whose
-- delivery) go in too, and a trigger counts them in `rates` (0014_rates_from_events.sql).
WITH outcome AS (
    SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[],
                         $6::text[], $7::text[])
        AS x (id, token, state, retry_at, reply, host, kind)
), d AS (
    UPDATE deliveries AS d
    SET state = o.state, next_attempt_at = coalesce(o.retry_at, d.next_attempt_at),
        attempts = d.attempts + 1, last_reply = o.reply, lease_owner = NULL,
        lease_token = NULL, lease_expires_at = NULL, updated_at = now(),
        site = coalesce($8, d.site)
    FROM outcome AS o
    WHERE d.id = o.id AND d.lease_token = o.token AND d.state = 'queued'
    RETURNING d.id, o.host, o.kind, o.reply
), logged AS (
    INSERT INTO events (tenant, kind, recipient, message_id, site, campaign, detail)
    SELECT e.t, e.k, e.r, e.m, e.s, e.c, e.d::jsonb
    FROM unnest($9::bigint[], $10::text[], $11::text[], $12::text[], $13::uuid[], $14::text[],
                $15::text[], $16::text[]) AS e (delivery, t, k, r, m, s, c, d)
    WHERE e.delivery IN (SELECT id FROM d)
)
INSERT INTO attempts (delivery_id, host, outcome, reply)
SELECT id, host, kind, reply FROM d
RETURNING delivery_id;

-- name: queue_counts
-- Waiting deliveries, from the counts the triggers of 0017 keep: a few rows, however long
-- the queue.
SELECT coalesce(sum(queued), 0)::bigint AS queued, coalesce(sum(held), 0)::bigint AS held
FROM queue_counts;

-- name: queue_due
-- Counted row by row: only asked while the queue is short (health.py, DUE_COUNTED_UP_TO).
SELECT count(*)::bigint FROM deliveries
WHERE state = 'queued' AND hold IS NULL AND next_attempt_at <= now();

-- name: queue_due_estimate
-- The planner's estimate of the same count, from the table's statistics: a long queue's
-- due deliveries without reading them.
EXPLAIN (FORMAT JSON) SELECT 1 FROM deliveries
WHERE state = 'queued' AND hold IS NULL AND next_attempt_at <= now();

-- name: queue_oldest
-- The message of the longest-waiting delivery not held, at the head of deliveries_waiting.
SELECT extract(epoch FROM now() - m.received_at)::float8
FROM deliveries AS d JOIN messages AS m ON m.id = d.message_id
WHERE d.state = 'queued' AND d.hold IS NULL
ORDER BY d.id
LIMIT 1;

-- name: list_deliveries
SELECT d.id, d.message_id, m.tenant, m.mail_from, d.recipient, d.state, d.attempts,
       d.next_attempt_at, d.last_reply, m.received_at
FROM deliveries d JOIN messages m ON m.id = d.message_id
WHERE ($1::text IS NULL OR d.state = $1) AND ($2::text IS NULL OR m.tenant = $2)
ORDER BY d.id
LIMIT $3;

-- name: find_messages
SELECT id FROM messages WHERE id::text LIKE $1 || '%' ORDER BY received_at LIMIT 2;

-- name: show_message
SELECT id, tenant, mail_from, size, header_message_id, received_at, client_address,
       content_purged_at, substring(content for 8192) AS head
FROM messages WHERE id = $1;

-- name: show_deliveries
SELECT id, recipient, state, attempts, next_attempt_at, expires_at, last_reply
FROM deliveries WHERE message_id = $1 ORDER BY id;

-- name: show_attempts
SELECT a.delivery_id, a.at, a.host, a.outcome, a.reply
FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
WHERE d.message_id = $1 ORDER BY a.id;

-- name: retry_message
UPDATE deliveries SET next_attempt_at = now(), updated_at = now()
WHERE message_id = $1 AND state = 'queued'
RETURNING id;

-- name: delete_message
UPDATE deliveries SET state = 'deleted', lease_owner = NULL, lease_token = NULL,
       lease_expires_at = NULL, last_reply = 'deleted by admin', updated_at = now()
WHERE message_id = $1 AND state = 'queued'
RETURNING id;

-- name: suppression_of
-- By the address, or by its keyed hash $3 (an erased address, P-ERASURE; NULL without a
-- secret): one primary-key look-up for both.
SELECT reason, source, created_at FROM suppressions
WHERE tenant = $1 AND address = ANY(ARRAY[lower($2), $3]);

-- name: suppression_add
INSERT INTO suppressions (tenant, address, reason, source)
SELECT $1, lower(a), $3, $4 FROM unnest($2::text[]) AS a
ON CONFLICT (tenant, address) DO NOTHING
RETURNING address;

-- name: suppression_remove
-- $3: the address's keyed hash, so an erased person who asks to be mailed again can be.
DELETE FROM suppressions WHERE tenant = $1 AND address = ANY(ARRAY[lower($2), $3])
RETURNING address;

-- name: suppression_list
SELECT tenant, address, reason, source, created_at FROM suppressions
WHERE ($1::text IS NULL OR tenant = $1)
ORDER BY tenant, address
LIMIT $2;

-- name: show_policy_results
SELECT v ->> 'rule' AS rule, v ->> 'outcome' AS outcome, v ->> 'reason' AS reason
FROM messages, jsonb_array_elements(policy) WITH ORDINALITY AS x (v, position)
WHERE id = $1
ORDER BY position;

-- name: consent_upsert
INSERT INTO consent_records (tenant, address, consented_at, source, form_version, consent_text, method)
SELECT $1, lower(a), c, s, f, t, m
FROM unnest($2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[])
     AS r (a, c, s, f, t, m)
ON CONFLICT (tenant, address) DO UPDATE
SET consented_at = excluded.consented_at, source = excluded.source,
    form_version = excluded.form_version, consent_text = excluded.consent_text,
    method = excluded.method, recorded_at = now();

-- name: consent_missing
-- The recipients of a batch without a consent record: one indexed look-up for all of them.
SELECT a AS address FROM unnest($2::text[]) AS a
WHERE NOT EXISTS (
    SELECT 1 FROM consent_records c WHERE c.tenant = $1 AND c.address = lower(a)
);

-- name: consent_show
SELECT tenant, address, consented_at, source, form_version, consent_text, method, recorded_at
FROM consent_records WHERE tenant = $1 AND address = lower($2);

-- name: domain_record
INSERT INTO domains (domain, tenant, passed, findings, checked_at)
VALUES ($1, $2, $3, $4::jsonb, now())
ON CONFLICT (domain) DO UPDATE
SET tenant = excluded.tenant, passed = excluded.passed, findings = excluded.findings,
    checked_at = now();

-- name: domain_list
SELECT domain, tenant, passed, findings, checked_at FROM domains ORDER BY domain;

-- name: domain_failures
SELECT domain, coalesce(array_agg(f->>'check') FILTER (WHERE f->>'status' = 'fail'), '{}')
       AS failing
FROM domains LEFT JOIN LATERAL jsonb_array_elements(findings) AS f ON true
GROUP BY domain;

-- name: domain_findings
SELECT findings FROM domains WHERE domain = $1;

-- name: domains_due
SELECT domain FROM domains WHERE checked_at < now() - make_interval(secs => $1);

-- name: insert_events
-- A trigger counts them in `rates` (0014_rates_from_events.sql).
INSERT INTO events (tenant, kind, recipient, message_id, site, campaign, detail)
SELECT t, k, r, m, s, c, d::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::text[], $7::text[])
     AS x(t, k, r, m, s, c, d);

-- name: suppression_count
SELECT count(*) FROM suppressions;

-- name: suppression_entries
-- Every entry, for the suppression filter of each relay process (relay.policy.suppression_filter).
SELECT tenant, address FROM suppressions;
