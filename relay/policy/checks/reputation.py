"""P-COMPLAINT, P-BOUNCE (and P-SUSPEND by hand): no bulk mail from a tenant whose bulk
sending is suspended.

A tenant whose complaint or hard-bounce rate went above its limit has its bulk sending
suspended by the reputation task (`relay.feedback.reputation.judge`), or an admin suspended it
(`relay tenant suspend`); until an admin resumes it, its bulk submissions are refused at
DATA, where a message is known to be bulk, with the measured rate and how it ends.
Transactional mail passes: the recipients of receipts and password resets asked for them.

The open suspensions are read from memory, refreshed from PostgreSQL at most every few
seconds (`SuspensionCache`), never queried per message. Offline (`relay policy explain`)
the check skips; a database that cannot answer before any copy was read defers the message.
"""

from relay.policy.context import PolicyContext
from relay.policy.verdict import Verdict


class BulkSuspended:
    """Refuses bulk mail of a tenant whose suspension of kind `cause` is open, citing
    `rule`: P-COMPLAINT and P-BOUNCE for the automatic ones, P-SUSPEND for an admin's."""

    phase = "data"

    def __init__(self, rule: str, cause: str) -> None:
        self.rule = rule
        self.cause = cause
        """The `tenant_suspensions.rule` it acts on: P-COMPLAINT, P-BOUNCE or manual."""

    async def check(self, ctx: PolicyContext) -> Verdict:
        if not ctx.is_bulk:
            return Verdict.skip(self.rule, "transactional mail: bulk suspensions do not apply")
        if ctx.lookups is None:
            return Verdict.skip(self.rule, "no suspensions at hand (offline)")
        suspensions = await ctx.lookups.suspensions(ctx.tenant.name)
        found = next((s for s in suspensions if s.rule == self.cause), None)
        name = ctx.tenant.name
        if found is None:
            return Verdict.ok(self.rule, f"tenant {name}'s bulk sending is not suspended")
        if self.cause == "manual":
            return Verdict.reject(
                self.rule, f"tenant {name}'s bulk sending is suspended by an admin: {found.reason}"
            )
        return Verdict.reject(
            self.rule,
            f"tenant {name}'s bulk sending is suspended: {found.reason}; "
            "an admin resumes it with relay tenant resume",
        )


BULK_SUSPENSIONS = (
    BulkSuspended("P-SUSPEND", "manual"),
    BulkSuspended("P-COMPLAINT", "P-COMPLAINT"),
    BulkSuspended("P-BOUNCE", "P-BOUNCE"),
)
"""The three, as the pipeline lists them: an admin's decision first, then the rates."""
