-- P-DNSAUTH: the last verification of each sending domain. The SMTP path only reads
-- `passed`; `relay domain verify` and the background re-check write it.
CREATE TABLE domains (
    domain      text PRIMARY KEY,               -- IDNA A-label
    tenant      text NOT NULL,
    passed      boolean NOT NULL,
    findings    jsonb NOT NULL,
    checked_at  timestamptz NOT NULL DEFAULT now()
);
