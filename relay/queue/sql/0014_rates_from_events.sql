-- The hourly rates that P-COMPLAINT and P-BOUNCE act on are counted by the database from
-- the events as they are inserted, at the end of the inserting statement: a delivery's
-- attempt, its event and its count are then one statement (one round trip, no explicit
-- transaction), and no writer of events can leave the counts behind. A bounce counts as
-- hard when its detail says so ("hard": true, from relay.feedback.reports.classify); abuse reports
-- count as complaints. An event counts in the hour it happened (`at`, now() unless given).
CREATE FUNCTION count_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rates AS r (tenant, provider, campaign, bucket, delivered, deferred,
                            hard_bounced, soft_bounced, complained, unsubscribed)
    SELECT e.tenant, coalesce(e.provider, ''), coalesce(e.campaign, ''),
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
    ON CONFLICT (tenant, provider, campaign, bucket) DO UPDATE
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
