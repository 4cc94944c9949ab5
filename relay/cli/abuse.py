"""`relay abuse ls|show`: the reports that reached the abuse desk (P-ABUSE-DESK).

Reports forwarded to `[feedback] abuse_address` and sent through the HTTP form are kept as
they came, with what the relay made of them: the tenant and message they were matched to,
the reporter it suppressed, or why they matched nothing.
"""

from pathlib import Path

import click

from relay.cli.common import config_option, load, run, with_db
from relay.queue.reports import ReportInbox


@click.group()
def abuse() -> None:
    """Abuse reports: list and read them."""


@abuse.command("ls")
@config_option
@click.option("-n", "limit", default=50, show_default=True, help="How many, newest first.")
def abuse_ls(config_path: Path, limit: int) -> None:
    """The latest abuse reports, one per line."""
    config = load(config_path)
    rows = run(with_db(config, lambda pool: ReportInbox(pool).abuse_reports(limit)))
    for r in rows:
        click.echo(
            f"{r['id']:>6} {r['received_at']:%Y-%m-%d %H:%M} {r['channel']:10} {r['state']:10} "
            f"{r['tenant'] or '-':12} {r['reporter'] or '-'} {r['problem'] or ''}".rstrip()
        )


@abuse.command("show")
@config_option
@click.argument("report_id", type=int)
def abuse_show(config_path: Path, report_id: int) -> None:
    """One report: what was matched and suppressed, then the report as received."""
    config = load(config_path)
    row = run(with_db(config, lambda pool: ReportInbox(pool).report(report_id)))
    if row is None:
        raise click.ClickException(f"no report {report_id}")
    for key in ("id", "received_at", "channel", "state", "kind", "tenant", "message_id",
                "reporter", "problem", "mail_from", "recipients", "client_address"):  # fmt: skip
        click.echo(f"{key:15} {row[key]}")
    click.echo("")
    click.echo(bytes(row["raw"]).decode("utf-8", "replace"))
