"""Consent records (P-CONSENT-RECORD): stored in batches, shown one at a time, and the
recipients of a message without one found in one indexed look-up."""

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from relay.queue.sql import QUERIES

BATCH = 1000
"""Rows per statement when records are stored: one round trip per thousand."""

ConsentRow = tuple[str, datetime, str, str, str, str]
"""address, consented_at, source, form_version, consent_text, method."""


class ConsentStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def store(self, tenant: str, records: Sequence[ConsentRow]) -> None:
        """Insert or replace `records` for `tenant`, one statement per batch of rows."""
        for start in range(0, len(records), BATCH):
            batch = records[start : start + BATCH]
            columns = [list(c) for c in zip(*batch, strict=True)]
            await self._pool.execute(QUERIES["consent_upsert"], tenant, *columns)

    async def show(self, tenant: str, address: str) -> dict[str, object] | None:
        row = await self._pool.fetchrow(QUERIES["consent_show"], tenant, address)
        return dict(row) if row is not None else None

    async def without_record(self, tenant: str, addresses: Sequence[str]) -> list[str]:
        """Those of `addresses` that `tenant` holds no record of, in their order."""
        rows = await self._pool.fetch(QUERIES["consent_missing"], tenant, list(addresses))
        return [r["address"] for r in rows]
