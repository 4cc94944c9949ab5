"""P-DKIM: every message leaves signed with a key of the tenant domain its From is in.

The signer (`relay.dkim.service`) picks the key the same way: the tenant's sending domain
that holds the From domain (itself or a parent) and has an active key, so the signature's
`d=` aligns with From under DMARC's relaxed rule (RFC 7489 3.1.1). Without such a key the
message would leave unsigned; that is refused here, before anything is queued, unless the
deployment sets `[dkim] allow_unsigned`.
"""

from relay.config.tenants import is_within
from relay.policy.context import PolicyContext
from relay.policy.verdict import Verdict


class SignedMail:
    rule = "P-DKIM"
    phase = "data"

    async def check(self, ctx: PolicyContext) -> Verdict:
        if ctx.signing_domains is None:
            return Verdict.skip(self.rule, "the DKIM keys are not known here")
        domain = ctx.from_domain
        if domain is None:
            return Verdict.skip(self.rule, "no From domain to sign for (P-HDR-FROM decides)")
        for owned in sorted(ctx.tenant.domains, key=len, reverse=True):
            if owned in ctx.signing_domains and is_within(domain, owned):
                return Verdict.ok(self.rule, f"signed with d={owned}")
        if ctx.allow_unsigned:
            return Verdict.skip(
                self.rule, f"no active DKIM key for {domain}; [dkim] allow_unsigned is set"
            )
        return Verdict.reject(
            self.rule,
            f"From domain {domain} of tenant {ctx.tenant.name} has no active DKIM key, and "
            "unsigned mail is not sent: relay dkim keygen, publish the record, relay dkim rotate",
        )
