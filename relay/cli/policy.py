"""`relay policy explain` (every verdict for one message) and `relay policy eval` (a
labelled corpus scored), both offline."""

import sys
from pathlib import Path

import click

from relay.cli.common import config_option, load, run


@click.group()
def policy() -> None:
    """The sending policy: explain its verdicts, score it on a labelled corpus."""


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
    assumed = "given with --mail-from"
    if mail_from is None:
        from email.utils import parseaddr

        mail_from = parseaddr(str(ctx.message.get("From", "")))[1]
        assumed = "the From address; another with --mail-from"
    ctx.mail_from = mail_from

    async def run_all() -> list[Verdict]:
        mail = await pipeline.run("mail", ctx, stop_at_refusal=False)
        return mail + await pipeline.run("data", ctx, stop_at_refusal=False)

    verdicts = run(run_all())
    click.echo(f"pipeline order: {' -> '.join(pipeline.order())}")
    click.echo(f"message: {message} ({'bulk' if ctx.is_bulk else 'transactional'})")
    click.echo(f"envelope sender: <{mail_from}> ({assumed})")
    for v in verdicts:
        click.echo(f"  {v.rule:20} {v.outcome.value:8} {v.reason}")
    refused = refusal(verdicts)
    click.echo("result: " + (refused.reply() if refused else "accepted"))
    sys.exit(1 if refused else 0)


@policy.command("eval")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--all", "show_all", is_flag=True, help="List every message, not only misjudged.")
def policy_eval(directory: Path, show_all: bool) -> None:
    """Judge every message of a labelled corpus (DIRECTORY, with corpus.toml files) offline;
    print the confusion matrix, precision and recall per rule and category, and each
    misjudged message. Exits 1 when any message is misjudged."""
    from relay.cli.policy_eval import report
    from relay.policy.corpus import CorpusError, Judged, judge, load, score
    from relay.policy.pipeline import Pipeline

    try:
        cases = load(directory)
    except CorpusError as exc:
        raise click.ClickException(str(exc)) from exc
    pipeline = Pipeline()

    async def judge_all() -> list[Judged]:
        return [await judge(case, pipeline) for case in cases]

    scores = score(run(judge_all()))
    click.echo(report(scores, directory, show_all))
    sys.exit(0 if scores.right == len(scores.judged) else 1)
