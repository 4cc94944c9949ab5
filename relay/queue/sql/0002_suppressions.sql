-- P-SUPPRESS: addresses a tenant must not mail (unsubscribed, complained, hard-bounced,
-- or added by the tenant or an admin). Addresses are stored lower-cased.

CREATE TABLE suppressions (
    tenant      text NOT NULL,
    address     text NOT NULL,
    reason      text NOT NULL
                CHECK (reason IN ('unsubscribe', 'complaint', 'hard-bounce', 'abuse-report', 'manual')),
    source      text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, address)
);
