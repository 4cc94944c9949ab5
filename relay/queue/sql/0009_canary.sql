-- P-CANARY: a large bulk campaign goes out as a canary (the first 10% of its recipients, at
-- most 1,000); the rest waits for a window while bounces, unsubscribes and complaints are
-- measured, then is released, or declined by an admin (relay.feedback.reputation.canary).
--
-- A campaign's size is unknown while its messages arrive, and the relay queues each
-- message at once; so every delivery of a bulk message with a campaign is held as it is
-- inserted (the trigger below), in the same transaction, before any worker can lease it.
-- The canary task decides once the campaign has stopped growing.

-- One run of a campaign (a tenant's Feedback-ID, else List-Id) and what was decided.
CREATE TABLE campaigns (
    tenant       text NOT NULL,
    campaign     text NOT NULL,
    state        text NOT NULL DEFAULT 'collecting'
                 CHECK (state IN ('collecting', 'canary', 'waiting', 'released', 'declined')),
    started_at   timestamptz NOT NULL DEFAULT now(), -- the run's first delivery was held
    recipients   integer NOT NULL DEFAULT 0,         -- deliveries of the run so far
    canary_size  integer,                            -- how many went out as the canary
    held         integer NOT NULL DEFAULT 0,         -- how many wait now
    window_ends  timestamptz,
    decided_at   timestamptz,
    decided_by   text,                               -- 'canary' (automatic) or 'admin:NAME'
    reason       text,
    PRIMARY KEY (tenant, campaign)
);
CREATE INDEX campaigns_open ON campaigns (state) WHERE state IN ('collecting', 'canary', 'waiting');

-- What the trigger needs from `[canary]`, written by the running relay at start and on
-- reload. No row, or min_size 0: canaries are off and nothing is held.
CREATE TABLE canary_settings (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    min_size   integer NOT NULL DEFAULT 0,
    remember   double precision NOT NULL DEFAULT 86400, -- seconds a decision applies
    exempt     text[] NOT NULL DEFAULT '{}',            -- tenants never held
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Deliveries still waiting for their campaign to stop growing: what the task scans each round.
CREATE INDEX deliveries_canary_pending ON deliveries (message_id)
    WHERE hold LIKE 'canary-pending:%';

-- Holds each new delivery of a bulk message with a campaign as 'canary-pending:CAMPAIGN',
-- unless canaries are off, its tenant is exempt, or the campaign was released within
-- `remember` (the stragglers of a released send go straight out). A campaign decided
-- longer ago than that starts a new run: mail under the same List-Id weeks later is the
-- list's next send and gets its own canary. One statement per insert (a transition
-- table), so a batch of transactional mail costs one look-up of the settings row.
CREATE FUNCTION canary_hold_new_deliveries() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    settings canary_settings%ROWTYPE;
BEGIN
    SELECT * INTO settings FROM canary_settings WHERE only_row;
    IF NOT FOUND OR settings.min_size <= 0 THEN
        RETURN NULL;
    END IF;

    INSERT INTO campaigns (tenant, campaign)
    SELECT DISTINCT m.tenant, m.campaign
    FROM new_deliveries AS n JOIN messages AS m ON m.id = n.message_id
    WHERE m.bulk AND m.campaign <> '' AND m.tenant <> ALL (settings.exempt)
    ON CONFLICT DO NOTHING;

    UPDATE campaigns AS c
    SET state = 'collecting', started_at = now(), recipients = 0, canary_size = NULL,
        held = 0, window_ends = NULL, decided_at = NULL, decided_by = NULL, reason = NULL
    FROM (
        SELECT DISTINCT m.tenant, m.campaign
        FROM new_deliveries AS n JOIN messages AS m ON m.id = n.message_id
        WHERE m.bulk AND m.campaign <> '' AND m.tenant <> ALL (settings.exempt)
    ) AS b
    WHERE c.tenant = b.tenant AND c.campaign = b.campaign
      AND c.state IN ('released', 'declined')
      AND c.decided_at < now() - make_interval(secs => settings.remember);

    UPDATE deliveries AS d
    SET hold = 'canary-pending:' || m.campaign
    FROM new_deliveries AS n
         JOIN messages AS m ON m.id = n.message_id
         JOIN campaigns AS c ON c.tenant = m.tenant AND c.campaign = m.campaign
    WHERE d.id = n.id AND d.hold IS NULL AND d.state = 'queued'
      AND m.bulk AND m.tenant <> ALL (settings.exempt) AND c.state <> 'released';
    RETURN NULL;
END
$$;

CREATE TRIGGER deliveries_canary_hold
    AFTER INSERT ON deliveries
    REFERENCING NEW TABLE AS new_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION canary_hold_new_deliveries();

-- Canary events tenants read (webhooks, `relay events tail`): the canary started
-- (canary-held), its rates went over a threshold (canary-waiting), the rest was released
-- (canary-released), a held delivery was declined by an admin (canary-declined, one per
-- recipient). The list keeps every kind of the earlier migrations, 0008's reputation
-- kinds (throttled, suspended, resumed) included.
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_kind_check;
ALTER TABLE events ADD CONSTRAINT events_kind_check CHECK (kind IN (
    'delivered', 'deferred', 'bounced', 'complained', 'unsubscribed', 'suppressed',
    'abuse-report', 'throttled', 'suspended', 'resumed',
    'canary-held', 'canary-waiting', 'canary-released', 'canary-declined'
));
