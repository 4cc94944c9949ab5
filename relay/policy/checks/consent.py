"""P-CONSENT-RECORD: bulk mail only to recipients whose consent the tenant can prove.

Tenants import or post their consent records (when, from where, which form, the text
shown, the method); where a tenant requires them (`require_consent`, the strict default)
bulk mail to an address without a record is refused. A tenant whose stream is bulk is
checked at RCPT, one primary-key look-up per recipient, so only those recipients are
refused; a mixed tenant's message is known to be bulk only at DATA, where all recipients
are checked in one query and the message is refused naming those without a record.
Purchased, rented or harvested lists have no records, which is the point.
"""

from relay.policy.context import PolicyContext
from relay.policy.verdict import Verdict


async def _missing(ctx: PolicyContext, recipients: list[str]) -> list[str]:
    assert ctx.lookups is not None
    return await ctx.lookups.without_consent(ctx.tenant.name, recipients)


class ConsentAtRcpt:
    rule = "P-CONSENT-RECORD"
    phase = "rcpt"

    async def check(self, ctx: PolicyContext) -> Verdict:
        if not ctx.tenant.require_consent or ctx.tenant.stream != "bulk":
            return Verdict.skip(self.rule, "checked at DATA once the message is known to be bulk")
        if ctx.lookups is None:
            return Verdict.skip(self.rule, "no consent records at hand (offline)")
        missing = await _missing(ctx, ctx.recipients[-1:])
        if missing:
            return Verdict.reject(
                self.rule, f"no consent record of <{missing[0]}> for tenant {ctx.tenant.name}"
            )
        return Verdict.ok(self.rule, "consent on record")


class ConsentAtData:
    rule = "P-CONSENT-RECORD"
    phase = "data"

    async def check(self, ctx: PolicyContext) -> Verdict:
        if not ctx.tenant.require_consent:
            return Verdict.skip(self.rule, f"tenant {ctx.tenant.name} does not require records")
        if not ctx.is_bulk:
            return Verdict.skip(self.rule, "transactional mail")
        if ctx.tenant.stream == "bulk":
            return Verdict.ok(self.rule, "every recipient was checked at RCPT")
        if ctx.lookups is None:
            return Verdict.skip(self.rule, "no consent records at hand (offline)")
        missing = await _missing(ctx, ctx.recipients)
        if missing:
            shown = ", ".join(f"<{a}>" for a in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            return Verdict.reject(
                self.rule,
                f"bulk mail without a consent record of {shown}{more} for tenant {ctx.tenant.name}",
            )
        return Verdict.ok(self.rule, f"consent on record for all {len(ctx.recipients)}")
