"""Values of RFC 5321 and 5322 that every layer shares: addresses and paths, the wire form of
a message (line endings, dot-stuffing), MIME reading helpers. Nothing here knows of the
listener, the queue or the policy, so any of them may import it."""
