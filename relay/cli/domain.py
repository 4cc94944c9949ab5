"""`relay domain add|verify|ls`: P-DNSAUTH and P-WHOIS checks of a sending domain, with what
to publish. The tenant's domains are listed in `relay.toml`; `add` starts a listed domain's
onboarding (its first DKIM key, the first check), `verify` checks it again."""

import json
import sys
from pathlib import Path

import click

from relay.cli.common import config_option, load, run, with_db
from relay.config.tenants import owning_domain
from relay.dkim.keys import DomainKeys
from relay.mail.address import AddressError, to_a_label
from relay.policy.domain_status import verify_and_record
from relay.policy.domains import Finding, passed
from relay.queue.database import Pool
from relay.queue.domains import DomainRecords


@click.group()
def domain() -> None:
    """Sending domains: who registered them (RDAP) and what they publish (SPF, DKIM, DMARC)."""


def _a_label(name: str) -> str:
    try:
        return to_a_label(name)
    except AddressError as exc:
        raise click.ClickException(f"{name!r}: {exc}") from exc


@domain.command("add")
@config_option
@click.argument("name")
@click.option("--tenant", required=True, help="The tenant (in relay.toml) that sends from NAME.")
def domain_add(config_path: Path, name: str, tenant: str) -> None:
    """Start sending from NAME: make its DKIM key if it has none, check it, and print the
    records to publish. NAME must be listed in the tenant's `domains` in relay.toml."""
    config = load(config_path)
    name = _a_label(name)
    owner = next((t for t in config.tenants if t.name == tenant), None)
    if owner is None:
        raise click.ClickException(f"no tenant named {tenant!r} in {config_path}")
    if owning_domain(owner, name) != name:
        raise click.ClickException(
            f"{name} is not in the domains of tenant {tenant}: add it to `domains` of its "
            f"[[tenants]] entry in {config_path}, then run this again"
        )
    keys = DomainKeys(Path(config.relay.data_dir) / "dkim", name)
    if not any(st.active or st.next for st in keys.state.values()):
        selector, _ = keys.add_next("rsa")
        click.echo(f"made DKIM key {selector} for {name} ({keys.key_path(selector)})")
    _verify_and_report(config_path, name)


@domain.command("verify")
@config_option
@click.argument("name")
def domain_verify(config_path: Path, name: str) -> None:
    """Check NAME's registrant and DNS now, store the result, print what to publish."""
    _verify_and_report(config_path, _a_label(name))


def _verify_and_report(config_path: Path, name: str) -> None:
    config = load(config_path)
    if not any(owning_domain(t, name) == name for t in config.tenants):
        raise click.ClickException(f"{name} is not a domain of any tenant in {config_path}")

    async def action(pool: Pool) -> list[Finding]:
        return await verify_and_record(DomainRecords(pool), config, name)

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
    rows = run(with_db(config, lambda pool: DomainRecords(pool).all()))
    for r in rows:
        failing = [f["check"] for f in json.loads(r["findings"]) if f["status"] == "fail"]
        state = "verified" if r["passed"] else f"failing: {', '.join(failing)}"
        click.echo(f"{r['domain']:30} {r['tenant']:12} {r['checked_at']:%Y-%m-%d %H:%M} {state}")
