"""`relay tenant status|resume|suspend`: a tenant's standing under P-COMPLAINT and P-BOUNCE.

`status` shows the rates over the window (in all and per site), the pace factor toward
each site, open suspensions with their reason, and the deliveries they hold. `resume` is
the admin's decision that lifts a suspension: the held bulk deliveries go out (their queue
lifetime extended by the time they waited) and the tenant's rates count afresh. `suspend`
suspends a tenant's bulk sending by hand (P-SUSPEND), held the same way.
"""

import getpass
import json
from pathlib import Path
from typing import Any

import click

from relay.cli.common import config_option, jsonable, load, run, with_db
from relay.config.schema import ReputationSection
from relay.feedback.reputation.judge import Counts, duration, measures, percent
from relay.feedback.reputation.tenant_standing import Standing, resume, standing, suspend
from relay.queue.database import Pool


@click.group()
def tenant() -> None:
    """P-COMPLAINT and P-BOUNCE: tenants' rates, throttles and bulk suspensions."""


def _admin() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return "admin"


_by_option = click.option(
    "--by", default=_admin, show_default="your login name", help="Who decides (recorded)."
)


@tenant.command("status")
@config_option
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True)
def tenant_status(config_path: Path, name: str | None, as_json: bool) -> None:
    """Show the standing of tenant NAME (default: every configured tenant)."""
    config = load(config_path)
    names = [name] if name else [t.name for t in config.tenants]

    async def action(pool: Pool) -> list[Standing]:
        return [await standing(pool, n, config.reputation) for n in names]

    standings = run(with_db(config, action))
    if as_json:
        click.echo(json.dumps([_as_dict(s) for s in standings], indent=2))
        return
    for s in standings:
        click.echo(_describe(s, config.reputation))


@tenant.command("resume")
@config_option
@click.argument("name")
@_by_option
def tenant_resume(config_path: Path, name: str, by: str) -> None:
    """Lift the suspension of NAME's bulk sending and release its held deliveries."""
    config = load(config_path)
    resumed = run(with_db(config, lambda pool: resume(pool, name, by)))
    if not resumed.suspensions and not resumed.released:
        raise click.ClickException(f"tenant {name}'s bulk sending is not suspended")
    for s in resumed.suspensions:
        click.echo(f"resumed {name} ({s.rule} since {s.since:%Y-%m-%d %H:%M %Z}: {s.reason})")
    click.echo(f"released {resumed.released} held deliveries of {name}")


@tenant.command("suspend")
@config_option
@click.argument("name")
@click.option("--reason", required=True, help="Why, as the tenant's refusals will say.")
@_by_option
def tenant_suspend(config_path: Path, name: str, reason: str, by: str) -> None:
    """Suspend NAME's bulk sending by hand (P-SUSPEND); transactional mail flows."""
    config = load(config_path)
    if name not in {t.name for t in config.tenants}:
        raise click.ClickException(f"no tenant {name!r} in {config_path}")
    opened, held = run(with_db(config, lambda pool: suspend(pool, name, reason, by)))
    if not opened:
        click.echo(f"{name}'s bulk sending was already suspended by an admin")
    click.echo(f"suspended {name}'s bulk sending; {held} queued bulk deliveries held")


def _rates(counts: Counts, settings: ReputationSection) -> str:
    """`delivered 21, complained 1 (4.76%, above limit), hard-bounced 0 (0.00%)`."""
    judged = {m.rule: m for m in measures(counts, settings)}
    parts = [f"delivered {counts.delivered}"]
    for rule, verb, count in (
        ("P-COMPLAINT", "complained", counts.complained),
        ("P-BOUNCE", "hard-bounced", counts.hard_bounced),
    ):
        m = judged.get(rule)
        if m is None:
            parts.append(f"{verb} {count}")
            continue
        level = ", above limit" if m.above_limit else ", above warning" if m.above_warning else ""
        parts.append(f"{verb} {count} ({percent(m.rate)}{level})")
    return ", ".join(parts) + ("" if judged else " (too few to judge)")


def _describe(s: Standing, settings: ReputationSection) -> str:
    lines = []
    if s.suspensions:
        lines.append(f"{s.tenant}: bulk sending SUSPENDED")
        for x in s.suspensions:
            who = f" by {x.suspended_by}" if x.suspended_by else ""
            lines.append(f"  {x.rule} since {x.since:%Y-%m-%d %H:%M %Z}{who}: {x.reason}")
        lines.append("  an admin lifts it with: relay tenant resume " + s.tenant)
    else:
        lines.append(f"{s.tenant}: bulk sending active")
    for hold, count in sorted(s.held.items()):
        lines.append(f"  held: {count} queued bulk deliveries ({hold})")
    window = duration(settings.window)
    if s.counted_since:
        window += f", counted since the resume at {s.counted_since:%Y-%m-%d %H:%M %Z}"
    lines.append(f"  over {window}:")
    lines.append(f"    all sites: {_rates(s.total, settings)}")
    levels = (
        f"complaints warn {percent(settings.complaint_warn, exact=True)}, "
        f"limit {percent(settings.complaint_limit, exact=True)}; hard bounces warn "
        f"{percent(settings.bounce_warn, exact=True)}, "
        f"limit {percent(settings.bounce_limit, exact=True)}; "
        f"judged from {settings.min_volume} deliveries"
    )
    lines.append(f"    levels: {levels}")
    for site in sorted(s.sites.keys() | s.factors.keys()):
        counts = s.sites.get(site, Counts())
        pace = s.factors.get(site, 1.0)
        lines.append(f"    {site or '(unknown site)'}: {_rates(counts, settings)}; pace {pace:g}")
    return "\n".join(lines)


def _as_dict(s: Standing) -> dict[str, Any]:
    return jsonable(
        {
            "tenant": s.tenant,
            "suspended": [vars(x) for x in s.suspensions],
            "held": s.held,
            "counted_since": s.counted_since,
            "total": vars(s.total),
            "sites": {
                site: {**vars(c), "pace": s.factors.get(site, 1.0)} for site, c in s.sites.items()
            },
            "paces": s.factors,
            "history": [dict(r) for r in s.history],
        }
    )
