-- The audit trail: every policy verdict of every accepted message (rule, outcome, reason).
CREATE TABLE policy_results (
    message_id  uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    position    smallint NOT NULL,
    rule        text NOT NULL,
    outcome     text NOT NULL,
    reason      text NOT NULL,
    PRIMARY KEY (message_id, position)
);
