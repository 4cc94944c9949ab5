"""A tenant's standing from its feedback: throttles and suspensions (P-COMPLAINT, P-BOUNCE),
admins' suspensions (P-SUSPEND) and canary campaigns (P-CANARY)."""
