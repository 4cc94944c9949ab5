"""Which sending domains have passed verification, as the SMTP path needs to know it.

The verdicts live in PostgreSQL (`domains`), written by `relay domain add|verify` and by the
re-check this module runs in the background of `relay serve` (every `recheck_every`); the
SMTP path reads an in-memory map refreshed every half minute, never DNS or RDAP per message.
A look-up that gets no conclusive answer (an RDAP service down) keeps the last conclusive
finding, so an outage elsewhere does not stop a verified domain's mail.
"""

import asyncio
import logging

from relay.config.schema import Config
from relay.config.tenants import owning_domain
from relay.policy.domains import Finding, passed, verify_domain
from relay.queue.domains import DomainRecords
from relay.queue.errors import DATABASE_ERRORS

log = logging.getLogger(__name__)
_REFRESH_SECONDS = 30.0


async def verify_and_record(records: DomainRecords, config: Config, domain: str) -> list[Finding]:
    """Verify `domain` now and store the result; returns the findings."""
    tenant = next((t.name for t in config.tenants if owning_domain(t, domain) == domain), "")
    findings = await verify_domain(domain, config)
    if any(f.transient for f in findings):
        findings = await _keep_conclusive(records, domain, findings)
    await records.record(domain, tenant, passed(findings), [f.as_dict() for f in findings])
    return findings


async def _keep_conclusive(
    records: DomainRecords, domain: str, findings: list[Finding]
) -> list[Finding]:
    """Replace each transient finding by the last stored one of the same check, if any."""
    last = {f["check"]: Finding.from_dict(f) for f in await records.findings(domain)}
    kept = []
    for finding in findings:
        previous = last.get(finding.check)
        if finding.transient and previous is not None and previous.status != "fail":
            note = f" (kept from the last check; now: {finding.detail})"
            finding = Finding(previous.check, previous.status, previous.detail + note,
                              previous.publish, previous.seen)  # fmt: skip
        kept.append(finding)
    return kept


class DomainStatus:
    def __init__(self, records: DomainRecords, config: Config) -> None:
        self.records = records
        self.config = config
        self.failures: dict[str, frozenset[str]] = {}

    def for_policy(self) -> dict[str, frozenset[str]] | None:
        """Each recorded domain's failed checks, or None when the deployment does not
        require verified domains."""
        return self.failures if self.config.policy.require_verified_domains else None

    async def refresh(self) -> None:
        try:
            self.failures = await self.records.failures()
        except DATABASE_ERRORS as exc:
            log.warning("cannot read domain verification status: %r", exc)

    async def follow(self) -> None:
        """Refresh the set every half minute, and nothing else: for the SMTP worker
        processes (`[relay] processes`), which read the verdicts that the main process's
        `run` writes; one re-verifier per relay is enough and keeps DNS and RDAP calm."""
        while True:
            await asyncio.sleep(_REFRESH_SECONDS)
            await self.refresh()

    async def run(self) -> None:
        """Refresh the set, and re-verify domains whose last check is too old."""
        while True:
            await self.refresh()
            try:
                for domain in await self.records.due(self.config.policy.recheck_every):
                    findings = await verify_and_record(self.records, self.config, domain)
                    log.info("re-verified %s: %s", domain,
                             "passed" if passed(findings) else "FAILED")  # fmt: skip
            except Exception:  # a failed re-check must not take the relay down
                log.exception("domain re-check failed; the stored results stay")
            await asyncio.sleep(_REFRESH_SECONDS)
