"""`relay queue ls|show|retry|delete`: look into the queue and act on it."""

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from relay.cli.common import config_option, jsonable, load, run, with_db
from relay.queue.admin import Change, QueueAdmin
from relay.queue.database import Pool


@click.group()
def queue() -> None:
    """Inspect and manage the queue."""


@queue.command("ls")
@config_option
@click.option("--state", type=click.Choice(["queued", "delivered", "bounced", "deleted"]))
@click.option("--tenant")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def queue_ls(
    config_path: Path, state: str | None, tenant: str | None, limit: int, as_json: bool
) -> None:
    """List deliveries (one row per recipient)."""
    config = load(config_path)
    rows = run(with_db(config, lambda p: QueueAdmin(p).deliveries(state, tenant, limit)))
    if as_json:
        click.echo(json.dumps([jsonable(dict(r)) for r in rows], indent=2))
        return
    click.echo(f"{'ID':>8} {'MESSAGE':36} {'TENANT':12} {'STATE':9} {'TRIES':>5}  RECIPIENT")
    for r in rows:
        click.echo(
            f"{r['id']:>8} {r['message_id']!s:36} {r['tenant']:12} {r['state']:9} "
            f"{r['attempts']:>5}  {r['recipient']}"
        )
        if r["last_reply"] and r["state"] == "queued":
            click.echo(f"{'':>8} last reply: {r['last_reply']}")


async def _resolve(admin: QueueAdmin, prefix: str) -> uuid.UUID:
    found = await admin.messages_starting(prefix)
    if len(found) != 1:
        raise click.ClickException(
            f"no message matches {prefix!r}" if not found else f"{prefix!r} is ambiguous"
        )
    return found[0]


@queue.command("show")
@config_option
@click.argument("message")
@click.option("--json", "as_json", is_flag=True)
def queue_show(config_path: Path, message: str, as_json: bool) -> None:
    """Show one message (id or unique prefix): envelope, deliveries and every attempt."""
    config = load(config_path)

    async def action(pool: Pool) -> dict[str, Any]:
        admin = QueueAdmin(pool)
        return await admin.message(await _resolve(admin, message))

    info = run(with_db(config, action))
    head = bytes(info.pop("head"))
    headers = head.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    if as_json:
        info["headers"] = headers
        click.echo(json.dumps(jsonable(info), indent=2))
        return
    click.echo(
        f"message   {info['id']}\ntenant    {info['tenant']}\nfrom      <{info['mail_from']}>"
    )
    click.echo(f"received  {info['received_at']} from {info['client_address']}")
    click.echo(f"size      {info['size']} bytes\nheader id {info['header_message_id']}")
    for d in info["deliveries"]:
        click.echo(f"  rcpt <{d['recipient']}> {d['state']} after {d['attempts']} attempt(s)")
    for p in info["policy"]:
        click.echo(f"  policy {p['rule']:14} {p['outcome']:8} {p['reason']}")
    for a in info["attempts"]:
        click.echo(f"  attempt {a['at']} {a['host'] or '-'} {a['outcome']}: {a['reply']}")
    if info["content_purged_at"]:
        click.echo(f"body purged at {info['content_purged_at']} (P-RETENTION)")
    else:
        click.echo("headers:\n" + headers)


def _admin_command(change: Change, verb: str) -> Callable[[Path, str], None]:
    def command(config_path: Path, message: str) -> None:
        config = load(config_path)

        async def action(pool: Pool) -> int:
            admin = QueueAdmin(pool)
            return await admin.change(change, await _resolve(admin, message))

        count = run(with_db(config, action))
        click.echo(f"{verb} {count} queued deliveries of {message}")

    return command


queue.command("retry", help="Try a message's queued deliveries now.")(
    click.argument("message")(config_option(_admin_command("retry", "rescheduled")))
)
queue.command("delete", help="Stop delivering a message (kept, marked deleted).")(
    click.argument("message")(config_option(_admin_command("delete", "deleted")))
)
