"""The policy pipeline: the checks of each SMTP phase, cheapest first, each citing its rule.

In the SMTP transaction the pipeline stops at the first refusal (nothing after it could
change the answer, and the client is waiting); `relay policy explain` runs every check so
an admin sees all verdicts. Every verdict is counted in `relay_policy_verdicts_total`.
"""

import asyncio
import functools
from collections.abc import Sequence
from typing import Protocol

from prometheus_client import Counter

from relay.mail.wire import LARGE_MESSAGE
from relay.policy.checks.bulk import ConsentNote, NoServiceContact, OneClickUnsubscribe
from relay.policy.checks.consent import ConsentAtData, ConsentAtRcpt
from relay.policy.checks.content import ProhibitedContent
from relay.policy.checks.dkim import SignedMail
from relay.policy.checks.headers import (
    AlignedHeaders,
    FromHeader,
    IdentifiableRegistrant,
    SaneHeaders,
    VerifiedDomain,
)
from relay.policy.checks.identity import SenderIdentity
from relay.policy.checks.reputation import BULK_SUSPENSIONS
from relay.policy.checks.size import LineLength, MimeStructure
from relay.policy.checks.subject import MisleadingSubject
from relay.policy.checks.suppression import SuppressedRecipient
from relay.policy.checks.tenant import EnvelopeSender, TenantStanding, VerifiedForBulk
from relay.policy.context import LookupUnavailable, Phase, PolicyContext
from relay.policy.suppression_filter import SuppressionFilter
from relay.policy.verdict import Outcome, Verdict

VERDICTS = Counter(
    "relay_policy_verdicts",
    "Policy check results by rule (P-ID) and verdict (pass, reject, tempfail, hold, skip).",
    ["rule", "verdict"],
)


@functools.cache
def _verdict_counter(rule: str, verdict: str) -> Counter:
    """The counter of one (rule, verdict) pair; `labels()` costs a few microseconds a call,
    and every message passes a dozen checks. The pairs are few: rules times outcomes."""
    return VERDICTS.labels(rule, verdict)


class Check(Protocol):
    rule: str
    phase: str

    async def check(self, ctx: PolicyContext) -> Verdict: ...


DEFAULT_CHECKS: tuple[Check, ...] = (
    TenantStanding(),
    EnvelopeSender(),
    VerifiedForBulk(),
    *BULK_SUSPENSIONS,
    SuppressedRecipient(),
    ConsentAtRcpt(),
    LineLength(),
    MimeStructure(),
    SaneHeaders(),
    FromHeader(),
    VerifiedDomain(),
    SignedMail(),
    IdentifiableRegistrant(),
    AlignedHeaders(),
    MisleadingSubject(),
    OneClickUnsubscribe(),
    SenderIdentity(),
    ConsentNote(),
    NoServiceContact(),
    ProhibitedContent(),
    ConsentAtData(),
)
"""In order: cheap structural checks first, then identity, then content."""


def default_checks(
    suppression_secret: bytes | None, suppressions: SuppressionFilter | None = None
) -> tuple[Check, ...]:
    """DEFAULT_CHECKS with P-SUPPRESS holding the secret that finds erased addresses by
    their keyed hash (P-ERASURE) and the process's filter of the list."""
    suppressed = SuppressedRecipient(suppression_secret, suppressions)
    return tuple(suppressed if isinstance(c, SuppressedRecipient) else c for c in DEFAULT_CHECKS)


class Pipeline:
    def __init__(self, checks: Sequence[Check] = DEFAULT_CHECKS) -> None:
        self.checks = tuple(checks)

    def order(self, phase: Phase | None = None) -> list[str]:
        return [f"{c.phase}:{c.rule}" for c in self.checks if phase in (None, c.phase)]

    async def run(
        self, phase: Phase, ctx: PolicyContext, *, stop_at_refusal: bool = True
    ) -> list[Verdict]:
        verdicts = []
        skipped = set(ctx.tenant.policy_skip)
        large = len(ctx.raw) >= LARGE_MESSAGE
        for check in self.checks:
            if check.phase != phase:
                continue
            if large:  # other sessions go first between two checks, slow on a large message
                await asyncio.sleep(0)
            if check.rule in skipped:
                verdict = Verdict.skip(check.rule, f"disabled for tenant {ctx.tenant.name}")
            else:
                verdict = await _checked(check, ctx)
            _verdict_counter(verdict.rule, verdict.outcome.value).inc()
            verdicts.append(verdict)
            if stop_at_refusal and verdict.refuses:
                break
        return verdicts


async def _checked(check: Check, ctx: PolicyContext) -> Verdict:
    """The check's verdict; a deferral of its rule when the shared state it reads cannot be
    read now (`LookupUnavailable`: the database is down), in one place for every check."""
    try:
        return await check.check(ctx)
    except LookupUnavailable as exc:
        return Verdict.tempfail(check.rule, str(exc), 451, "4.3.0")


def refusal(verdicts: list[Verdict]) -> Verdict | None:
    """The first verdict that refuses the message, if any."""
    return next((v for v in verdicts if v.outcome in (Outcome.REJECT, Outcome.TEMPFAIL)), None)
