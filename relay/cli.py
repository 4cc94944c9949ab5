"""The `relay` command: serve, check-config, hash-password, migrate, queue, sink."""

import asyncio
import csv
import getpass
import json
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import asyncpg
import click

from relay.config.load import ConfigError, load_config
from relay.config.schema import Config, split_host_port
from relay.queue.database import Database
from relay.queue.migrate import migrate
from relay.queue.sql import QUERIES
from relay.smtp.auth import hash_password

if TYPE_CHECKING:
    from relay.dkim.keys import DomainKeys

T = TypeVar("T")
_CONFIG = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default="relay.toml",
    show_default=True,
    help="Configuration file.",
)


def _run(coro: Awaitable[T]) -> T:
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - platforms without uvloop
        return asyncio.run(coro)  # type: ignore[arg-type]


def _load(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # every pg_ctl command line


@click.group()
def main() -> None:
    """A multi-tenant outbound SMTP relay with a PostgreSQL queue."""


@main.command()
@_CONFIG
def serve(config_path: Path) -> None:
    """Run the relay until SIGTERM (SIGHUP reloads the configuration)."""
    config = _load(config_path)
    _setup_logging(config.relay.log_level)
    from relay.app import serve as serve_forever

    _run(serve_forever(config_path, config))


@main.command("check-config")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False), default="relay.toml")
def check_config(path: Path) -> None:
    """Validate a configuration file without starting anything."""
    config = _load(path)
    click.echo(
        f"{path}: OK ({len(config.tenants)} tenants, {len(config.listeners)} listeners, "
        f"{len(config.routes)} routes)"
    )


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


async def _with_db(config: Config, action: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    database = await Database.open(config)
    try:
        return await action(database.pool)
    finally:
        await database.close()


@main.command("migrate")
@_CONFIG
def migrate_command(config_path: Path) -> None:
    """Apply pending schema migrations (serve does this at start too)."""
    config = _load(config_path)

    async def action(pool: asyncpg.Pool) -> list[str]:
        async with pool.acquire() as conn:
            return await migrate(conn)

    applied = _run(_with_db(config, action))
    click.echo("schema up to date" + (f" (applied {', '.join(applied)})" if applied else ""))


@main.group()
def queue() -> None:
    """Inspect and manage the queue."""


@queue.command("ls")
@_CONFIG
@click.option("--state", type=click.Choice(["queued", "delivered", "bounced", "deleted"]))
@click.option("--tenant")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def queue_ls(
    config_path: Path, state: str | None, tenant: str | None, limit: int, as_json: bool
) -> None:
    """List deliveries (one row per recipient)."""
    config = _load(config_path)
    rows = _run(
        _with_db(config, lambda p: p.fetch(QUERIES["list_deliveries"], state, tenant, limit))
    )
    if as_json:
        click.echo(json.dumps([_jsonable(dict(r)) for r in rows], indent=2))
        return
    click.echo(f"{'ID':>8} {'MESSAGE':36} {'TENANT':12} {'STATE':9} {'TRIES':>5}  RECIPIENT")
    for r in rows:
        click.echo(
            f"{r['id']:>8} {r['message_id']!s:36} {r['tenant']:12} {r['state']:9} "
            f"{r['attempts']:>5}  {r['recipient']}"
        )
        if r["last_reply"] and r["state"] == "queued":
            click.echo(f"{'':>8} last reply: {r['last_reply']}")


async def _resolve(pool: asyncpg.Pool, prefix: str) -> uuid.UUID:
    rows = await pool.fetch(QUERIES["find_messages"], prefix.lower())
    if len(rows) != 1:
        raise click.ClickException(
            f"no message matches {prefix!r}" if not rows else f"{prefix!r} is ambiguous"
        )
    return rows[0]["id"]


@queue.command("show")
@_CONFIG
@click.argument("message")
@click.option("--json", "as_json", is_flag=True)
def queue_show(config_path: Path, message: str, as_json: bool) -> None:
    """Show one message (id or unique prefix): envelope, deliveries and every attempt."""
    config = _load(config_path)

    async def action(pool: asyncpg.Pool) -> dict[str, Any]:
        mid = await _resolve(pool, message)
        msg = dict(await pool.fetchrow(QUERIES["show_message"], mid))
        msg["deliveries"] = [dict(r) for r in await pool.fetch(QUERIES["show_deliveries"], mid)]
        msg["attempts"] = [dict(r) for r in await pool.fetch(QUERIES["show_attempts"], mid)]
        msg["policy"] = [dict(r) for r in await pool.fetch(QUERIES["show_policy_results"], mid)]
        return msg

    info = _run(_with_db(config, action))
    head = bytes(info.pop("head"))
    headers = head.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    if as_json:
        info["headers"] = headers
        click.echo(json.dumps(_jsonable(info), indent=2))
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
    click.echo("headers:\n" + headers)


def _admin_command(query: str, verb: str) -> Callable[[Path, str], None]:
    def command(config_path: Path, message: str) -> None:
        config = _load(config_path)

        async def action(pool: asyncpg.Pool) -> int:
            mid = await _resolve(pool, message)
            async with pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(QUERIES[query], mid)
                await conn.execute(QUERIES["notify_queue"])
            return len(rows)

        count = _run(_with_db(config, action))
        click.echo(f"{verb} {count} queued deliveries of {message}")

    return command


queue.command("retry", help="Try a message's queued deliveries now.")(
    click.argument("message")(_CONFIG(_admin_command("retry_message", "rescheduled")))
)
queue.command("delete", help="Stop delivering a message (kept, marked deleted).")(
    click.argument("message")(_CONFIG(_admin_command("delete_message", "deleted")))
)


@main.group()
def suppression() -> None:
    """P-SUPPRESS: the addresses each tenant must not mail."""


_REASONS = click.Choice(["manual", "unsubscribe", "complaint", "hard-bounce", "abuse-report"])


@suppression.command("add")
@_CONFIG
@click.argument("addresses", nargs=-1, required=True)
@click.option("--tenant", required=True)
@click.option("--reason", type=_REASONS, default="manual", show_default=True)
def suppression_add(
    config_path: Path, addresses: tuple[str, ...], tenant: str, reason: str
) -> None:
    """Suppress ADDRESSES for TENANT."""
    config = _load(config_path)
    query = QUERIES["suppression_add"]
    rows = _run(_with_db(config, lambda p: p.fetch(query, tenant, list(addresses), reason, "cli")))
    click.echo(f"added {len(rows)} of {len(addresses)} (the rest were already suppressed)")


@suppression.command("rm")
@_CONFIG
@click.argument("address")
@click.option("--tenant", required=True)
def suppression_rm(config_path: Path, address: str, tenant: str) -> None:
    """Remove ADDRESS from TENANT's list (only when the person asked to be mailed again)."""
    config = _load(config_path)
    rows = _run(_with_db(config, lambda p: p.fetch(QUERIES["suppression_remove"], tenant, address)))
    if not rows:
        raise click.ClickException(f"{address} is not suppressed for {tenant}")
    click.echo(f"removed {address}")


@suppression.command("ls")
@_CONFIG
@click.option("--tenant")
@click.option("--limit", default=1000, show_default=True)
def suppression_ls(config_path: Path, tenant: str | None, limit: int) -> None:
    """List suppressed addresses with reason, source and time."""
    config = _load(config_path)
    rows = _run(_with_db(config, lambda p: p.fetch(QUERIES["suppression_list"], tenant, limit)))
    for r in rows:
        click.echo(
            f"{r['tenant']:12} {r['address']:40} {r['reason']:12} {r['source'] or '-':10} "
            f"{r['created_at']:%Y-%m-%d %H:%M}"
        )


@suppression.command("import")
@_CONFIG
@click.argument("csv_file", type=click.File("r", encoding="utf-8"))
@click.option("--tenant", required=True)
@click.option("--reason", type=_REASONS, default="manual", show_default=True)
def suppression_import(config_path: Path, csv_file: TextIO, tenant: str, reason: str) -> None:
    """Import a CSV whose first column is the address (a header row is skipped)."""
    from relay.smtp.address import AddressError, parse_path

    good, refused = [], []
    for number, row in enumerate(csv.reader(csv_file), start=1):
        if not row or (number == 1 and "@" not in row[0]):
            continue
        try:
            good.append(parse_path(f"TO:<{row[0].strip()}>", "TO:").address)
        except AddressError as exc:
            refused.append(f"line {number}: {row[0]!r}: {exc}")
    config = _load(config_path)
    query = QUERIES["suppression_add"]
    rows = _run(_with_db(config, lambda p: p.fetch(query, tenant, good, reason, "import")))
    click.echo(f"imported {len(rows)} new, {len(good) - len(rows)} already suppressed")
    for line in refused:
        click.echo(f"refused {line}", err=True)


@suppression.command("export")
@_CONFIG
@click.option("--tenant", required=True)
def suppression_export(config_path: Path, tenant: str) -> None:
    """Write TENANT's list as CSV (address, reason, source, created_at) to standard output."""
    config = _load(config_path)
    query = QUERIES["suppression_list"]
    rows = _run(_with_db(config, lambda p: p.fetch(query, tenant, 10_000_000)))
    out = csv.writer(sys.stdout)
    out.writerow(["address", "reason", "source", "created_at"])
    for r in rows:
        out.writerow([r["address"], r["reason"], r["source"], r["created_at"].isoformat()])


@main.group()
def policy() -> None:
    """The sending policy: explain its verdicts."""


@policy.command("explain")
@_CONFIG
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

    config = _load(config_path)
    tenant = next((t for t in config.tenants if t.name == tenant_name), None)
    if tenant is None:
        raise click.ClickException(f"no tenant {tenant_name!r} in {config_path}")
    raw = message.read_bytes()
    pipeline = Pipeline()
    ctx = PolicyContext(tenant, "", [], raw)
    if mail_from is None:
        from email.utils import parseaddr

        mail_from = parseaddr(str(ctx.message.get("From", "")))[1]
    ctx.mail_from = mail_from

    async def run_all() -> list[Verdict]:
        mail = await pipeline.run("mail", ctx, stop_at_refusal=False)
        return mail + await pipeline.run("data", ctx, stop_at_refusal=False)

    verdicts = _run(run_all())
    click.echo(f"pipeline order: {' -> '.join(pipeline.order())}")
    click.echo(f"message: {message} ({'bulk' if ctx.is_bulk else 'transactional'})")
    for v in verdicts:
        click.echo(f"  {v.rule:14} {v.outcome.value:8} {v.reason}")
    refused = refusal(verdicts)
    click.echo("result: " + (refused.reply() if refused else "accepted"))
    sys.exit(1 if refused else 0)


@main.group()
def dkim() -> None:
    """DKIM keys: generate, publish, rotate."""


def _domain_keys(config: Config, domain: str) -> "DomainKeys":
    from relay.dkim.keys import DomainKeys
    from relay.smtp.address import to_a_label

    return DomainKeys(Path(config.relay.data_dir) / "dkim", to_a_label(domain))


def _txt_record(domain: str, selector: str, record: str) -> str:
    """Zone-file form, split into strings of at most 255 octets (RFC 1035 3.3.14)."""
    chunks = " ".join(f'"{record[i : i + 255]}"' for i in range(0, len(record), 255))
    return f"{selector}._domainkey.{domain}. IN TXT ( {chunks} )"


@dkim.command("keygen")
@_CONFIG
@click.argument("domain")
@click.option("--selector", help="Default: ALGORITHM + year and month, e.g. rsa202611.")
@click.option(
    "--algorithm", type=click.Choice(["rsa", "ed25519"]), default="rsa", show_default=True
)
def dkim_keygen(config_path: Path, domain: str, selector: str | None, algorithm: str) -> None:
    """Make the domain's next key (mode 0600) and print the TXT record to publish."""
    from relay.dkim.keys import dns_record

    keys = _domain_keys(_load(config_path), domain)
    try:
        selector, key = keys.add_next(algorithm, selector)  # type: ignore[arg-type]
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {keys.key_path(selector)}; publish this record, then run:")
    click.echo(f"  relay dkim rotate {keys.domain}\n")
    click.echo(_txt_record(keys.domain, selector, dns_record(key)))


@dkim.command("rotate")
@_CONFIG
@click.argument("domain")
def dkim_rotate(config_path: Path, domain: str) -> None:
    """Promote the next key(s) to active once their DNS records are published."""
    from relay.dkim.keys import dns_record
    from relay.dkim.publish import is_published

    config = _load(config_path)
    keys = _domain_keys(config, domain)
    pending = [(alg, st.next) for alg, st in keys.state.items() if st.next]
    if not pending:
        raise click.ClickException(f"{keys.domain} has no next key: run relay dkim keygen first")
    failed = False
    for algorithm, selector in pending:
        assert selector is not None
        key = keys.load_key(selector)
        if not _run(is_published(keys.domain, selector, key, config.delivery.nameservers)):
            failed = True
            click.echo(f"{algorithm}: {selector} is not published yet; publish:", err=True)
            click.echo("  " + _txt_record(keys.domain, selector, dns_record(key)), err=True)
            continue
        new, old = keys.promote(algorithm)  # type: ignore[arg-type]
        click.echo(f"{algorithm}: {new} now signs for {keys.domain}")
        if old:
            click.echo(
                f"{algorithm}: {old} retired; keep its DNS record published for at least "
                "a week so mail signed before now still verifies"
            )
    if failed:
        sys.exit(1)


@dkim.command("ls")
@_CONFIG
def dkim_ls(config_path: Path) -> None:
    """List every domain's active, next and retired selectors."""
    from relay.dkim.keys import DomainKeys

    root = Path(_load(config_path).relay.data_dir) / "dkim"
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        for algorithm, st in DomainKeys(root, directory.name).state.items():
            retired = ", ".join(str(r["selector"]) for r in st.retired) or "-"
            click.echo(
                f"{directory.name:30} {algorithm:8} active={st.active or '-'} "
                f"next={st.next or '-'} retired={retired}"
            )


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
        _run(run_sink(host, port, handler))
    except KeyboardInterrupt:
        pass


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
