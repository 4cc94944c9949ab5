-- Reputation (P-COMPLAINT, P-BOUNCE): per-provider throttles, bulk suspensions, and the
-- events that tell tenants about both.

-- How much of its usual pace a tenant may use toward a provider (1: all of it), cut while
-- its complaint or hard-bounce rate there is above the warning level, recovering once it
-- is below. No row: 1.
CREATE TABLE tenant_throttles (
    tenant      text NOT NULL,
    provider    text NOT NULL,
    factor      double precision NOT NULL CHECK (factor > 0 AND factor <= 1),
    rule        text NOT NULL CHECK (rule IN ('P-COMPLAINT', 'P-BOUNCE')),
    reason      text NOT NULL,              -- the measured rate that cut it last
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, provider)
);

-- A tenant's bulk sending suspended: automatically above a limit (rule P-COMPLAINT or
-- P-BOUNCE), or by an admin (rule 'manual'). Sticky: only an admin resumes it, and the row
-- stays as the record of what happened. At most one open suspension per tenant and rule.
CREATE TABLE tenant_suspensions (
    id          bigserial PRIMARY KEY,
    tenant      text NOT NULL,
    rule        text NOT NULL CHECK (rule IN ('P-COMPLAINT', 'P-BOUNCE', 'manual')),
    reason      text NOT NULL,
    since       timestamptz NOT NULL DEFAULT now(),
    suspended_by text,                      -- the admin of a manual suspension
    resumed_at  timestamptz,
    resumed_by  text
);
CREATE UNIQUE INDEX tenant_suspensions_open ON tenant_suspensions (tenant, rule)
    WHERE resumed_at IS NULL;
CREATE INDEX tenant_suspensions_tenant ON tenant_suspensions (tenant, since);

-- Each round sums the window's buckets; the rates of all time stay, so find them by time.
CREATE INDEX rates_bucket ON rates (bucket);

-- When the last reputation round ran: one row, locked by the round that runs, so several
-- relay processes on one database judge (and cut factors) once per interval, not once each.
CREATE TABLE reputation_rounds (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_round  timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO reputation_rounds DEFAULT VALUES;

-- Tenants read throttles, suspensions and resumptions as events too.
ALTER TABLE events DROP CONSTRAINT events_kind_check;
ALTER TABLE events ADD CONSTRAINT events_kind_check
    CHECK (kind IN ('delivered', 'deferred', 'bounced', 'complained', 'unsubscribed',
                    'suppressed', 'abuse-report', 'throttled', 'suspended', 'resumed'));
