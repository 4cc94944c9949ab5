"""`relay campaign ls|show|release|decline`: campaigns held under P-CANARY, and the admin's
word on them (relay.feedback.reputation.canary).

A campaign is a tenant's Feedback-ID, else its List-Id, as the message carried it (quote
it on the command line: `relay campaign show acme '<spring.acme.example>'`).
"""

import getpass
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from relay.cli.common import config_option, jsonable, load, run, with_db
from relay.feedback.reputation import canary
from relay.queue.canaries import CanaryStore
from relay.queue.database import Pool


@click.group()
def campaign() -> None:
    """Campaigns sent in canary mode (P-CANARY): list, show, release, decline."""


def _admin() -> str:
    try:
        return f"admin:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a container, say)
        return "admin"


def _when(value: datetime | None) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z" if value is not None else "-"


@campaign.command("ls")
@config_option
@click.option("--tenant", help="Only this tenant's campaigns.")
@click.option("--state", type=click.Choice(canary.STATES))
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def campaign_ls(
    config_path: Path, tenant: str | None, state: str | None, limit: int, as_json: bool
) -> None:
    """List campaigns, newest first."""
    config = load(config_path)
    rows = run(with_db(config, lambda p: CanaryStore(p).campaigns(tenant, state, limit)))
    if as_json:
        click.echo(json.dumps([jsonable(dict(r)) for r in rows], indent=2))
        return
    click.echo(
        f"{'TENANT':12} {'STATE':10} {'RECIPIENTS':>10} {'CANARY':>6} {'HELD':>7} "
        f"{'WINDOW ENDS':20}  CAMPAIGN"
    )
    for r in rows:
        click.echo(
            f"{r['tenant']:12} {r['state']:10} {r['recipients']:>10} "
            f"{r['canary_size'] if r['canary_size'] is not None else '-':>6} {r['held']:>7} "
            f"{_when(r['window_ends']):20}  {r['campaign']}"
        )


@campaign.command("show")
@config_option
@click.argument("tenant")
@click.argument("name", metavar="CAMPAIGN")
@click.option("--json", "as_json", is_flag=True)
def campaign_show(config_path: Path, tenant: str, name: str, as_json: bool) -> None:
    """Show one campaign: state, counts, its rates since it started, the window."""
    config = load(config_path)

    async def action(pool: Pool) -> dict[str, Any]:
        store = CanaryStore(pool)
        row = await store.campaign(tenant, name)
        if row is None:
            raise click.ClickException(f"tenant {tenant} has no campaign {name!r}")
        info = dict(row)
        holds = [canary.PENDING + name, canary.REST + name]
        info["held_now"] = await store.count_held(tenant, name, holds)
        info["rates"] = (await canary.rates_of(store, row)).as_dict()
        return info

    info = run(with_db(config, action))
    if as_json:
        click.echo(json.dumps(jsonable(info), indent=2))
        return
    rates = info["rates"]
    delivered, finished = rates["delivered"], rates["delivered"] + rates["hard_bounced"]
    decided = info["decided_at"]

    def share(count: int, base: int) -> str:
        return f"{count} ({count / base:.2%})" if base else str(count)

    lines = [
        ("campaign", info["campaign"]),
        ("tenant", info["tenant"]),
        ("state", info["state"]),
        ("started", _when(info["started_at"])),
        ("recipients", info["recipients"]),
        ("canary", info["canary_size"] if info["canary_size"] is not None else "-"),
        ("held", info["held_now"]),
        ("window ends", _when(info["window_ends"])),
        ("decided", f"{_when(decided)} by {info['decided_by']}" if decided else "-"),
        ("reason", info["reason"] or "-"),
        ("delivered", delivered),
        ("deferred", rates["deferred"]),
        ("hard bounced", share(rates["hard_bounced"], finished)),
        ("soft bounced", rates["soft_bounced"]),
        ("complained", share(rates["complained"], delivered)),
        ("unsubscribed", share(rates["unsubscribed"], delivered)),
    ]
    for label, value in lines:
        click.echo(f"{label:13} {value}")


@campaign.command("release")
@config_option
@click.argument("tenant")
@click.argument("name", metavar="CAMPAIGN")
def campaign_release(config_path: Path, tenant: str, name: str) -> None:
    """Send the rest of a held campaign now."""
    config = load(config_path)
    try:
        count = run(with_db(config, lambda p: canary.release(p, tenant, name, _admin())))
    except canary.CampaignError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"released {count} held deliveries of {name} ({tenant})")


@campaign.command("decline")
@config_option
@click.argument("tenant")
@click.argument("name", metavar="CAMPAIGN")
@click.option("--reason", help="Why, for the record and the tenant's events.")
def campaign_decline(config_path: Path, tenant: str, name: str, reason: str | None) -> None:
    """Never send the rest of a held campaign: its held deliveries end as deleted, each
    with a canary-declined event the tenant sees."""
    config = load(config_path)
    try:
        count = run(with_db(config, lambda p: canary.decline(p, tenant, name, _admin(), reason)))
    except canary.CampaignError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"declined {count} held deliveries of {name} ({tenant})")
