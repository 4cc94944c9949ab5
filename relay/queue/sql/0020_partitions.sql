-- Events and attempts grow with every delivery and are kept for P-RETENTION's window. Deleted
-- row by row, the expired ones left dead rows for VACUUM, and the tables grew with the rate
-- of mail rather than with what is kept. Both are now partitioned by time (`at`), in
-- partitions the relay adds ahead of time and P-RETENTION drops whole once everything in
-- them is past its window (`add_partitions`, `drop_partitions`; relay.queue.partitions).
-- A default partition takes any row no partition covers, so an insert never fails when the
-- partitions were not added in time; rows there are deleted one by one as before.
--
-- Rows that exist when this runs stay in the table they were in, attached as the partition
-- of everything before now (dropped whole once its newest row is past the window). The new
-- tables name their constraints as the old ones are named, which ATTACH requires.

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

-- events ------------------------------------------------------------------------------------
ALTER TABLE events RENAME TO events_before_partitions;
ALTER TABLE events_before_partitions RENAME CONSTRAINT events_pkey
    TO events_before_partitions_pkey;
ALTER INDEX events_tenant RENAME TO events_before_partitions_tenant;
ALTER INDEX events_recipient RENAME TO events_before_partitions_recipient;
ALTER INDEX events_at RENAME TO events_before_partitions_at;
DROP TRIGGER events_count ON events_before_partitions;
ALTER SEQUENCE events_id_seq RENAME TO events_before_partitions_id_seq;

CREATE TABLE events (
    id          bigserial,
    tenant      text NOT NULL,
    kind        text NOT NULL CONSTRAINT events_kind_check CHECK (kind IN (
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
CREATE TRIGGER events_count AFTER INSERT ON events REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION count_events();
SELECT setval('events_id_seq', nextval('events_before_partitions_id_seq'), false);
ALTER TABLE events_before_partitions ALTER COLUMN id DROP DEFAULT;
DROP SEQUENCE events_before_partitions_id_seq;

-- attempts ----------------------------------------------------------------------------------
ALTER TABLE attempts RENAME TO attempts_before_partitions;
ALTER TABLE attempts_before_partitions RENAME CONSTRAINT attempts_pkey
    TO attempts_before_partitions_pkey;
ALTER INDEX attempts_delivery RENAME TO attempts_before_partitions_delivery;
ALTER SEQUENCE attempts_id_seq RENAME TO attempts_before_partitions_id_seq;

CREATE TABLE attempts (
    id           bigserial,
    delivery_id  bigint NOT NULL
                 CONSTRAINT attempts_delivery_id_fkey REFERENCES deliveries (id) ON DELETE CASCADE,
    at           timestamptz NOT NULL DEFAULT now(),
    host         text,
    outcome      text NOT NULL
                 CONSTRAINT attempts_outcome_check CHECK (outcome IN ('delivered', 'deferred', 'bounced')),
    reply        text NOT NULL,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE INDEX attempts_delivery ON attempts (delivery_id);
CREATE TABLE attempts_default PARTITION OF attempts DEFAULT;
SELECT setval('attempts_id_seq', nextval('attempts_before_partitions_id_seq'), false);
ALTER TABLE attempts_before_partitions ALTER COLUMN id DROP DEFAULT;
DROP SEQUENCE attempts_before_partitions_id_seq;

-- the rows already there: attached whole as the partition of everything before now (a
-- CHECK constraint that implies its bound spares ATTACH a scan), or gone with their table
-- if it is empty
DO $$
DECLARE
    parent text;
    legacy text;
    has_rows boolean;
    bound timestamptz := now();
BEGIN
    FOREACH parent IN ARRAY ARRAY['events', 'attempts'] LOOP
        legacy := parent || '_before_partitions';
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', legacy) INTO has_rows;
        IF NOT has_rows THEN
            EXECUTE format('DROP TABLE %I', legacy);
            CONTINUE;
        END IF;
        -- its own key gives way to the partitioned table's (id, at), built by ATTACH
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', legacy, legacy || '_pkey');
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (at < %L)',
                       legacy, legacy || '_bound', bound);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%L)',
                       parent, legacy, bound);
        INSERT INTO partitions VALUES (legacy, parent, '-infinity', bound);
    END LOOP;
END
$$;
