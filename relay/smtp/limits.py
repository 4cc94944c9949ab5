"""What one listener's sessions share (`ListenerOptions`) and the count of open sessions
that caps them, in total, per listener and per client address, across all listeners of a
process (`ConnectionCounter`). A session takes its slot when the TCP connection is accepted,
before any TLS handshake, and gives it back when it ends. Within a session: the longest
command lines (`command_limits`) and the count of the client's errors (`ErrorCount`)."""

import collections
import ssl
from dataclasses import dataclass, field
from typing import Any

from relay.smtp import replies
from relay.smtp.budget import DataBudget


@dataclass
class ListenerOptions:
    """What one listener's sessions share: its limits and its bare-newline policy."""

    name: str
    implicit_tls: bool
    normalize_newlines: bool
    max_message_size: int
    data_timeout: float
    max_errors: int
    connections: "ConnectionCounter"
    data_budget: DataBudget
    max_sessions: int = 0
    """Open sessions this listener may have (0: only the process's total limits)."""
    implicit_tls_context: ssl.SSLContext | None = None
    """On an implicit-TLS listener, the context the session starts TLS with once it holds
    a connection slot (so handshakes in progress count toward the caps)."""
    tls_handshake_timeout: float = 10.0
    session_template: dict[str, Any] | None = None
    """The state aiosmtpd's constructor derives from the handler and the settings, made
    by the listener's first session and copied by the others (see RelaySMTP.__init__)."""


@dataclass
class ConnectionCounter:
    """Open sessions, in total, per listener and per client address, across all listeners
    of a process."""

    max_total: int
    max_per_client: int
    total: int = 0
    per_client: collections.Counter[str] = field(default_factory=collections.Counter)
    per_listener: collections.Counter[str] = field(default_factory=collections.Counter)

    def acquire(self, client: str, listener: str = "", listener_cap: int = 0) -> str | None:
        """Take a slot, or return the 421 reply that refuses the connection."""
        if self.total >= self.max_total:
            return replies.TOO_MANY_CONNECTIONS
        if listener_cap and self.per_listener[listener] >= listener_cap:
            return replies.TOO_MANY_CONNECTIONS
        if self.per_client[client] >= self.max_per_client:
            return replies.TOO_MANY_CONNECTIONS_FROM_CLIENT
        self.total += 1
        self.per_client[client] += 1
        self.per_listener[listener] += 1
        return None

    def release(self, client: str, listener: str = "") -> None:
        self.total -= 1
        self.per_client[client] -= 1
        if self.per_client[client] <= 0:
            del self.per_client[client]
        self.per_listener[listener] -= 1


COMMAND_LINE = 512
"""Octets in a command line with its CRLF (RFC 5321 4.5.3.1.4)."""
OVERSHOOT_LIMIT = 1000
"""Recipients past the limit answered `452 4.5.3` without counting as errors (Postfix's
`smtpd_recipient_overshoot_limit` default); past these they count again."""


def command_limits(*, auth_offered: bool) -> dict[str, int]:
    """The longest MAIL and RCPT lines the extensions advertised in EHLO allow, without
    their CRLF (as aiosmtpd measures them): 512 with it (RFC 5321 4.5.3.1.4), MAIL plus 26
    for SIZE= (RFC 1870 3), 10 for SMTPUTF8 (RFC 6531 3.4) and, where AUTH is offered, 500
    for AUTH= (RFC 4954 5). One octet more is answered `500 5.5.2`."""
    mail = COMMAND_LINE + 26 + 10 + (500 if auth_offered else 0)
    return {"MAIL": mail - 2, "RCPT": COMMAND_LINE - 2}


class ErrorCount:
    """The client's errors in one session; at `limit` the session is closed (`421`).

    A recipient past the tenant's limit is no error of the client's: RFC 5321 4.5.3.1.8 has
    it send the rest in another transaction, so `452 4.5.3` must not close the session and
    lose the recipients accepted so far. Like Postfix, only the first `OVERSHOOT_LIMIT`
    are spared."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.errors = 0
        self.overshoot = 0
        self.said = False

    def count(self, reply: str) -> None:
        """Count a reply that refuses (4xx, 5xx), except `421` (the end) and overshoot."""
        if reply[:1] not in "45" or reply.startswith("421"):
            return
        if reply.startswith("452 4.5.3"):
            self.overshoot += 1
            if self.overshoot <= OVERSHOOT_LIMIT:
                return
        self.errors += 1

    def reached(self) -> bool:
        """True once, when the limit is reached: the caller says so and closes."""
        if self.said or self.errors < self.limit:
            return False
        self.said = True
        return True

    def clear(self) -> None:
        self.errors = 0
