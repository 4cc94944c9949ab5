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
import json
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import click

from relay.cli.common import config_option, jsonable, load, run
from relay.cli.dkim import unsigned, unsigned_consequence
from relay.config.schema import Config, ListenerSection, split_host_port
from relay.delivery.shaping import site_limits
from relay.queue.database import Database
from relay.queue.errors import DATABASE_ERRORS
from relay.queue.status import StatusReader

QUEUE_STATES = ("due", "scheduled", "in-flight", "held")
"""What a queued delivery waits for, as `status_queue` names it."""
EMBEDDED_START = 60.0
"""Seconds allowed to start (or join) the embedded PostgreSQL, which is slower than a
connection to a running server."""

Row = dict[str, Any]


@dataclass(frozen=True)
class DatabaseHealth:
    answered: bool
    version: str = ""
    database: str = ""
    in_recovery: bool = False
    """A standby: it answers but takes no writes, so nothing can be queued."""
    latency_ms: float | None = None
    error: str = ""


@dataclass(frozen=True)
class ListenerHealth:
    name: str
    address: str
    kind: str
    """`starttls` or `implicit` (SMTP), or `http`."""
    ok: bool
    reply: str = ""
    """The greeting, or the HTTP status line."""
    latency_ms: float | None = None
    error: str = ""


@dataclass
class Snapshot:
    """What the database says, at one moment (`at`)."""

    at: datetime
    top: int
    """At most this many destination domains are listed."""
    queue: dict[str, Row]
    oldest: Row | None
    destinations: list[Row]
    held: list[Row]
    rates_since: datetime
    rates: list[Row]
    suspensions: list[Row]
    campaigns: list[Row]
    sites: list[Row]
    throttles: list[Row]


@dataclass
class Status:
    host: str
    """This relay host's name (`[relay] hostname`): the listeners probed are its own."""
    database: DatabaseHealth
    listeners: list[ListenerHealth] = field(default_factory=list)
    snapshot: Snapshot | None = None
    unsigned: list[str] = field(default_factory=list)
    """`TENANT: DOMAIN` for tenant domains that no active DKIM key signs for (P-DKIM)."""
    unsigned_consequence: str = ""

    @property
    def healthy(self) -> bool:
        return (
            self.database.answered
            and self.snapshot is not None
            and all(x.ok for x in self.listeners)
        )


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


# -- the screen ----------------------------------------------------------------------------


def age(seconds: float | None) -> str:
    """`45s`, `3m 12s`, `5h 02m`, `2d 04h`."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC" if value else "-"


def _ms(value: float | None) -> str:
    return f"{value:.1f} ms" if value is not None else "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """Aligned plain-text columns: numbers to the right, text to the left."""
    if not rows:
        return ["  none"]
    cells = [[str(c) for c in headers], *([_cell(c) for c in row] for row in rows)]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] in ("-", None) for row in rows)
        for i in range(len(headers))
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        parts = [
            c.rjust(w) if numeric[i] else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append(("  " + "  ".join(parts)).rstrip())
    return lines


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def render(status: Status) -> str:
    lines = _health(status)
    snap = status.snapshot
    if snap is None:
        lines += ["", "the queue and the traffic state need the database; nothing more to show"]
        return "\n".join(lines)
    lines[0] += f" at {snap.at:%Y-%m-%d %H:%M:%S} UTC"
    lines += ["", "queue"]
    lines += table(
        ("STATE", "DELIVERIES", "MESSAGES"),
        [(s.replace("-", " "), n["deliveries"], n["messages"]) for s, n in snap.queue.items()],
    )
    if snap.oldest:
        o = snap.oldest
        tries = f"{o['attempts']} attempt{'s' if o['attempts'] != 1 else ''}"
        lines.append(
            f"  oldest queued message: {age(o['age_seconds'])} old, {o['id']} of {o['tenant']} "
            f"to {o['recipient']}, {tries}, last reply: {o['last_reply'] or '-'}"
        )
    else:
        lines.append("  oldest queued message: none waiting")
    shown = f", the first {snap.top}" if len(snap.destinations) == snap.top else ""
    lines += ["", f"queued by destination domain and site (most first{shown})"]
    lines += table(
        ("DOMAIN", "SITE", "DUE", "SCHEDULED", "IN FLIGHT", "HELD", "OLDEST", "LAST REPLY"),
        [(d["domain"], d["site"] or "-", d["due"], d["scheduled"], d["in_flight"], d["held"],
          age(d["oldest_seconds"]), d["last_reply"] or "-") for d in snap.destinations],
    )  # fmt: skip
    lines += ["", "held deliveries (they wait on purpose)"]
    lines += table(
        ("TENANT", "HOLD", "DELIVERIES", "OLDEST"),
        [(h["tenant"], h["hold"], h["deliveries"], age(h["oldest_seconds"])) for h in snap.held],
    )
    lines += ["", f"rates since {_when(snap.rates_since)} (hourly buckets)"]
    lines += table(
        ("TENANT", "DELIVERED", "DEFERRED", "HARD BOUNCED", "SOFT BOUNCED", "COMPLAINED",
         "UNSUBSCRIBED", "COMPLAINT RATE"),
        [(r["tenant"], r["delivered"], r["deferred"], r["hard_bounced"], r["soft_bounced"],
          r["complained"], r["unsubscribed"], _percent(r["complaint_rate"]))
         for r in snap.rates],
    )  # fmt: skip
    lines += ["", "suspended tenants (relay tenant resume TENANT lifts one)"]
    lines += table(
        ("TENANT", "RULE", "SINCE", "BY", "REASON"),
        [(s["tenant"], s["rule"], f"{_when(s['since'])} ({age(s['age_seconds'])})",
          s["suspended_by"] or "relay", s["reason"]) for s in snap.suspensions],
    )  # fmt: skip
    lines += ["", "campaigns holding mail (relay campaign ls|show|release|decline)"]
    lines += table(
        ("TENANT", "CAMPAIGN", "STATE", "RECIPIENTS", "HELD", "STARTED", "WINDOW ENDS"),
        [(c["tenant"], c["campaign"], c["state"], c["recipients"], c["held"],
          f"{age(c['age_seconds'])} ago", _when(c["window_ends"])) for c in snap.campaigns],
    )  # fmt: skip
    lines += ["", "sites paused or throttled"]
    lines += table(
        ("SITE", "RATE/MIN", "CEILING", "PAUSED UNTIL", "FAILED CONNECTIONS"),
        [(s["site"], round(s["rate"], 1), s["ceiling"],
          _when(s["paused_until"]) if s["paused"] else "-", s["failures"])
         for s in snap.sites],
    )  # fmt: skip
    lines += ["", "tenants slowed toward a provider (P-COMPLAINT, P-BOUNCE)"]
    lines += table(
        ("TENANT", "PROVIDER", "PACE", "RULE", "REASON"),
        [(t["tenant"], t["provider"], round(t["factor"], 3), t["rule"], t["reason"])
         for t in snap.throttles],
    )  # fmt: skip
    return "\n".join(lines)


def _health(status: Status) -> list[str]:
    db = status.database
    if db.answered:
        standby = ", a standby: it takes no writes" if db.in_recovery else ""
        said = f"PostgreSQL {db.version} (database {db.database}{standby}), {_ms(db.latency_ms)}"
        if db.error:
            said += f"; the status queries failed: {db.error}"
    else:
        said = f"not answering: {db.error}"
    rows: list[tuple[str, str, str]] = [
        ("database", "ok" if db.answered and not db.error else "FAIL", said)
    ]
    for x in status.listeners:
        what = f"{x.address} {x.kind}: "
        what += f"{x.reply} ({_ms(x.latency_ms)})" if x.reply else f"not answering: {x.error}"
        rows.append((x.name, "ok" if x.ok else "FAIL", what))
    if status.unsigned:
        keyless = ", ".join(status.unsigned)
        rows.append(("dkim", "WARN", f"no active key for {keyless}: {status.unsigned_consequence}"))
    else:
        rows.append(("dkim", "ok", "every tenant domain has an active key"))
    width = max(len(name) for name, _, _ in rows)
    lines = [f"relay status of {status.host}", "", "health"]
    lines += [f"  {name.ljust(width)}  {state.ljust(4)}  {said}" for name, state, said in rows]
    return lines


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.2f}%"


def as_json(status: Status) -> str:
    document = {"healthy": status.healthy, **asdict(status)}
    return json.dumps(jsonable(document), indent=2)


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
