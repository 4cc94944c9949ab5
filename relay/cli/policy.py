"""`relay policy explain`: every verdict of the pipeline for one message, offline."""

import sys
from pathlib import Path

import click

from relay.cli.common import config_option, load, run


@click.group()
def policy() -> None:
    """The sending policy: explain its verdicts."""


@policy.command("explain")
@config_option
@click.argument("message", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--tenant", "tenant_name", required=True, help="Tenant whose rules apply.")
@click.option("--mail-from", help="Envelope sender (default: the From address).")
def policy_explain(
    config_path: Path, message: Path, tenant_name: str, mail_from: str | None
) -> None:
    """Run every check on MESSAGE (an .eml file) offline and print each verdict."""
    from relay.policy.context import PolicyContext
    from relay.policy.pipeline import Pipeline, refusal
    from relay.policy.verdict import Verdict

    config = load(config_path)
    tenant = next((t for t in config.tenants if t.name == tenant_name), None)
    if tenant is None:
        raise click.ClickException(f"no tenant {tenant_name!r} in {config_path}")
    raw = message.read_bytes()
    pipeline = Pipeline()
    ctx = PolicyContext(tenant, "", [], raw, service_contacts=tuple(config.policy.service_contacts))
    if mail_from is None:
        from email.utils import parseaddr

        mail_from = parseaddr(str(ctx.message.get("From", "")))[1]
    ctx.mail_from = mail_from

    async def run_all() -> list[Verdict]:
        mail = await pipeline.run("mail", ctx, stop_at_refusal=False)
        return mail + await pipeline.run("data", ctx, stop_at_refusal=False)

    verdicts = run(run_all())
    click.echo(f"pipeline order: {' -> '.join(pipeline.order())}")
    click.echo(f"message: {message} ({'bulk' if ctx.is_bulk else 'transactional'})")
    for v in verdicts:
        click.echo(f"  {v.rule:20} {v.outcome.value:8} {v.reason}")
    refused = refusal(verdicts)
    click.echo("result: " + (refused.reply() if refused else "accepted"))
    sys.exit(1 if refused else 0)
