"""P-SUPPRESS: no mail to an address that unsubscribed from, complained about or
hard-bounced for this tenant; refused at RCPT, so the client learns at once, never silently.

The list lives in PostgreSQL, shared by every relay process. Each process holds a filter of
it in memory (`relay.policy.suppression_filter`) that answers most RCPTs, those it knows
are not on the list; the others are one primary-key look-up in the database. If the
database cannot answer, the recipient is deferred (4xx) rather than let through.
An erased address (P-ERASURE) is on the list as its keyed hash, not as itself: with the
deployment's secret the same look-up finds it by either.
"""

from relay import metrics
from relay.policy.context import PolicyContext
from relay.policy.suppression_filter import SuppressionFilter
from relay.policy.verdict import Verdict
from relay.queue.suppressions import suppression_key

_BY_FILTER = metrics.SUPPRESSION_LOOKUPS.labels("filter")
_BY_DATABASE = metrics.SUPPRESSION_LOOKUPS.labels("database")


class SuppressedRecipient:
    rule = "P-SUPPRESS"
    phase = "rcpt"

    def __init__(self, secret: bytes | None = None, known: SuppressionFilter | None = None) -> None:
        self.secret = secret
        """The keyed-hash secret; None finds plain entries only."""
        self.known = known
        """The process's filter of the list; None asks the database every time."""

    async def check(self, ctx: PolicyContext) -> Verdict:
        if ctx.lookups is None:
            return Verdict.skip(self.rule, "no suppression list at hand (offline)")
        recipient = ctx.recipients[-1]
        key = suppression_key(self.secret, recipient) if self.secret else None
        names = (recipient,) if key is None else (recipient, key)
        if self.known is not None and self.known.surely_absent(ctx.tenant.name, names):
            _BY_FILTER.inc()
            return Verdict.ok(self.rule, f"{recipient} is not suppressed")
        _BY_DATABASE.inc()
        entry = await ctx.lookups.suppression(ctx.tenant.name, recipient, key)
        if entry is None:
            return Verdict.ok(self.rule, f"{recipient} is not suppressed")
        since = entry.since.date().isoformat()
        return Verdict.reject(
            self.rule,
            f"<{recipient}> is on tenant {ctx.tenant.name}'s suppression list "
            f"({entry.reason} since {since})",
        )
