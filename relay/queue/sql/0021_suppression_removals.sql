-- P-SUPPRESS: the filter each relay process keeps of the suppression list
-- (relay.policy.suppression_filter) learns additions from 0013's notifications and was
-- read again every hour, the whole list in every process, to let removed entries go. A
-- statement that removes entries (a delete, or an update that replaces an address, as an
-- erasure does) now notifies `relay_suppressions_removed`, and a filter is read again only
-- once something was removed from the list it holds.
CREATE FUNCTION notify_suppression_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('relay_suppressions_removed', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER suppressions_removed AFTER DELETE OR UPDATE OF tenant, address ON suppressions
    FOR EACH STATEMENT EXECUTE FUNCTION notify_suppression_removed();
