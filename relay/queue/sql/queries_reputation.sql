-- Reputation (P-COMPLAINT, P-BOUNCE): rates over the window, throttle factors, bulk
-- suspensions and the deliveries they hold.

-- name: reputation_round_start
-- Claims this round, in the caller's transaction: no row back when another process ran one
-- less than $1 seconds ago (or runs one now: the row stays locked until it commits).
UPDATE reputation_rounds SET last_round = now()
WHERE last_round <= now() - make_interval(secs => $1)
RETURNING last_round;

-- name: reputation_round_lock
-- Waits for a round in progress (an admin's resume must not cross a round still judging
-- the counts from before it).
SELECT last_round FROM reputation_rounds FOR UPDATE;

-- name: reputation_counts
-- Per tenant and site, what counts over the window of $1 seconds (whole hourly
-- buckets): only buckets that began after the tenant's last resume, so an admin's resume
-- starts its record afresh. $2: one tenant, or NULL for all.
SELECT r.tenant, r.site,
       sum(r.delivered)::bigint AS delivered,
       sum(r.hard_bounced)::bigint AS hard_bounced,
       sum(r.complained)::bigint AS complained,
       min(r.bucket) AS first_bucket,
       s.resumed_at
FROM rates AS r
LEFT JOIN LATERAL (
    SELECT max(resumed_at) AS resumed_at FROM tenant_suspensions WHERE tenant = r.tenant
) AS s ON true
WHERE r.bucket >= date_trunc('hour', now() - make_interval(secs => $1))
  AND (s.resumed_at IS NULL OR r.bucket >= s.resumed_at)
  AND ($2::text IS NULL OR r.tenant = $2)
GROUP BY r.tenant, r.site, s.resumed_at
ORDER BY r.tenant, r.site;

-- name: reputation_throttles
SELECT tenant, site, factor, rule, reason, updated_at FROM tenant_throttles
WHERE ($1::text IS NULL OR tenant = $1)
ORDER BY tenant, site;

-- name: reputation_throttle_set
INSERT INTO tenant_throttles AS t (tenant, site, factor, rule, reason)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (tenant, site) DO UPDATE
SET factor = excluded.factor, rule = excluded.rule, reason = excluded.reason,
    updated_at = now();

-- name: reputation_throttle_clear
DELETE FROM tenant_throttles WHERE tenant = $1 AND site = $2;

-- name: reputation_suspend
-- Opens a suspension unless one of the same tenant and rule is open already.
INSERT INTO tenant_suspensions (tenant, rule, reason, suspended_by)
VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant, rule) WHERE resumed_at IS NULL DO NOTHING
RETURNING id, since;

-- name: reputation_suspensions_open
SELECT tenant, rule, reason, since, suspended_by FROM tenant_suspensions
WHERE resumed_at IS NULL AND ($1::text IS NULL OR tenant = $1)
ORDER BY tenant, since;

-- name: reputation_suspensions_of
SELECT rule, reason, since, suspended_by, resumed_at, resumed_by FROM tenant_suspensions
WHERE tenant = $1 ORDER BY since DESC LIMIT $2;

-- name: reputation_hold
-- Holds the tenant's queued bulk deliveries that nothing holds yet; $2 names the hold
-- (P-COMPLAINT, P-BOUNCE, manual-suspension). Transactional mail is left alone, and so is
-- a delivery in flight (leased): the worker's outcome is recorded without waiting on this,
-- and if it stays queued the next round holds it.
WITH held AS (
    UPDATE deliveries AS d SET hold = $2, updated_at = now()
    FROM messages AS m
    WHERE m.id = d.message_id AND m.tenant = $1 AND m.bulk
      AND d.state = 'queued' AND d.hold IS NULL
      AND (d.lease_expires_at IS NULL OR d.lease_expires_at < now())
    RETURNING d.id
)
SELECT count(*) FROM held;

-- name: reputation_resume
UPDATE tenant_suspensions SET resumed_at = now(), resumed_by = $2
WHERE tenant = $1 AND resumed_at IS NULL
RETURNING rule, reason, since;

-- name: reputation_release
-- Releases the tenant's deliveries held under the holds in $2, due now; the time they were
-- held (since $3, the suspension, or since they arrived if later; NULL: none) is added to
-- their queue lifetime, so they do not bounce for having waited on the admin.
UPDATE deliveries AS d
SET hold = NULL, next_attempt_at = now(), updated_at = now(),
    expires_at = d.expires_at
                 + greatest(now() - greatest(coalesce($3::timestamptz, now()), m.received_at),
                            interval '0')
FROM messages AS m
WHERE m.id = d.message_id AND m.tenant = $1 AND d.hold = ANY($2::text[])
  AND d.state = 'queued'
RETURNING d.id;

-- name: reputation_held
SELECT m.tenant, d.hold, count(*) AS deliveries
FROM deliveries AS d JOIN messages AS m ON m.id = d.message_id
WHERE d.state = 'queued' AND d.hold = ANY($1::text[]) AND ($2::text IS NULL OR m.tenant = $2)
GROUP BY m.tenant, d.hold
ORDER BY m.tenant, d.hold;
