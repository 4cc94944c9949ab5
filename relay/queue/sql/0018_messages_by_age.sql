-- P-RETENTION deletes envelopes older than `retention_events` by `received_at`. The only
-- index on that column covers messages whose body is still there (messages_unpurged), so
-- once bodies were purged the envelope purge read the whole table every round (609 ms at
-- 1,000,000 messages, finding none). Messages are inserted in time order, so this index
-- grows at its right edge only.
CREATE INDEX messages_received ON messages (received_at);
