"""P-SUSPEND, P-HDR-ALIGN (envelope) and P-AUTH: who may send what.

At MAIL, a suspended tenant is refused with the reason an admin recorded, and the envelope
sender must be in one of the tenant's domains (a null reverse-path is refused: a tenant's
mail needs somewhere for bounces to go). At DATA, a tenant whose identity is not verified
may send transactional mail only, never bulk.
"""

from relay.config.tenants import owns_domain
from relay.mail.address import AddressError, to_a_label
from relay.policy.context import PolicyContext
from relay.policy.verdict import Verdict


class TenantStanding:
    """P-SUSPEND: a suspended or frozen tenant gets a clear 5xx naming the reason."""

    rule = "P-SUSPEND"
    phase = "mail"

    async def check(self, ctx: PolicyContext) -> Verdict:
        if ctx.tenant.suspended:
            return Verdict.reject(
                self.rule, f"tenant {ctx.tenant.name} is suspended: {ctx.tenant.suspended}"
            )
        return Verdict.ok(self.rule, f"tenant {ctx.tenant.name} is in good standing")


class EnvelopeSender:
    """P-HDR-ALIGN: MAIL FROM uses a domain the tenant owns (RFC 5321 4.1.1.2 reverse-path)."""

    rule = "P-HDR-ALIGN"
    phase = "mail"

    async def check(self, ctx: PolicyContext) -> Verdict:
        if not ctx.mail_from:
            return Verdict.reject(
                self.rule, "The null sender <> cannot be used for submission", 553
            )
        try:
            domain = to_a_label(ctx.mail_from.rpartition("@")[2])
        except AddressError:
            return Verdict.reject(self.rule, f"Sender {ctx.mail_from!r} has no valid domain", 553)
        if not owns_domain(ctx.tenant, domain):
            return Verdict.reject(
                self.rule,
                f"Sender domain {domain} is not a sending domain of tenant {ctx.tenant.name}",
                553,
            )
        return Verdict.ok(self.rule, f"envelope sender domain {domain} belongs to the tenant")


class VerifiedForBulk:
    """P-AUTH: an unverified tenant (`verified = false`) sends transactional mail only."""

    rule = "P-AUTH"
    phase = "data"

    async def check(self, ctx: PolicyContext) -> Verdict:
        if ctx.tenant.verified:
            return Verdict.ok(self.rule, f"tenant {ctx.tenant.name} is verified")
        if ctx.is_bulk:
            return Verdict.reject(
                self.rule,
                f"tenant {ctx.tenant.name} is not verified and may not send bulk mail",
            )
        return Verdict.ok(self.rule, "unverified tenant, transactional message")
