"""What one listener's sessions share (`ListenerOptions`) and the count of open sessions
that caps them, in total, per listener and per client address, across all listeners of a
process (`ConnectionCounter`). A session takes its slot when the TCP connection is accepted,
before any TLS handshake, and gives it back when it ends."""

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
