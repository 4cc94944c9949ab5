"""`relay status [--json]`: one screen that tells an admin whether this relay host is well.

- Health: the database answered (its version and the round trip of one query), and each
  listener of this host's configuration: an SMTP listener must greet with `220` (over TLS
  for an implicit-TLS one), the HTTP listener's `/healthz` must answer `200`.
- The queue, which every relay host on the database shares: queued deliveries by what they
  wait for (due, scheduled, in flight, held), per destination domain and site with the
  newest reply, the deliveries that suspensions and canaries hold, and the oldest message
  still waiting.
- What shapes the traffic: the last hour's rates per tenant, open suspensions, campaigns
  holding mail, sites paused or throttled below their ceiling, tenants' reduced paces.

The database sections are read in one read-only REPEATABLE READ transaction, so their
counts describe the same moment. The command exits 1 when the database or a listener did
not answer, so scripts and monitoring checks can use it as is.
"""

import asyncio
import contextlib
import ssl
import sys
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import click

from relay.cli.common import config_option, load, run
from relay.cli.dkim import unsigned, unsigned_consequence
from relay.cli.status_view import (
    QUEUE_STATES,
    DatabaseHealth,
    ListenerHealth,
    Row,
    Snapshot,
    Status,
    as_json,
    render,
)
from relay.config.schema import Config, ListenerSection, split_host_port
from relay.delivery.shaping import site_limits
from relay.queue.database import Database
from relay.queue.errors import DATABASE_ERRORS
from relay.queue.status import StatusReader

"""What a queued delivery waits for, as `status_queue` names it."""
EMBEDDED_START = 60.0
"""Seconds allowed to start (or join) the embedded PostgreSQL, which is slower than a
connection to a running server."""

# -- gathering -----------------------------------------------------------------------------


async def gather(config: Config, wait: float, top: int) -> Status:
    """Probe the listeners while the database is read."""
    async with asyncio.TaskGroup() as group:
        smtp = [group.create_task(probe_smtp(x, wait)) for x in config.listeners]
        http = group.create_task(probe_http(config.http.address, wait))
        database = group.create_task(read_database(config, wait, top))
    health, snapshot = database.result()
    listeners = [*(t.result() for t in smtp), http.result()]
    return Status(
        config.relay.hostname,
        health,
        listeners,
        snapshot,
        unsigned(config),
        unsigned_consequence(config),
    )


async def read_database(
    config: Config, wait: float, top: int
) -> tuple[DatabaseHealth, Snapshot | None]:
    try:
        async with asyncio.timeout(wait if config.queue.dsn else EMBEDDED_START):
            database = await Database.open(config, run_migrations=False)
    except DATABASE_ERRORS as exc:
        return DatabaseHealth(False, error=_error(exc)), None
    reader = StatusReader(database.pool)
    try:
        try:
            async with asyncio.timeout(wait):
                started = time.perf_counter()
                info = await reader.server()
                latency = (time.perf_counter() - started) * 1000
        except DATABASE_ERRORS as exc:
            return DatabaseHealth(False, error=_error(exc)), None
        health = DatabaseHealth(
            True, info["version"], info["database"], info["in_recovery"], latency
        )
        try:
            return health, await read_snapshot(reader, config, top)
        except DATABASE_ERRORS as exc:  # e.g. a database the relay never migrated
            return replace(health, error=_error(exc)), None
    finally:
        await database.close()


async def read_snapshot(reader: StatusReader, config: Config, top: int) -> Snapshot:
    raw = await reader.snapshot(top)
    counted = {r["state"]: r for r in raw["queue"]}
    empty = {"deliveries": 0, "messages": 0}
    sites = [_with_ceiling(r, config) for r in raw["sites"]]
    return Snapshot(
        at=raw["now"],
        top=top,
        waiting=raw["waiting"],
        sample_percent=raw["sample_percent"],
        queue={
            s: {k: counted.get(s, empty)[k] for k in ("deliveries", "messages")}
            for s in QUEUE_STATES
        },
        oldest=raw["oldest"],
        destinations=raw["destinations"],
        held=raw["held"],
        rates_since=raw["rates_since"],
        rates=[_with_complaint_rate(r) for r in raw["rates"]],
        suspensions=raw["suspensions"],
        campaigns=raw["campaigns"],
        sites=[s for s in sites if s["paused"] or s["throttled"]],
        throttles=raw["throttles"],
    )


def _with_complaint_rate(row: Row) -> Row:
    """P-COMPLAINT's measure: complaints over delivered mail (None before any delivery)."""
    delivered = row["delivered"]
    return {**row, "complaint_rate": row["complained"] / delivered if delivered else None}


def _with_ceiling(row: Row, config: Config) -> Row:
    """The site's ceiling comes from the configuration; below it, the site is throttled
    (AIMD after "slow down" deferrals). A site without a ceiling is never throttled."""
    ceiling = site_limits(config, row["site"]).messages_per_minute
    throttled = bool(ceiling) and row["rate"] < ceiling
    return {**row, "ceiling": ceiling or None, "throttled": throttled}


async def probe_smtp(listener: ListenerSection, wait: float) -> ListenerHealth:
    """Connect as a client would and read the greeting (RFC 5321 3.1), then QUIT."""
    host, port = split_host_port(listener.address)
    tls = _unverified_tls() if listener.tls == "implicit" else None
    started = time.perf_counter()
    greeting, latency = "", None
    try:
        async with asyncio.timeout(wait):
            reader, writer = await asyncio.open_connection(_local(host), port, ssl=tls)
            try:
                greeting = await _read_reply(reader)
                latency = (time.perf_counter() - started) * 1000
            finally:
                await _goodbye(reader, writer)
    except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
        if not greeting:
            return ListenerHealth(
                listener.name, listener.address, listener.tls, False, error=_error(exc)
            )
    ok = greeting.startswith("220 ")  # 421 or 554: it answered, but takes no mail
    return ListenerHealth(listener.name, listener.address, listener.tls, ok, greeting, latency)


async def _goodbye(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """QUIT (RFC 5321 4.1.1.10) and close; a listener that handles this badly still greeted,
    so nothing here may fail the probe or hold it up."""
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(1):
            writer.write(b"QUIT\r\n")
            await writer.drain()
            await reader.readline()
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(1):
            await writer.wait_closed()


async def probe_http(address: str, wait: float) -> ListenerHealth:
    """`/healthz` answers 200 only when this relay process reaches its database."""
    host, port = split_host_port(address)
    local = _local(host)
    url = f"http://{f'[{local}]' if ':' in local else local}:{port}/healthz"
    started = time.perf_counter()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=wait)) as session,
            session.get(url) as response,
        ):
            await response.read()
            reply = f"{response.status} {response.reason or ''}".strip()
            ok = response.status == 200
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return ListenerHealth("http", address, "http", False, error=_error(exc))
    latency = (time.perf_counter() - started) * 1000
    return ListenerHealth("http", address, "http", ok, reply, latency)


async def _read_reply(reader: asyncio.StreamReader) -> str:
    """The first line of a (possibly multiline) SMTP reply."""
    first = ""
    while True:
        raw = await reader.readline()
        if not raw:
            raise ConnectionError("closed the connection without a greeting")
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        first = first or line
        if len(line) < 4 or line[3] != "-":
            return first


def _local(host: str) -> str:
    """Where to reach a listener bound to every address: the loopback address."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def _unverified_tls() -> ssl.SSLContext:
    """The probe asks whether the listener greets, not whether its certificate is valid
    (a self-signed one is normal on a fresh install)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__


@click.command("status")
@config_option
@click.option("--json", "json_output", is_flag=True, help="One JSON document instead.")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for each probe.")
@click.option("--top", default=20, show_default=True, help="Destination domains shown.")
def status(config_path: Path, json_output: bool, timeout: float, top: int) -> None:
    """Health, queue and traffic state of this relay host; exits 1 if something does not
    answer."""
    config = load(config_path)
    result = run(gather(config, timeout, top))
    click.echo(as_json(result) if json_output else render(result))
    sys.exit(0 if result.healthy else 1)
