"""`relay erase ADDRESS`: P-ERASURE, on a data subject's request.

Deletes everything the relay holds about the address (`relay.queue.erasure`), keeps its
suppressions as keyed hashes, and prints what went, per table. Messages with a delivery to
the address go whole, their other recipients' queued copies too (those hold the address in
their headers); the output says how many.
"""

from pathlib import Path

import click

from relay.cli.common import config_option, load, run, with_db
from relay.feedback.privacy.unsubscribe import SECRET_ENV, load_secret
from relay.mail.address import AddressError, parse_path
from relay.queue.database import Pool
from relay.queue.erasure import Erasure, erase


@click.command("erase")
@config_option
@click.argument("address")
def erase_command(config_path: Path, address: str) -> None:
    """Delete everything held about ADDRESS (P-ERASURE); it stays suppressed as a keyed hash."""
    try:
        mailbox = parse_path(f"TO:<{address.strip()}>", "TO:").address
    except AddressError as exc:
        raise click.ClickException(f"{address!r} is not an email address: {exc}") from exc
    if not mailbox:
        raise click.ClickException("give the address to erase")
    config = load(config_path)
    try:
        secret = load_secret(config.policy.unsubscribe_secret_file)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"[policy] unsubscribe_secret_file: {exc}") from exc
    if secret is None:
        raise click.ClickException(
            "erasure keeps suppressions as keyed hashes and needs the relay's secret: set "
            f"[policy] unsubscribe_secret_file or {SECRET_ENV}"
        )

    async def action(pool: Pool) -> Erasure:
        return await erase(pool, mailbox, secret)

    result = run(with_db(config, action))
    click.echo(f"erased {mailbox}:")
    tenants = ", ".join(result.hashed_for)
    notes = {
        "messages": "with all their deliveries: queued copies to other recipients hold the "
        "address in their headers",
        "suppressions": f"kept as a keyed hash for {tenants}",
    }
    for table, count in result.deleted.items():
        note = f"  ({notes[table]})" if table in notes and count else ""
        click.echo(f"  {table:17} {count:>6}{note}")
    click.echo(f"  {'bodies purged':17} {result.bodies_purged:>6}  (finished mail to others "
               "that named the address)")  # fmt: skip
    if result.webhook_errors:
        click.echo(f"  {'webhook errors':17} {result.webhook_errors:>6}")
    if result.queued_mentions:
        click.echo(
            f"note: {result.queued_mentions} message(s) still queued for other recipients name "
            "the address in their text; they were left to be delivered, and their bodies are "
            "purged after delivery (P-RETENTION)",
            err=True,
        )
