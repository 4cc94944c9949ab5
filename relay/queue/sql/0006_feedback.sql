-- Feedback loops: what comes back after delivery (bounces, complaints, one-click
-- unsubscribes, abuse reports), the events tenants read, and the rates shaping acts on.

-- Per-campaign rates: the message's Feedback-ID or List-Id, read once at submission.
ALTER TABLE messages ADD COLUMN campaign text;
-- P-RETENTION: when the body was removed (content is then empty).
ALTER TABLE messages ADD COLUMN content_purged_at timestamptz;
CREATE INDEX messages_unpurged ON messages (received_at) WHERE content_purged_at IS NULL;
-- The destination provider (the registered domain of the MX hosts, so gmail.com and
-- googlemail.com are one provider), set when a delivery is attempted.
ALTER TABLE deliveries ADD COLUMN provider text;

-- P-ERASURE: an erased address stays suppressed as a keyed hash ("hmac:" + hex) in
-- `address`, never as itself.
ALTER TABLE suppressions ADD COLUMN hashed boolean NOT NULL DEFAULT false;

-- Every delivery, deferral, bounce, complaint, unsubscribe and suppression: what tenants
-- read (webhooks, `relay events tail`). No foreign keys: events outlive purged messages.
CREATE TABLE events (
    id          bigserial PRIMARY KEY,
    tenant      text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('delivered', 'deferred', 'bounced', 'complained',
                                              'unsubscribed', 'suppressed', 'abuse-report')),
    at          timestamptz NOT NULL DEFAULT now(),
    message_id  uuid,
    recipient   text,
    provider    text,
    campaign    text,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX events_tenant ON events (tenant, id);
CREATE INDEX events_recipient ON events (recipient);
CREATE INDEX events_at ON events (at);

-- Each report that reached the feedback listener (or the abuse form), stored before it is
-- parsed, so a report the parsers cannot read is kept, never lost.
CREATE TABLE feedback_reports (
    id             bigserial PRIMARY KEY,
    received_at    timestamptz NOT NULL DEFAULT now(),
    channel        text NOT NULL CHECK (channel IN ('return-path', 'fbl', 'abuse', 'abuse-form')),
    mail_from      text NOT NULL DEFAULT '',
    recipients     text[] NOT NULL DEFAULT '{}',
    client_address text,
    raw            bytea NOT NULL,
    state          text NOT NULL DEFAULT 'new'
                   CHECK (state IN ('new', 'processed', 'unmatched', 'malformed')),
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

-- Counts per tenant, provider and campaign in hourly buckets: the rates P-COMPLAINT and
-- P-BOUNCE act on. Kept after the events themselves are purged.
CREATE TABLE rates (
    tenant        text NOT NULL,
    provider      text NOT NULL DEFAULT '',
    campaign      text NOT NULL DEFAULT '',
    bucket        timestamptz NOT NULL,
    delivered     integer NOT NULL DEFAULT 0,
    deferred      integer NOT NULL DEFAULT 0,
    hard_bounced  integer NOT NULL DEFAULT 0,
    soft_bounced  integer NOT NULL DEFAULT 0,
    complained    integer NOT NULL DEFAULT 0,
    unsubscribed  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, provider, campaign, bucket)
);
