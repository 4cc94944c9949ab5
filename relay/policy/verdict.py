"""Verdicts: what a policy check decided, as a value that explains itself.

A check returns a Verdict on every branch, passing ones included (Haraka's habit), so the
audit trail and the metrics say what was checked and why it passed. Refusals carry the
reply they become at the SMTP edge: `550 5.7.1 [P-HDR-FROM] <reason>` (POLICY.md, "What
every rejection looks like").
"""

from dataclasses import dataclass
from enum import Enum


class Outcome(Enum):
    PASS = "pass"
    REJECT = "reject"  # permanent: 5xx, nothing queued
    TEMPFAIL = "tempfail"  # the client should retry: 4xx
    HOLD = "hold"  # accept, but keep it queued until released (canary, suspended tenant)
    SKIP = "skip"  # the check does not apply to this message (say why)


@dataclass(frozen=True)
class Verdict:
    rule: str
    outcome: Outcome
    reason: str
    code: int = 250
    enhanced: str = "2.0.0"
    detail: str = ""
    """What within the rule decided, where a rule has parts (P-CONTENT's category)."""

    @classmethod
    def ok(cls, rule: str, reason: str) -> "Verdict":
        return cls(rule, Outcome.PASS, reason)

    @classmethod
    def skip(cls, rule: str, reason: str) -> "Verdict":
        return cls(rule, Outcome.SKIP, reason)

    @classmethod
    def reject(
        cls, rule: str, reason: str, code: int = 550, enhanced: str = "5.7.1", detail: str = ""
    ) -> "Verdict":
        return cls(rule, Outcome.REJECT, reason, code, enhanced, detail)

    @classmethod
    def tempfail(
        cls, rule: str, reason: str, code: int = 451, enhanced: str = "4.7.1"
    ) -> "Verdict":
        return cls(rule, Outcome.TEMPFAIL, reason, code, enhanced)

    @classmethod
    def hold(cls, rule: str, reason: str) -> "Verdict":
        return cls(rule, Outcome.HOLD, reason)

    @property
    def refuses(self) -> bool:
        return self.outcome in (Outcome.REJECT, Outcome.TEMPFAIL)

    def reply(self) -> str:
        """The SMTP reply line for a refusal, with the rule ID the client can look up."""
        reason = " ".join(self.reason.split())  # one line, whatever the reason held
        return f"{self.code} {self.enhanced} [{self.rule}] {reason}"
