-- Fair share between tenants: each delivery names its tenant, so the lease query can take
-- each tenant's oldest due deliveries through an index, and one tenant's backlog never
-- starves another's mail to the same site.
ALTER TABLE deliveries ADD COLUMN tenant text;
UPDATE deliveries d SET tenant = m.tenant FROM messages m WHERE m.id = d.message_id;
ALTER TABLE deliveries ALTER COLUMN tenant SET NOT NULL;
CREATE INDEX deliveries_due_per_tenant ON deliveries (tenant, next_attempt_at)
    WHERE state = 'queued' AND hold IS NULL;
