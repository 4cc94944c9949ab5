-- The deliveries waiting in the queue, counted as they change, so that a scrape of
-- /metrics reads a few rows instead of counting millions (a count of 1,000,000 queued rows
-- took 665 ms, and near 3,000,000 it outlasted the scrape's timeout).
--
-- Statement-level triggers with transition tables add what each statement changed: one
-- row of queue_counts written per statement that changes a count, none for the lease
-- updates that change nothing counted. The counts are spread over 16 rows (one chosen by
-- the writer's backend) so that concurrent writers seldom wait for each other; a reader
-- sums them.
CREATE TABLE queue_counts (
    slot   smallint PRIMARY KEY CHECK (slot BETWEEN 0 AND 15),
    queued bigint NOT NULL DEFAULT 0,  -- state 'queued' and not held
    held   bigint NOT NULL DEFAULT 0   -- state 'queued' and held
);
INSERT INTO queue_counts (slot) SELECT generate_series(0, 15);
UPDATE queue_counts SET
    queued = (SELECT count(*) FROM deliveries WHERE state = 'queued' AND hold IS NULL),
    held = (SELECT count(*) FROM deliveries WHERE state = 'queued' AND hold IS NOT NULL)
WHERE slot = 0;

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

-- The longest-waiting delivery that is not held, at the head of this index: its message's
-- age is relay_queue_oldest_message_age_seconds, read without walking the queue.
CREATE INDEX deliveries_waiting ON deliveries (id) WHERE state = 'queued' AND hold IS NULL;
