"""`relay domain verify|ls`: P-DNSAUTH checks of a sending domain, with what to publish."""

import json
import sys
from pathlib import Path

import asyncpg
import click

from relay.cli.common import config_option, load, run, with_db
from relay.config.tenants import owning_domain
from relay.policy.domain_status import verify_and_record
from relay.policy.domains import Finding, passed
from relay.queue.sql import QUERIES
from relay.smtp.address import AddressError, to_a_label


@click.group()
def domain() -> None:
    """Sending domains: verify what they publish (SPF, DKIM, DMARC)."""


@domain.command("verify")
@config_option
@click.argument("name")
def domain_verify(config_path: Path, name: str) -> None:
    """Check NAME's DNS now, store the result, and print what to publish if it fails."""
    config = load(config_path)
    try:
        name = to_a_label(name)
    except AddressError as exc:
        raise click.ClickException(f"{name!r}: {exc}") from exc
    if not any(owning_domain(t, name) == name for t in config.tenants):
        raise click.ClickException(f"{name} is not a domain of any tenant in {config_path}")

    async def action(pool: asyncpg.Pool) -> list[Finding]:
        return await verify_and_record(pool, config, name)

    findings = run(with_db(config, action))
    for f in findings:
        click.echo(f"{f.status.upper():5} {f.check:6} {f.detail}")
        if f.status != "pass" and f.publish:
            click.echo(f"      publish: {f.publish}")
    ok = passed(findings)
    click.echo(f"{name}: {'verified, it may send' if ok else 'NOT verified, it may not send'}")
    sys.exit(0 if ok else 1)


@domain.command("ls")
@config_option
def domain_ls(config_path: Path) -> None:
    """Every recorded domain with its last verification."""
    config = load(config_path)
    rows = run(with_db(config, lambda pool: pool.fetch(QUERIES["domain_list"])))
    for r in rows:
        failing = [f["check"] for f in json.loads(r["findings"]) if f["status"] == "fail"]
        state = "verified" if r["passed"] else f"failing: {', '.join(failing)}"
        click.echo(f"{r['domain']:30} {r['tenant']:12} {r['checked_at']:%Y-%m-%d %H:%M} {state}")
