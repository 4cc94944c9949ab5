-- The whole schema of the relay's queue database as it stands after migration 0021
-- (0021_suppression_removals.sql), in one place to read.
--
-- This file is a description, not a way to change or create the schema: nothing in the
-- relay loads it. The numbered migrations beside it (00NN_*.sql, applied in order by
-- relay/queue/migrate.py) remain the only way the schema changes; a change is a new
-- migration, with the same change made here and the number above moved to it. The
-- migrations say at length why each piece exists; the comments here are short.
--
-- tests/test_schema_file.py builds one database from the migrations and another from this
-- file and checks that their catalogs agree (tables, columns, constraints, indexes,
-- sequences, functions, triggers) as well as the rows the migrations seed, and that the
-- number above is the last migration's.
--
-- Not here: `schema_migrations`, the record of applied versions, which migrate.py creates
-- and fills itself (it is no migration's). So a database loaded from this file is not one
-- that migrate.py knows as migrated; set up a relay's database with `relay migrate`.


-- The queue ---------------------------------------------------------------------------------

-- A message is stored once; each recipient has a delivery row that workers lease with
-- FOR UPDATE SKIP LOCKED; every attempt is recorded.
CREATE TABLE messages (
    id                uuid PRIMARY KEY,          -- chosen by the relay: a retried commit is safe
    tenant            text NOT NULL,
    mail_from         text NOT NULL,             -- '' is the null reverse-path (our own DSNs)
    content           bytea NOT NULL,            -- raw RFC 5322 bytes as they will be sent
    size              integer NOT NULL,
    header_message_id text,
    received_at       timestamptz NOT NULL DEFAULT now(),
    client_address    text,
    campaign          text,                      -- Feedback-ID or List-Id (0006)
    content_purged_at timestamptz,               -- P-RETENTION: content is then empty (0006)
    bulk              boolean NOT NULL DEFAULT false, -- (0007)
    policy            jsonb NOT NULL DEFAULT '[]' -- the audit trail: every verdict (0011)
);
CREATE INDEX messages_unpurged ON messages (received_at) WHERE content_purged_at IS NULL;
CREATE INDEX messages_received ON messages (received_at);  -- the envelope purge (0018)

-- Content is stored with lz4 where the server has it, else uncompressed, never with pglz
-- (0012). Which one depends on the server, so this stays a block rather than one statement.
DO $$
BEGIN
    ALTER TABLE messages ALTER COLUMN content SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    ALTER TABLE messages ALTER COLUMN content SET STORAGE EXTERNAL;
END
$$;

CREATE TABLE deliveries (
    id               bigserial PRIMARY KEY,
    message_id       uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    recipient        text NOT NULL,
    domain           text NOT NULL,
    state            text NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'delivered', 'bounced', 'deleted')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    lease_owner      text,
    lease_token      uuid,
    lease_expires_at timestamptz,
    last_reply       text,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    site             text,                       -- registered domain of the MX hosts (0006)
    hold             text,                       -- why it waits though due, or NULL (0007)
    tenant           text NOT NULL               -- the message's, for fair share (0010)
);
-- a tenant's two lanes, mail never answered and mail retried, taken in turns (0019)
CREATE INDEX deliveries_fresh ON deliveries (tenant, next_attempt_at)
    WHERE state = 'queued' AND hold IS NULL AND last_reply IS NULL;
CREATE INDEX deliveries_retried ON deliveries (tenant, next_attempt_at)
    WHERE state = 'queued' AND hold IS NULL AND last_reply IS NOT NULL;
CREATE INDEX deliveries_per_destination ON deliveries (tenant, domain, next_attempt_at)
    WHERE state = 'queued' AND hold IS NULL;  -- (0019)
CREATE INDEX deliveries_message ON deliveries (message_id);
CREATE INDEX deliveries_held ON deliveries (hold) WHERE hold IS NOT NULL;
CREATE INDEX deliveries_canary_pending ON deliveries (message_id)
    WHERE hold LIKE 'canary-pending:%';
CREATE INDEX deliveries_waiting ON deliveries (id) WHERE state = 'queued' AND hold IS NULL;  -- (0017)

-- Waiting and held deliveries, counted by statement triggers as they change (0017); a
-- reader sums the 16 rows.
CREATE TABLE queue_counts (
    slot   smallint PRIMARY KEY CHECK (slot BETWEEN 0 AND 15),
    queued bigint NOT NULL DEFAULT 0,  -- state 'queued' and not held
    held   bigint NOT NULL DEFAULT 0   -- state 'queued' and held
);
INSERT INTO queue_counts (slot) SELECT generate_series(0, 15);

CREATE FUNCTION count_queued(queued bigint, held bigint) RETURNS void LANGUAGE sql AS $$
    UPDATE queue_counts SET queued = queue_counts.queued + count_queued.queued,
                            held = queue_counts.held + count_queued.held
    WHERE slot = pg_backend_pid() % 16 AND (count_queued.queued <> 0 OR count_queued.held <> 0);
$$;

CREATE FUNCTION count_queued_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM count_queued(count(*) FILTER (WHERE state = 'queued' AND hold IS NULL),
                         count(*) FILTER (WHERE state = 'queued' AND hold IS NOT NULL))
    FROM new_rows;
    RETURN NULL;
END $$;

CREATE FUNCTION count_queued_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM count_queued(-count(*) FILTER (WHERE state = 'queued' AND hold IS NULL),
                         -count(*) FILTER (WHERE state = 'queued' AND hold IS NOT NULL))
    FROM old_rows;
    RETURN NULL;
END $$;

CREATE FUNCTION count_queued_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM count_queued(
        (SELECT count(*) FILTER (WHERE state = 'queued' AND hold IS NULL) FROM new_rows)
        - (SELECT count(*) FILTER (WHERE state = 'queued' AND hold IS NULL) FROM old_rows),
        (SELECT count(*) FILTER (WHERE state = 'queued' AND hold IS NOT NULL) FROM new_rows)
        - (SELECT count(*) FILTER (WHERE state = 'queued' AND hold IS NOT NULL) FROM old_rows));
    RETURN NULL;
END $$;

CREATE TRIGGER deliveries_counted_inserted AFTER INSERT ON deliveries
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_queued_inserted();
CREATE TRIGGER deliveries_counted_deleted AFTER DELETE ON deliveries
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_queued_deleted();
CREATE TRIGGER deliveries_counted_updated AFTER UPDATE ON deliveries
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_queued_updated();


-- Partitioned by time, as events are (0020; the partitions are added by the relay).
CREATE TABLE attempts (
    id           bigserial,
    delivery_id  bigint NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    at           timestamptz NOT NULL DEFAULT now(),
    host         text,
    outcome      text NOT NULL CHECK (outcome IN ('delivered', 'deferred', 'bounced')),
    reply        text NOT NULL,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE INDEX attempts_delivery ON attempts (delivery_id);
CREATE TABLE attempts_default PARTITION OF attempts DEFAULT;


-- Senders and recipients --------------------------------------------------------------------

-- P-SUPPRESS: addresses a tenant must not mail, lower-cased; an erased one is kept as a
-- keyed hash ("hmac:" + hex, `hashed`).
CREATE TABLE suppressions (
    tenant      text NOT NULL,
    address     text NOT NULL,
    reason      text NOT NULL
                CHECK (reason IN ('unsubscribe', 'complaint', 'hard-bounce', 'abuse-report',
                                  'manual')),
    source      text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    hashed      boolean NOT NULL DEFAULT false,  -- (0006)
    PRIMARY KEY (tenant, address)
);

-- Each relay process keeps a filter of the list in memory and learns new entries from this
-- notification, delivered at commit (0013).
CREATE FUNCTION notify_suppression() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('relay_suppressions', NEW.tenant || chr(10) || NEW.address);
    RETURN NULL;
END
$$;

CREATE TRIGGER suppressions_notify AFTER INSERT OR UPDATE OF tenant, address ON suppressions
    FOR EACH ROW EXECUTE FUNCTION notify_suppression();

-- ... and that entries went, so that it reads the list again only then (0021).
CREATE FUNCTION notify_suppression_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('relay_suppressions_removed', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER suppressions_removed AFTER DELETE OR UPDATE OF tenant, address ON suppressions
    FOR EACH STATEMENT EXECUTE FUNCTION notify_suppression_removed();

-- P-CONSENT-RECORD: proof that a recipient agreed to a tenant's bulk mail.
CREATE TABLE consent_records (
    tenant        text NOT NULL,
    address       text NOT NULL,                 -- lower-cased
    consented_at  timestamptz NOT NULL,
    source        text NOT NULL,                 -- IP address or other identifier
    form_version  text NOT NULL,
    consent_text  text NOT NULL,
    method        text NOT NULL
                  CHECK (method IN ('web-form', 'double-opt-in', 'paper', 'verbal')),
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, address)
);

-- P-DNSAUTH: the last verification of each sending domain.
CREATE TABLE domains (
    domain      text PRIMARY KEY,               -- IDNA A-label
    tenant      text NOT NULL,
    passed      boolean NOT NULL,
    findings    jsonb NOT NULL,
    checked_at  timestamptz NOT NULL DEFAULT now()
);


-- Feedback ----------------------------------------------------------------------------------

-- What tenants read (webhooks, `relay events tail`). No foreign keys: events outlive
-- purged messages. Partitioned by time (0020): P-RETENTION drops whole partitions.
CREATE TABLE events (
    id          bigserial,
    tenant      text NOT NULL,
    kind        text NOT NULL CHECK (kind IN (
                    'delivered', 'deferred', 'bounced', 'complained', 'unsubscribed',
                    'suppressed', 'abuse-report', 'throttled', 'suspended', 'resumed',
                    'canary-held', 'canary-waiting', 'canary-released', 'canary-declined')),
    at          timestamptz NOT NULL DEFAULT now(),
    message_id  uuid,
    recipient   text,
    site        text,
    campaign    text,
    detail      jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE INDEX events_tenant ON events (tenant, id);
CREATE INDEX events_recipient ON events (recipient);
CREATE INDEX events_at ON events (at);
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- Each report that reached the feedback listener (or the abuse form), stored before it is
-- parsed.
CREATE TABLE feedback_reports (
    id             bigserial PRIMARY KEY,
    received_at    timestamptz NOT NULL DEFAULT now(),
    channel        text NOT NULL CHECK (channel IN ('return-path', 'fbl', 'abuse', 'abuse-form')),
    mail_from      text NOT NULL DEFAULT '',
    recipients     text[] NOT NULL DEFAULT '{}',
    client_address text,
    raw            bytea NOT NULL,
    state          text NOT NULL DEFAULT 'new'
                   CHECK (state IN ('new', 'processed', 'unmatched', 'malformed', 'unverified',
                                    'duplicate')),
    kind           text,            -- bounce | complaint | abuse, once parsed
    problem        text,            -- why it is unmatched or malformed
    tenant         text,
    message_id     uuid,
    reporter       text             -- who complained or reported
);
CREATE INDEX feedback_reports_new ON feedback_reports (id) WHERE state = 'new';
CREATE INDEX feedback_reports_tenant ON feedback_reports (tenant, id);

-- Where each tenant's webhook stands: the last event it acknowledged, and the backoff.
CREATE TABLE webhook_cursors (
    tenant       text PRIMARY KEY,
    last_event   bigint NOT NULL DEFAULT 0,
    failures     integer NOT NULL DEFAULT 0,
    next_try_at  timestamptz NOT NULL DEFAULT now(),
    last_error   text
);

-- Counts per tenant, site and campaign in hourly buckets: the rates P-COMPLAINT and
-- P-BOUNCE act on, kept after the events are purged.
CREATE TABLE rates (
    tenant        text NOT NULL,
    site          text NOT NULL DEFAULT '',
    campaign      text NOT NULL DEFAULT '',
    bucket        timestamptz NOT NULL,
    delivered     integer NOT NULL DEFAULT 0,
    deferred      integer NOT NULL DEFAULT 0,
    hard_bounced  integer NOT NULL DEFAULT 0,
    soft_bounced  integer NOT NULL DEFAULT 0,
    complained    integer NOT NULL DEFAULT 0,
    unsubscribed  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, site, campaign, bucket)
);
CREATE INDEX rates_bucket ON rates (bucket);

-- The rates are counted from the events as they are inserted, at the end of the inserting
-- statement (0014, 0016).
CREATE FUNCTION count_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rates AS r (tenant, site, campaign, bucket, delivered, deferred,
                            hard_bounced, soft_bounced, complained, unsubscribed)
    SELECT e.tenant, coalesce(e.site, ''), coalesce(e.campaign, ''),
           date_trunc('hour', e.at),
           count(*) FILTER (WHERE e.kind = 'delivered'),
           count(*) FILTER (WHERE e.kind = 'deferred'),
           count(*) FILTER (WHERE e.kind = 'bounced' AND e.detail @> '{"hard": true}'),
           count(*) FILTER (WHERE e.kind = 'bounced' AND NOT e.detail @> '{"hard": true}'),
           count(*) FILTER (WHERE e.kind IN ('complained', 'abuse-report')),
           count(*) FILTER (WHERE e.kind = 'unsubscribed')
    FROM added AS e
    WHERE e.kind IN ('delivered', 'deferred', 'bounced', 'complained', 'abuse-report',
                     'unsubscribed')
    GROUP BY 1, 2, 3, 4
    ON CONFLICT (tenant, site, campaign, bucket) DO UPDATE
    SET delivered = r.delivered + excluded.delivered, deferred = r.deferred + excluded.deferred,
        hard_bounced = r.hard_bounced + excluded.hard_bounced,
        soft_bounced = r.soft_bounced + excluded.soft_bounced,
        complained = r.complained + excluded.complained,
        unsubscribed = r.unsubscribed + excluded.unsubscribed;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_count AFTER INSERT ON events REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION count_events();


-- The time partitions of events and attempts, and the functions that add and drop them
-- (0020, relay.queue.partitions).
CREATE TABLE partitions (
    name   text PRIMARY KEY,
    parent text NOT NULL,
    lower  timestamptz NOT NULL,
    upper  timestamptz NOT NULL
);
CREATE INDEX partitions_parent ON partitions (parent, upper);

-- Partitions of `parent` of `width` each, aligned to multiples of it, from the end of the
-- last one (or from now) until `ahead` from now. Rows the default partition took for a
-- partition's span are moved into it (each partition is made apart, filled, then
-- attached). Concurrent callers wait for each other.
CREATE FUNCTION add_partitions(parent text, width interval, ahead interval)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    seconds double precision := extract(epoch FROM width);
    fallback text := parent || '_default';
    start timestamptz;
    name text;
    added integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('relay partitions ' || parent));
    SELECT max(p.upper) INTO start FROM partitions AS p WHERE p.parent = add_partitions.parent;
    IF start IS NULL OR start < now() THEN
        start := greatest(start,
                          to_timestamp(floor(extract(epoch FROM now()) / seconds) * seconds));
    END IF;
    WHILE start < now() + ahead LOOP
        name := parent || '_' || to_char(start AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MISS');
        EXECUTE format('LOCK TABLE %I IN EXCLUSIVE MODE', fallback);
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                       name, parent);
        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE at >= %L AND at < %L RETURNING *)'
                       ' INSERT INTO %I SELECT * FROM moved',
                       fallback, start, start + width, name);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       parent, name, start, start + width);
        INSERT INTO partitions VALUES (name, parent, start, start + width);
        start := start + width;
        added := added + 1;
    END LOOP;
    RETURN added;
END
$$;

-- Drop the partitions of `parent` whose every row is older than `before`.
CREATE FUNCTION drop_partitions(parent text, before timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    expired record;
    dropped integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('relay partitions ' || parent));
    FOR expired IN SELECT p.name FROM partitions AS p
                   WHERE p.parent = drop_partitions.parent AND p.upper <= before
    LOOP
        EXECUTE format('DROP TABLE %I', expired.name);
        DELETE FROM partitions WHERE partitions.name = expired.name;
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;

-- Shaping and reputation --------------------------------------------------------------------

-- Shared per-site delivery state: a token bucket for messages per minute (AIMD on
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

-- How much of its usual pace a tenant may use toward a site (1: all of it). No row: 1.
CREATE TABLE tenant_throttles (
    tenant      text NOT NULL,
    site        text NOT NULL,
    factor      double precision NOT NULL CHECK (factor > 0 AND factor <= 1),
    rule        text NOT NULL CHECK (rule IN ('P-COMPLAINT', 'P-BOUNCE')),
    reason      text NOT NULL,              -- the measured rate that cut it last
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, site)
);

-- A tenant's bulk sending suspended, automatically or by an admin; only an admin resumes
-- it. At most one open suspension per tenant and rule.
CREATE TABLE tenant_suspensions (
    id           bigserial PRIMARY KEY,
    tenant       text NOT NULL,
    rule         text NOT NULL CHECK (rule IN ('P-COMPLAINT', 'P-BOUNCE', 'manual')),
    reason       text NOT NULL,
    since        timestamptz NOT NULL DEFAULT now(),
    suspended_by text,                      -- the admin of a manual suspension
    resumed_at   timestamptz,
    resumed_by   text
);
CREATE UNIQUE INDEX tenant_suspensions_open ON tenant_suspensions (tenant, rule)
    WHERE resumed_at IS NULL;
CREATE INDEX tenant_suspensions_tenant ON tenant_suspensions (tenant, since);

-- When the last reputation round ran: one row, locked by the round that runs.
CREATE TABLE reputation_rounds (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_round  timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO reputation_rounds DEFAULT VALUES;


-- Canary campaigns --------------------------------------------------------------------------

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

-- What the trigger below needs from `[canary]`. No row, or min_size 0: nothing is held.
CREATE TABLE canary_settings (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    min_size   integer NOT NULL DEFAULT 0,
    remember   double precision NOT NULL DEFAULT 86400, -- seconds a decision applies
    exempt     text[] NOT NULL DEFAULT '{}',            -- tenants never held
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Holds each new delivery of a bulk message with a campaign as 'canary-pending:CAMPAIGN'
-- in the inserting transaction, before any worker can lease it (0009).
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
