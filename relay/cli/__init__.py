"""The `relay` command: serve, check-config, hash-password, migrate and sink here; the
groups queue, suppression, consent, policy, domain, dkim, abuse, campaign, tenant and
events, and the commands status and erase, one module each."""

import getpass
import logging
import os
import signal
import sys
from pathlib import Path

import click

from relay.auth import hash_password
from relay.cli.abuse import abuse
from relay.cli.campaign import campaign
from relay.cli.common import (
    config_option,
    load,
    load_with_warnings,
    run,
    setup_logging,
    with_db,
)
from relay.cli.consent import consent
from relay.cli.dkim import dkim, unsigned, unsigned_consequence
from relay.cli.domain import domain
from relay.cli.erase import erase_command
from relay.cli.events import events
from relay.cli.policy import policy
from relay.cli.queue import queue
from relay.cli.status import status
from relay.cli.suppression import suppression
from relay.cli.tenant import tenant
from relay.config.load import log_warnings
from relay.config.schema import split_host_port
from relay.memory import return_large_blocks
from relay.queue.migrate import migrate_pool


@click.group()
def main() -> None:
    """A multi-tenant outbound SMTP relay with a PostgreSQL queue."""


@main.command()
@config_option
@click.option("--smtp-worker", "worker", type=click.IntRange(min=1), hidden=True)
def serve(config_path: Path, worker: int | None) -> None:
    """Run the relay until SIGTERM (SIGHUP reloads the configuration)."""
    return_large_blocks()
    if worker is not None:  # started by `relay serve` itself for `[relay] processes`
        serve_smtp_worker(config_path, worker)
        return
    config, warnings = load_with_warnings(config_path)
    setup_logging(config.relay.log_level)
    log_warnings(warnings)
    from relay.serve.relay import serve as serve_forever

    run(serve_forever(config_path, config))


def serve_smtp_worker(config_path: Path, index: int) -> None:
    """One SMTP worker process of `relay serve` (`relay.serve.processes`); not for admins."""
    from relay.serve.processes import PARENT_ENV, die_with_parent
    from relay.serve.relay import serve_smtp_worker as serve_worker

    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload before we are up must not kill us
    die_with_parent(int(os.environ.get(PARENT_ENV, os.getppid())))
    config, _ = load_with_warnings(config_path)  # the main process has logged the warnings
    setup_logging(config.relay.log_level)
    tagged = logging.Formatter(
        f"%(asctime)s %(levelname)s smtp-worker-{index} %(name)s: %(message)s"
    )
    for handler in logging.getLogger().handlers:
        handler.setFormatter(tagged)
    run(serve_worker(config_path, config, index))


@main.command("check-config")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False), default="relay.toml")
def check_config(path: Path) -> None:
    """Validate a configuration file without starting anything."""
    config = load(path)
    click.echo(
        f"{path}: OK ({len(config.tenants)} tenants, {len(config.listeners)} listeners, "
        f"{len(config.routes)} routes)"
    )
    missing = unsigned(config)
    if missing:
        more = f" and {len(missing) - 10} more (relay dkim ls)" if len(missing) > 10 else ""
        click.echo(f"tenant domains without an active DKIM key: {', '.join(missing[:10])}{more}")
        click.echo(f"  {unsigned_consequence(config)}")


@main.command("hash-password")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def hash_password_command(password_stdin: bool) -> None:
    """Print an argon2 hash for a tenant credential's `password_hash`."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise click.ClickException("the passwords differ")
    if not password:
        raise click.ClickException("empty password")
    click.echo(hash_password(password))


@main.command("migrate")
@config_option
def migrate_command(config_path: Path) -> None:
    """Apply pending schema migrations (serve does this at start too)."""
    config = load(config_path)

    applied = run(with_db(config, migrate_pool, migrate=False))
    click.echo("schema up to date" + (f" (applied {', '.join(applied)})" if applied else ""))


@main.command()
@click.option("--listen", default="127.0.0.1:2526", show_default=True, help="host:port")
@click.option(
    "--store", type=click.Path(path_type=Path, file_okay=False), help="Keep N.eml/N.json here."
)
@click.option("--quiet", is_flag=True, help="Do not print messages.")
@click.option("--reply", "script", multiple=True, help="Answer DATA with these replies first.")
def sink(listen: str, store: Path | None, quiet: bool, script: tuple[str, ...]) -> None:
    """Run a capture SMTP server that prints (and stores) every message it gets."""
    from relay.sink import SinkHandler, run_sink

    host, port = split_host_port(listen)
    handler = SinkHandler(store=store, echo=None if quiet else sys.stdout, script=list(script))
    try:
        run(run_sink(host, port, handler))
    except KeyboardInterrupt:
        pass


for group in (queue, suppression, consent, policy, domain, dkim, abuse, campaign, tenant, status):
    main.add_command(group)
main.add_command(events)
main.add_command(erase_command)
