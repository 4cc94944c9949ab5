-- Traffic shaping: the shared state of destination sites (relay.delivery.shaping).

-- name: site_ensure
INSERT INTO sites (site, rate, tokens) VALUES ($1, $2, 1) ON CONFLICT (site) DO NOTHING;

-- name: site_take
-- Refill the site's bucket for the time passed at its rate (held under the ceiling $2,
-- capped at the burst $3), then take one token if there is a whole one. The row lock
-- serialises the processes sharing the site.
WITH current AS (
    SELECT site, least(rate, $2) AS rate,
           least($3, tokens + extract(epoch FROM clock_timestamp() - refilled_at)
                              * least(rate, $2) / 60) AS available
    FROM sites WHERE site = $1
    FOR UPDATE
)
UPDATE sites AS s
SET rate = c.rate,
    tokens = CASE WHEN c.available >= 1 THEN c.available - 1 ELSE c.available END,
    refilled_at = clock_timestamp()
FROM current AS c
WHERE s.site = c.site
RETURNING s.rate, s.tokens, c.available >= 1 AS granted;

-- name: site_adapt
-- AIMD: rate * $3 + $4, kept between the floor $5 and the ceiling $2; $6 false counts a
-- failed connection, and the site pauses for $8 seconds after $7 of them in a row.
UPDATE sites
SET rate = greatest($5, least($2, rate * $3 + $4)),
    failures = CASE WHEN $6 THEN 0 ELSE failures + 1 END,
    paused_until = CASE WHEN NOT $6 AND failures + 1 >= $7
                        THEN now() + make_interval(secs => $8) ELSE paused_until END,
    updated_at = now()
WHERE site = $1
RETURNING rate, paused_until;

-- name: site_paused_until
SELECT paused_until FROM sites WHERE site = $1 AND paused_until > now();

