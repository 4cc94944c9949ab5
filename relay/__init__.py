"""Multi-tenant outbound SMTP relay."""
