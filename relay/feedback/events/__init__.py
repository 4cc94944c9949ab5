"""Events told to tenants: each tenant's event log POSTed to its webhook."""
