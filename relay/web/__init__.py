"""The HTTP surface on one listener: `/metrics` and `/healthz` for operations, the tenants'
API, the one-click unsubscribe endpoint and the abuse report form."""
