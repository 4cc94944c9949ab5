-- Holds and destination sites: what traffic shaping, reputation and canary campaigns need.

-- Why a delivery waits though it is due (NULL: it does not): 'P-COMPLAINT', 'P-BOUNCE'
-- (the tenant's bulk sending is suspended), 'canary:CAMPAIGN' (the rest of a campaign
-- waits for its canary's verdict). Workers lease only deliveries without a hold.
ALTER TABLE deliveries ADD COLUMN hold text;
CREATE INDEX deliveries_held ON deliveries (hold) WHERE hold IS NOT NULL;

-- Whether the message is bulk (POLICY.md: the tenant's stream, Precedence: bulk|list,
-- List-Id or Feedback-ID), decided once at submission: bulk mail is what reputation
-- suspensions and canaries hold.
ALTER TABLE messages ADD COLUMN bulk boolean NOT NULL DEFAULT false;

-- Shared per-site delivery state, so that several relay processes on one database respect
-- a site's limits together: a token bucket for messages per minute (rate adapted AIMD on
-- deferrals), and a pause for a site that keeps failing.
CREATE TABLE sites (
    site            text PRIMARY KEY,          -- the MX operator's registered domain
    rate            double precision NOT NULL, -- messages per minute allowed now
    tokens          double precision NOT NULL, -- messages that may start now
    refilled_at     timestamptz NOT NULL DEFAULT now(),
    paused_until    timestamptz,
    failures        integer NOT NULL DEFAULT 0, -- consecutive connection-level failures
    updated_at      timestamptz NOT NULL DEFAULT now()
);
