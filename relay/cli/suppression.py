"""`relay suppression add|rm|ls|import|export`: the P-SUPPRESS lists."""

import csv
import sys
from pathlib import Path
from typing import TextIO

import click

from relay.cli.common import config_option, load, run, with_db
from relay.feedback.privacy.unsubscribe import load_secret
from relay.queue.suppressions import SuppressionList, suppression_key


@click.group()
def suppression() -> None:
    """P-SUPPRESS: the addresses each tenant must not mail."""


_REASONS = click.Choice(["manual", "unsubscribe", "complaint", "hard-bounce", "abuse-report"])


@suppression.command("add")
@config_option
@click.argument("addresses", nargs=-1, required=True)
@click.option("--tenant", required=True)
@click.option("--reason", type=_REASONS, default="manual", show_default=True)
def suppression_add(
    config_path: Path, addresses: tuple[str, ...], tenant: str, reason: str
) -> None:
    """Suppress ADDRESSES for TENANT."""
    config = load(config_path)
    added = run(with_db(config, lambda p: SuppressionList(p).add(tenant, addresses, reason, "cli")))
    click.echo(f"added {added} of {len(addresses)} (the rest were already suppressed)")


@suppression.command("rm")
@config_option
@click.argument("address")
@click.option("--tenant", required=True)
def suppression_rm(config_path: Path, address: str, tenant: str) -> None:
    """Remove ADDRESS from TENANT's list (only when the person asked to be mailed again)."""
    config = load(config_path)
    secret = load_secret(config.policy.unsubscribe_secret_file)
    hashed = suppression_key(secret, address) if secret else None
    removed = run(with_db(config, lambda p: SuppressionList(p).remove(tenant, address, hashed)))
    if not removed:
        raise click.ClickException(f"{address} is not suppressed for {tenant}")
    click.echo(f"removed {address}")


@suppression.command("ls")
@config_option
@click.option("--tenant")
@click.option("--limit", default=1000, show_default=True)
def suppression_ls(config_path: Path, tenant: str | None, limit: int) -> None:
    """List suppressed addresses with reason, source and time."""
    config = load(config_path)
    rows = run(with_db(config, lambda p: SuppressionList(p).entries(tenant, limit)))
    for r in rows:
        click.echo(
            f"{r['tenant']:12} {r['address']:40} {r['reason']:12} {r['source'] or '-':10} "
            f"{r['created_at']:%Y-%m-%d %H:%M}"
        )


@suppression.command("import")
@config_option
@click.argument("csv_file", type=click.File("r", encoding="utf-8"))
@click.option("--tenant", required=True)
@click.option("--reason", type=_REASONS, default="manual", show_default=True)
def suppression_import(config_path: Path, csv_file: TextIO, tenant: str, reason: str) -> None:
    """Import a CSV whose first column is the address (a header row is skipped)."""
    from relay.mail.address import AddressError, parse_path

    good, refused = [], []
    for number, row in enumerate(csv.reader(csv_file), start=1):
        if not row or (number == 1 and "@" not in row[0]):
            continue
        try:
            good.append(parse_path(f"TO:<{row[0].strip()}>", "TO:").address)
        except AddressError as exc:
            refused.append(f"line {number}: {row[0]!r}: {exc}")
    config = load(config_path)
    added = run(with_db(config, lambda p: SuppressionList(p).add(tenant, good, reason, "import")))
    click.echo(f"imported {added} new, {len(good) - added} already suppressed")
    for line in refused:
        click.echo(f"refused {line}", err=True)


@suppression.command("export")
@config_option
@click.option("--tenant", required=True)
def suppression_export(config_path: Path, tenant: str) -> None:
    """Write TENANT's list as CSV (address, reason, source, created_at) to standard output."""
    config = load(config_path)
    rows = run(with_db(config, lambda p: SuppressionList(p).entries(tenant, 10_000_000)))
    out = csv.writer(sys.stdout)
    out.writerow(["address", "reason", "source", "created_at"])
    for r in rows:
        out.writerow([r["address"], r["reason"], r["source"], r["created_at"].isoformat()])
