"""What comes back from the internet about the mail the relay sent, and what the relay does
about it, in rooms by job: `reports` reads and processes bounces and complaints; `reputation`
judges each tenant from them (throttles, suspensions, canaries); `privacy` lets personal data
go (retention, unsubscribe links); `events` tells tenants what happened (webhooks)."""
