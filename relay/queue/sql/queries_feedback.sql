-- Feedback: reports received by the feedback listener or the abuse form, and what the
-- processor needs to match them to deliveries.

-- name: feedback_report_insert
INSERT INTO feedback_reports (channel, mail_from, recipients, client_address, raw, reporter)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id;

-- name: feedback_reports_new
SELECT id, channel, mail_from, recipients, client_address, raw, reporter FROM feedback_reports
WHERE state = 'new' ORDER BY id LIMIT $1
FOR UPDATE SKIP LOCKED;

-- name: feedback_report_done
UPDATE feedback_reports
SET state = $2, kind = $3, problem = $4, tenant = $5, message_id = $6,
    reporter = coalesce($7, reporter)
WHERE id = $1;

-- name: delivery_by_id
SELECT d.id, d.recipient, d.message_id, coalesce(d.site, '') AS site, m.tenant,
       coalesce(m.campaign, '') AS campaign
FROM deliveries d JOIN messages m ON m.id = d.message_id
WHERE d.id = $1;

-- name: deliveries_of_message
-- The deliveries of a message found by its queue id or its Message-ID header, newest first;
-- $3 narrows to one recipient when the report names it.
SELECT d.id, d.recipient, d.message_id, coalesce(d.site, '') AS site, m.tenant,
       coalesce(m.campaign, '') AS campaign
FROM deliveries d JOIN messages m ON m.id = d.message_id
WHERE (m.id = $1 OR ($1 IS NULL AND m.header_message_id = $2))
  AND m.mail_from <> ''
  AND ($3::text IS NULL OR lower(d.recipient) = lower($3))
ORDER BY m.received_at DESC, d.id
LIMIT 50;

-- name: abuse_list
SELECT id, received_at, channel, state, tenant, reporter, problem FROM feedback_reports
WHERE channel IN ('abuse', 'abuse-form') ORDER BY id DESC LIMIT $1;

-- name: abuse_show
SELECT id, received_at, channel, state, kind, tenant, message_id, reporter, problem,
       mail_from, recipients, client_address, raw
FROM feedback_reports WHERE id = $1;

-- name: feedback_already_recorded
-- Whether an event of one of the kinds $3 is recorded for message $1 and address $2; the
-- caller holds feedback_lock for the pair, so two processes cannot both find none.
SELECT EXISTS (
    SELECT 1 FROM events WHERE recipient = $2 AND message_id = $1 AND kind = ANY($3::text[])
);

-- name: feedback_lock
-- Serialises the reports about one (message, address) pair until the transaction ends.
SELECT pg_advisory_xact_lock(hashtextextended($1 || ' ' || $2, 7));
