"""What `relay status` shows, and how: the health, queue and traffic figures it gathers
(`Status`), drawn as a screen of plain tables or written as JSON."""

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from relay.cli.common import jsonable

QUEUE_STATES = ("due", "scheduled", "in-flight", "held")

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
    waiting: int
    """Deliveries waiting (held or not), from the counts PostgreSQL keeps."""
    sample_percent: float | None
    """The share of the deliveries table the queue's sections were estimated from, past
    relay.queue.status.COUNTED_UP_TO waiting; None when they were counted."""
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
    lines += _queue(snap)
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
    lines += ["", "tenants slowed toward a site (P-COMPLAINT, P-BOUNCE)"]
    lines += table(
        ("TENANT", "SITE", "PACE", "RULE", "REASON"),
        [(t["tenant"], t["site"], round(t["factor"], 3), t["rule"], t["reason"])
         for t in snap.throttles],
    )  # fmt: skip
    return "\n".join(lines)


def _queue(snap: Snapshot) -> list[str]:
    """The queue's sections: by state, the oldest message, by destination, the holds."""
    lines = ["", "queue"]
    if snap.sample_percent is not None:
        lines = ["", f"queue: {snap.waiting} deliveries waiting; the figures below are "
                 f"estimated from a sample of {snap.sample_percent:.2g}% of the table"]  # fmt: skip
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
    return lines


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
