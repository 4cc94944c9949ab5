"""What every `relay` subcommand shares: the --config option, loading, the event loop."""

import asyncio
import logging
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from relay.config.load import ConfigError, read_config
from relay.config.schema import Config
from relay.queue.database import Database, Pool

T = TypeVar("T")
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default="relay.toml",
    show_default=True,
    help="Configuration file.",
)


def run(coro: Awaitable[T]) -> T:
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - platforms without uvloop
        return asyncio.run(coro)  # type: ignore[arg-type]


def load(path: Path) -> Config:
    """The configuration for an admin's command, its warnings (old key names) on stderr
    as its errors are; exit 2 with the errors if the file cannot be used."""
    config, warnings = load_with_warnings(path)
    for warning in warnings:
        click.echo(warning, err=True)
    return config


def load_with_warnings(path: Path) -> tuple[Config, list[str]]:
    """The configuration and its warnings, for `relay serve` to log once logging is set up
    (at the level the file asks for); exit 2 with the errors if the file cannot be used."""
    try:
        return read_config(path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


class OneLineFormatter(logging.Formatter):
    """Every log record on one line, whatever its fields hold: a username, a HELO name or
    a header sent with CR, LF or other control characters in it cannot forge a line of its
    own (they are written escaped, as Python writes them in a string literal). A traceback
    keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _CONTROL.sub(_escape, super().formatMessage(record))


def _escape(match: re.Match[str]) -> str:
    return match.group(0).encode("unicode_escape").decode("ascii")


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # every pg_ctl command line


async def with_db(
    config: Config, action: Callable[[Pool], Awaitable[T]], *, migrate: bool = True
) -> T:
    """Run `action` with a pool on the configured database (migrated first, by default)."""
    database = await Database.open(config, run_migrations=migrate)
    try:
        return await action(database.pool)
    finally:
        await database.close()


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
