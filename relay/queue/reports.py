"""Reports as they came (`feedback_reports`): stored before the reply that promises them,
read by the feedback processor. Anyone on the internet can send one, so nothing here
counts toward anything; the processor decides what a report is worth."""

from collections.abc import Sequence

import asyncpg

from relay.queue.sql import QUERIES


class ReportInbox:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def store(
        self,
        channel: str,
        mail_from: str,
        recipients: Sequence[str],
        client_address: str,
        raw: bytes,
        reporter: str | None = None,
    ) -> int:
        """Keep a report (`channel`: return-path, fbl, abuse or abuse-form); its id."""
        return int(
            await self._pool.fetchval(
                QUERIES["feedback_report_insert"], channel, mail_from, list(recipients),
                client_address, raw, reporter,
            )
        )  # fmt: skip
