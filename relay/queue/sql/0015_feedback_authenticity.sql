-- Feedback counts only when it is authentic and only once: a complaint report that no
-- configured feedback provider vouches for is kept as 'unverified', and a report of a
-- complaint, bounce or abuse report already recorded for the same delivery and address is
-- kept as 'duplicate'; neither changes suppressions or rates.
ALTER TABLE feedback_reports DROP CONSTRAINT feedback_reports_state_check;
ALTER TABLE feedback_reports ADD CONSTRAINT feedback_reports_state_check
    CHECK (state IN ('new', 'processed', 'unmatched', 'malformed', 'unverified', 'duplicate'));
