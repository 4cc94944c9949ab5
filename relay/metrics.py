"""The metrics that several parts of the relay share (submission, delivery, the queue, the
HTTP listener), declared once, with how to read them. A metric of one feature alone is
declared beside it: site shaping, reputation, canaries, retention, webhooks, events, the
feedback processor, the policy pipeline and `relay policy eval`.

Labels are bounded: tenant, listener, outcome, reason, never an address or message id.
"""

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_RECEIVED = Counter(
    "relay_messages_received",
    "Messages accepted with 250 (committed to the queue), by tenant.",
    ["tenant"],
)
MESSAGES_REJECTED = Counter(
    "relay_messages_rejected",
    "SMTP commands refused during submission, by tenant ('' before it is known) and reason: "
    "auth, rate, queue, internal, or the P-rule ID of a policy refusal (P-SIZE, P-HDR-FROM...).",
    ["tenant", "reason"],
)
DELIVERIES = Counter(
    "relay_deliveries",
    "Delivery attempts by tenant and outcome: delivered (2xx), deferred (4xx or network "
    "error, retried later) or bounced (5xx or queue lifetime expired, DSN sent).",
    ["tenant", "outcome"],
)
QUEUE_DEPTH = Gauge(
    "relay_queue_deliveries",
    "Deliveries waiting in the queue (state queued): 'due' can go now, 'scheduled' wait for "
    "their retry time (or, in flight, for their lease to end), 'held' wait for an admin or "
    "a canary window (a suspended tenant's bulk mail, a campaign's rest). Read at scrape "
    "time from counts PostgreSQL keeps; 'due' is the planner's estimate once more than "
    "10,000 wait.",
    ["state"],
)
QUEUE_OLDEST = Gauge(
    "relay_queue_oldest_message_age_seconds",
    "Age of the oldest message with a delivery still queued and not held; growing means "
    "delivery is stuck.",
)
TLS_CERTIFICATE_EXPIRY = Gauge(
    "relay_tls_certificate_expiry_timestamp_seconds",
    "When the certificate a listener presents expires (Unix time of its notAfter), read at "
    "start; TLS files change only with a restart. Alert when it is less than 14 days away.",
    ["listener"],
)
TIME_TO_250 = Histogram(
    "relay_accept_seconds",
    "Time from the end of DATA to the 250 reply (policy, storage and the group commit).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ACCEPT_STAGE_SECONDS = Histogram(
    "relay_accept_stage_seconds",
    "Where the time from the end of DATA to the 250 goes, by stage: 'policy' (the DATA-phase "
    "checks), 'signing' (the trace header added, DKIM) and 'storage' (the wait for the group "
    "commit, fsync included). Only accepted messages are counted.",
    ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
GROUP_COMMIT_MESSAGES = Histogram(
    "relay_group_commit_messages",
    "Messages stored by one group commit (one durable transaction); the larger the batches, "
    "the less each message costs PostgreSQL.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
DELIVERY_LATENCY = Histogram(
    "relay_delivery_seconds",
    "Time from acceptance to successful delivery of one recipient, retries included.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 1800, 3600, 21600, 86400),
)
OPEN_SESSIONS = Gauge(
    "relay_smtp_sessions",
    "Open SMTP submission sessions, by listener.",
    ["listener"],
)
SUPPRESSION_LOOKUPS = Counter(
    "relay_suppression_lookups",
    "P-SUPPRESS look-ups at RCPT by what answered: 'filter' (the in-memory filter knew the "
    "address is not on the list) or 'database' (it might be, or the filter was out of step).",
    ["by"],
)
SUPPRESSION_FILTER_ENTRIES = Gauge(
    "relay_suppression_filter_entries",
    "Entries in the main process's suppression filter (read from the list, and notified "
    "since); -1 while it is out of step with the database (RCPT then asks the database).",
)
DATABASE_UP = Gauge(
    "relay_database_up",
    "1 when the last query to PostgreSQL succeeded, 0 when it failed.",
)
