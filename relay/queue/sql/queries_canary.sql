-- P-CANARY: campaigns held as they arrive, their canary, the window's verdict, and the
-- admin's release or decline (relay.feedback.reputation.canary, `relay campaign`). Holds name the
-- campaign ('canary-pending:C' while it grows, 'canary:C' for the rest after the canary);
-- every statement on them also checks the tenant, as two tenants may use the same List-Id.

-- name: canary_settings_write
INSERT INTO canary_settings (only_row, min_size, remember, exempt, updated_at)
VALUES (true, $1, $2, $3, now())
ON CONFLICT (only_row) DO UPDATE
SET min_size = excluded.min_size, remember = excluded.remember, exempt = excluded.exempt,
    updated_at = now();

-- name: canary_pending
-- Deliveries held while their campaign grows, per campaign, with the seconds since the
-- newest arrived.
SELECT m.tenant, m.campaign, count(*)::int AS pending,
       extract(epoch FROM now() - max(m.received_at))::float8 AS quiet
FROM deliveries AS d JOIN messages AS m ON m.id = d.message_id
WHERE d.hold LIKE 'canary-pending:%' AND d.state = 'queued'
GROUP BY m.tenant, m.campaign;

-- name: canary_ensure
INSERT INTO campaigns (tenant, campaign) VALUES ($1, $2) ON CONFLICT DO NOTHING;

-- name: canary_lock
-- The campaign's row, locked for one decision, so that relay processes and admin commands
-- deciding at the same time take turns; with its age and whether its window is over.
SELECT tenant, campaign, state, started_at, recipients, canary_size, held, window_ends,
       decided_at, decided_by, reason,
       extract(epoch FROM now() - started_at)::float8 AS age,
       coalesce(window_ends <= now(), false) AS window_over
FROM campaigns WHERE tenant = $1 AND campaign = $2
FOR UPDATE;

-- name: canary_get
SELECT tenant, campaign, state, started_at, recipients, canary_size, held, window_ends,
       decided_at, decided_by, reason
FROM campaigns WHERE tenant = $1 AND campaign = $2;

-- name: canary_count_held
-- Deliveries of the tenant's campaign held with any of the holds $3.
SELECT count(*)::int FROM deliveries AS d JOIN messages AS m ON m.id = d.message_id
WHERE d.hold = ANY($3::text[]) AND m.tenant = $1 AND m.campaign = $2 AND d.state = 'queued';

-- name: canary_collecting
UPDATE campaigns SET recipients = $3, held = $3 WHERE tenant = $1 AND campaign = $2;

-- name: canary_release
-- Lets the held deliveries go: due now, and with the time they waited added to their
-- queue lifetime, so that holding them did not bring their bounce closer.
WITH released AS (
    UPDATE deliveries AS d
    SET hold = NULL, next_attempt_at = now(), updated_at = now(),
        expires_at = d.expires_at + greatest(now() - m.received_at, interval '0')
    FROM messages AS m
    WHERE m.id = d.message_id AND d.hold = ANY($3::text[]) AND m.tenant = $1
      AND m.campaign = $2 AND d.state = 'queued'
    RETURNING d.id
)
SELECT count(*)::int FROM released;

-- name: canary_start
-- The canary: the first $4 held deliveries (by id, the order they were submitted in) go,
-- the others are held again as $5 until the window's verdict.
WITH pending AS (
    SELECT d.id, row_number() OVER (ORDER BY d.id) AS n
    FROM deliveries AS d JOIN messages AS m ON m.id = d.message_id
    WHERE d.hold = $3 AND m.tenant = $1 AND m.campaign = $2 AND d.state = 'queued'
), moved AS (
    UPDATE deliveries AS d
    SET hold = CASE WHEN p.n <= $4 THEN NULL ELSE $5 END,
        next_attempt_at = CASE WHEN p.n <= $4 THEN now() ELSE d.next_attempt_at END,
        expires_at = CASE WHEN p.n <= $4
                          THEN d.expires_at + greatest(now() - m.received_at, interval '0')
                          ELSE d.expires_at END,
        updated_at = now()
    FROM pending AS p, messages AS m
    WHERE d.id = p.id AND m.id = d.message_id
    RETURNING d.hold IS NULL AS released
)
SELECT count(*) FILTER (WHERE released)::int AS released,
       count(*) FILTER (WHERE NOT released)::int AS held
FROM moved;

-- name: canary_move
-- Late arrivals of a campaign whose canary already went join the held rest ($4).
WITH moved AS (
    UPDATE deliveries AS d SET hold = $4, updated_at = now()
    FROM messages AS m
    WHERE m.id = d.message_id AND d.hold = $3 AND m.tenant = $1 AND m.campaign = $2
      AND d.state = 'queued'
    RETURNING d.id
)
SELECT count(*)::int FROM moved;

-- name: canary_decline
-- Ends the held deliveries (state deleted, with the reason as their last reply) and
-- records a canary-declined event for each: a declined recipient is never dropped silently.
WITH ended AS (
    UPDATE deliveries AS d
    SET state = 'deleted', hold = NULL, last_reply = $4, lease_owner = NULL,
        lease_token = NULL, lease_expires_at = NULL, updated_at = now()
    FROM messages AS m
    WHERE m.id = d.message_id AND d.hold = ANY($3::text[]) AND m.tenant = $1
      AND m.campaign = $2 AND d.state = 'queued'
    RETURNING d.recipient, d.message_id, coalesce(d.site, '') AS site
), logged AS (
    INSERT INTO events (tenant, kind, recipient, message_id, site, campaign, detail)
    SELECT $1, 'canary-declined', recipient, message_id, site, $2, $5::jsonb FROM ended
    RETURNING 1
)
SELECT count(*)::int FROM logged;

-- name: canary_event
-- One event about the whole campaign (no recipient): canary-held, -waiting, -released.
INSERT INTO events (tenant, kind, campaign, detail) VALUES ($1, $2, $3, $4::jsonb);

-- name: canary_begin
-- The canary went ($4 deliveries); $5 wait until the window ends, $6 seconds from now.
UPDATE campaigns
SET state = 'canary', recipients = $3, canary_size = $4, held = $5,
    window_ends = now() + make_interval(secs => $6), decided_at = NULL, decided_by = 'canary',
    reason = $7
WHERE tenant = $1 AND campaign = $2
RETURNING window_ends;

-- name: canary_decide
UPDATE campaigns
SET state = $3, recipients = $4, canary_size = $5, held = $6, window_ends = $7,
    decided_at = CASE WHEN $3 IN ('released', 'declined') THEN now() END,
    decided_by = $8, reason = $9
WHERE tenant = $1 AND campaign = $2;

-- name: canary_add_held
UPDATE campaigns SET recipients = recipients + $3, held = held + $3
WHERE tenant = $1 AND campaign = $2;

-- name: canary_windows_due
SELECT tenant, campaign FROM campaigns WHERE state = 'canary' AND window_ends <= now();

-- name: canary_rates
-- The campaign's counts since its run started (hourly buckets, every site).
SELECT coalesce(sum(delivered), 0)::int AS delivered,
       coalesce(sum(deferred), 0)::int AS deferred,
       coalesce(sum(hard_bounced), 0)::int AS hard_bounced,
       coalesce(sum(soft_bounced), 0)::int AS soft_bounced,
       coalesce(sum(complained), 0)::int AS complained,
       coalesce(sum(unsubscribed), 0)::int AS unsubscribed
FROM rates
WHERE tenant = $1 AND campaign = $2 AND bucket >= date_trunc('hour', $3::timestamptz);

-- name: canary_list
SELECT tenant, campaign, state, started_at, recipients, canary_size, held, window_ends,
       decided_at, decided_by, reason
FROM campaigns
WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR state = $2)
ORDER BY started_at DESC, tenant, campaign
LIMIT $3;

-- name: canary_gauges_states
SELECT state, count(*)::int AS n FROM campaigns GROUP BY state;

-- name: canary_gauges_held
SELECT tenant, sum(held)::int AS held FROM campaigns
WHERE state IN ('collecting', 'canary', 'waiting') GROUP BY tenant;
