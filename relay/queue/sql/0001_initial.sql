-- The queue: a message is stored once; each recipient has a delivery row that workers
-- lease with FOR UPDATE SKIP LOCKED; every attempt is recorded.

CREATE TABLE messages (
    id            uuid PRIMARY KEY,             -- chosen by the relay: a retried commit is harmless
    tenant        text NOT NULL,
    mail_from     text NOT NULL,                -- '' is the null reverse-path (our own DSNs)
    content       bytea NOT NULL,               -- raw RFC 5322 bytes as they will be sent
    size          integer NOT NULL,
    header_message_id text,
    received_at   timestamptz NOT NULL DEFAULT now(),
    client_address text
);

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
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Due work, in order: the only index the lease query needs.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'queued';
CREATE INDEX deliveries_message ON deliveries (message_id);

CREATE TABLE attempts (
    id           bigserial PRIMARY KEY,
    delivery_id  bigint NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    at           timestamptz NOT NULL DEFAULT now(),
    host         text,
    outcome      text NOT NULL CHECK (outcome IN ('delivered', 'deferred', 'bounced')),
    reply        text NOT NULL
);
CREATE INDEX attempts_delivery ON attempts (delivery_id);
