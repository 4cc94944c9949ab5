"""Which sending domains have passed verification, as the SMTP path needs to know it.

The verdicts live in PostgreSQL (`domains`), written by `relay domain verify` and by the
re-check this module runs in the background of `relay serve` (every `recheck_every`); the
SMTP path reads an in-memory set refreshed every half minute, never DNS per message.
"""

import asyncio
import json
import logging

import asyncpg

from relay.config.schema import Config
from relay.config.tenants import owning_domain
from relay.policy.domains import Finding, passed, verify_domain
from relay.queue.sql import QUERIES

log = logging.getLogger(__name__)
_REFRESH_SECONDS = 30.0
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


async def verify_and_record(pool: asyncpg.Pool, config: Config, domain: str) -> list[Finding]:
    """Verify `domain` now and store the result; returns the findings."""
    tenant = next((t.name for t in config.tenants if owning_domain(t, domain) == domain), "")
    findings = await verify_domain(domain, config)
    await pool.execute(
        QUERIES["domain_record"], domain, tenant, passed(findings),
        json.dumps([f.as_dict() for f in findings]),
    )  # fmt: skip
    return findings


class DomainStatus:
    def __init__(self, pool: asyncpg.Pool, config: Config) -> None:
        self.pool = pool
        self.config = config
        self.passed: frozenset[str] = frozenset()

    def for_policy(self) -> frozenset[str] | None:
        """The verified domains, or None when the deployment does not require them."""
        return self.passed if self.config.policy.require_verified_domains else None

    async def refresh(self) -> None:
        try:
            rows = await self.pool.fetch(QUERIES["domains_passed"])
        except _DB_ERRORS as exc:
            log.warning("cannot read domain verification status: %r", exc)
            return
        self.passed = frozenset(r["domain"] for r in rows)

    async def run(self) -> None:
        """Refresh the set, and re-verify domains whose last check is too old."""
        while True:
            await self.refresh()
            try:
                due = await self.pool.fetch(
                    QUERIES["domains_due"], self.config.policy.recheck_every
                )
                for row in due:
                    findings = await verify_and_record(self.pool, self.config, row["domain"])
                    log.info("re-verified %s: %s", row["domain"],
                             "passed" if passed(findings) else "FAILED")  # fmt: skip
            except Exception:  # a failed re-check must not take the relay down
                log.exception("domain re-check failed; the stored results stay")
            await asyncio.sleep(_REFRESH_SECONDS)
