"""`relay events tail`: the events tenants see (deliveries, deferrals, bounces, complaints,
unsubscribes, suppressions), read from the database every relay process writes them to.

`--follow` reads up to `CommittedHorizon`, as the webhooks do, so an event whose transaction
commits after a later id's is printed too, not skipped.
"""

import asyncio
import contextlib
import json
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from relay.cli.common import config_option, load, run, with_db
from relay.feedback.events.webhooks import event_json
from relay.queue.database import Pool
from relay.queue.events import EventLog
from relay.queue.webhooks import CommittedHorizon

_FOLLOW_SECONDS = 1.0
_PAGE = 1000
_NO_LIMIT = 2**63 - 1  # the largest bigint: no upper bound on ids


@click.group()
def events() -> None:
    """Read the event stream (what webhooks post)."""


@events.command("tail")
@config_option
@click.option("--tenant", help="Only this tenant's events.")
@click.option(
    "-n", "count", default=20, show_default=True, type=click.IntRange(min=0), help="How many."
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def events_tail(
    config_path: Path, tenant: str | None, count: int, follow: bool, as_json: bool
) -> None:
    """Print the last events, oldest first: time, tenant, kind, recipient, site,
    campaign, detail."""
    config = load(config_path)

    async def action(pool: Pool) -> None:
        await _tail(pool, tenant, count, follow, as_json)

    try:
        run(with_db(config, action))
    except KeyboardInterrupt:
        pass


async def _tail(pool: Pool, tenant: str | None, count: int, follow: bool, as_json: bool) -> None:
    log = EventLog(pool)
    horizon = CommittedHorizon(pool)
    upto = await horizon.settle() if follow else _NO_LIMIT
    rows = await log.last(tenant, upto, count) if count else []
    _print(rows, as_json)
    if not follow:
        return
    cursor = upto
    stop = asyncio.Event()  # Ctrl-C ends the loop between queries, never inside one
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _FOLLOW_SECONDS)
        if stop.is_set():
            return
        upto = await horizon.advance()
        while cursor < upto:
            rows = await log.window(tenant, cursor, upto, _PAGE)
            _print(rows, as_json)
            cursor = rows[-1]["id"] if len(rows) == _PAGE else upto


def _print(rows: list[Mapping[str, Any]], as_json: bool) -> None:
    for row in rows:
        event = event_json(row)
        if as_json:
            click.echo(json.dumps({"tenant": row["tenant"], **event}, ensure_ascii=False))
        else:
            click.echo(_line(row["tenant"], event))


def _line(tenant: str, event: dict[str, Any]) -> str:
    detail = json.dumps(event["detail"], ensure_ascii=False) if event["detail"] else "-"
    fields = [event["recipient"], event["site"], event["campaign"]]
    recipient, site, campaign = (value or "-" for value in fields)
    return (
        f"{event['at'][:19]}Z {tenant:12} {event['kind']:12} {recipient} {site} {campaign} {detail}"
    )
