-- P-SUPPRESS: each relay process answers RCPT from a filter of the suppression list held in
-- memory (relay.policy.suppression_filter), which must learn every new entry: a row
-- inserted, or updated (an erasure turns an address into its keyed hash), notifies
-- `relay_suppressions` with its tenant and address, delivered at its commit.
CREATE FUNCTION notify_suppression() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('relay_suppressions', NEW.tenant || chr(10) || NEW.address);
    RETURN NULL;
END
$$;

CREATE TRIGGER suppressions_notify AFTER INSERT OR UPDATE OF tenant, address ON suppressions
    FOR EACH ROW EXECUTE FUNCTION notify_suppression();
