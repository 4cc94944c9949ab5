-- One name for the registered domain of a destination's MX hosts (gmail.com and
-- googlemail.com are one, at google.com): traffic shaping called it a site (`sites`,
-- `[[sites]]`), feedback and reputation a provider. It is the site everywhere now, so the
-- columns that hold it take that name; their values are unchanged.
--
-- A relay of the previous release names these columns in its queries: it cannot record a
-- delivery's outcome on a database migrated this far (see deploy/DEPLOYMENT.md, upgrades).
ALTER TABLE deliveries RENAME COLUMN provider TO site;
ALTER TABLE events RENAME COLUMN provider TO site;
-- Part of the primary key (tenant, site, campaign, bucket): the key follows the column.
ALTER TABLE rates RENAME COLUMN provider TO site;
ALTER TABLE tenant_throttles RENAME COLUMN provider TO site;

-- The trigger function of 0014 names the column in its body, which a rename leaves as it
-- was written.
CREATE OR REPLACE FUNCTION count_events() RETURNS trigger LANGUAGE plpgsql AS $$
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
