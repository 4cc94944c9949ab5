-- P-CONSENT-RECORD: proof that a recipient agreed to a tenant's bulk mail: when, from
-- where, on which form version, with which text shown, and by which method.
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
