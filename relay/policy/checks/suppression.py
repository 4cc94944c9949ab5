"""P-SUPPRESS: no mail to an address that unsubscribed from, complained about or
hard-bounced for this tenant; refused at RCPT, so the client learns at once, never silently.

One primary-key look-up per RCPT in PostgreSQL (the list is shared by every relay process).
If the database cannot answer, the recipient is deferred (4xx) rather than let through.
An erased address (P-ERASURE) is on the list as its keyed hash, not as itself: with the
deployment's secret the same look-up finds it by either.
"""

from relay.feedback.erasure import suppression_key
from relay.policy.context import PolicyContext
from relay.policy.verdict import Verdict
from relay.queue.errors import DATABASE_ERRORS
from relay.queue.sql import QUERIES


class SuppressedRecipient:
    rule = "P-SUPPRESS"
    phase = "rcpt"

    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret
        """The keyed-hash secret; None finds plain entries only."""

    async def check(self, ctx: PolicyContext) -> Verdict:
        if ctx.database is None:
            return Verdict.skip(self.rule, "no suppression list at hand (offline)")
        recipient = ctx.recipients[-1]
        key = suppression_key(self.secret, recipient) if self.secret else None
        try:
            row = await ctx.database.fetchrow(
                QUERIES["suppression_of"], ctx.tenant.name, recipient, key
            )
        except DATABASE_ERRORS as exc:
            return Verdict.tempfail(
                self.rule, f"suppression list unavailable ({type(exc).__name__})", 451, "4.3.0"
            )
        if row is None:
            return Verdict.ok(self.rule, f"{recipient} is not suppressed")
        since = row["created_at"].date().isoformat()
        return Verdict.reject(
            self.rule,
            f"<{recipient}> is on tenant {ctx.tenant.name}'s suppression list "
            f"({row['reason']} since {since})",
        )
