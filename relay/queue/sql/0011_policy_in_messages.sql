-- The audit trail moves into the message's own row: one jsonb array of
-- {"rule", "outcome", "reason"} objects in check order, written with the message. As a table
-- it cost about twenty rows per message, each with its index entry and a foreign-key check
-- against messages: most of the database's work for an accepted message.
ALTER TABLE messages ADD COLUMN policy jsonb NOT NULL DEFAULT '[]';

UPDATE messages AS m SET policy = p.verdicts
FROM (
    SELECT message_id,
           jsonb_agg(jsonb_build_object('rule', rule, 'outcome', outcome, 'reason', reason)
                     ORDER BY position) AS verdicts
    FROM policy_results GROUP BY message_id
) AS p
WHERE p.message_id = m.id;

DROP TABLE policy_results;
