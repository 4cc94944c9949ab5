"""Sending domains' verification results (`domains`): written by `relay domain add|verify`
and the background re-check, read by the SMTP path through an in-memory map."""

import json
from collections.abc import Mapping
from typing import Any

import asyncpg

from relay.queue.sql import QUERIES


class DomainRecords:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(
        self, domain: str, tenant: str, passed: bool, findings: list[dict[str, Any]]
    ) -> None:
        await self._pool.execute(
            QUERIES["domain_record"], domain, tenant, passed, json.dumps(findings)
        )

    async def findings(self, domain: str) -> list[dict[str, Any]]:
        """The findings last stored for `domain`; none when it was never checked."""
        stored = await self._pool.fetchval(QUERIES["domain_findings"], domain)
        return list(json.loads(stored)) if stored else []

    async def failures(self) -> dict[str, frozenset[str]]:
        """Each recorded domain's failed checks (empty when it passed)."""
        rows = await self._pool.fetch(QUERIES["domain_failures"])
        return {r["domain"]: frozenset(r["failing"]) for r in rows}

    async def all(self) -> list[Mapping[str, Any]]:
        """Every recorded domain with its last result (`relay domain list`)."""
        return list(await self._pool.fetch(QUERIES["domain_list"]))

    async def due(self, older_than_seconds: float) -> list[str]:
        """Domains whose last check is older than that."""
        rows = await self._pool.fetch(QUERIES["domains_due"], older_than_seconds)
        return [r["domain"] for r in rows]
