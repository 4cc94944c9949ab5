"""Open the configured listeners on the running event loop: submission listeners with the
submission handler, `role = "feedback"` listeners with the feedback handler.

`starttls` listeners (RFC 3207, port 587) start in plaintext and offer STARTTLS, with AUTH
only after it; `implicit` listeners (RFC 8314, port 465) speak TLS from the first byte, so
AUTH is offered at once. aiosmtpd's own idea of "TLS" covers STARTTLS only, hence
`auth_require_tls=False` on implicit listeners, as its documentation advises.
"""

import asyncio
import ssl
from collections.abc import Callable, Mapping

from relay.config.schema import Config, ListenerSection, split_host_port
from relay.smtp import replies
from relay.smtp.budget import DataBudget
from relay.smtp.limits import ConnectionCounter, ListenerOptions
from relay.smtp.protocol import RelaySMTP


async def start_listeners(
    config: Config,
    handlers: Mapping[str, object],
    tls: ssl.SSLContext,
    *,
    reuse_port: bool = False,
) -> tuple[list[asyncio.Server], ConnectionCounter]:
    """Start every listener; the counter tells how many sessions are open (for shutdown).

    `reuse_port` sets SO_REUSEPORT on the submission listeners so that the relay's own
    processes (`[relay] processes`) can share their addresses, the kernel spreading new
    connections among them. It is off unless the relay runs several processes: without it,
    a second relay started by mistake on the same address fails with "address in use"
    instead of silently taking half of the connections.
    """
    counter = ConnectionCounter(config.smtp.max_connections, config.smtp.max_connections_per_client)
    budget = DataBudget(config.smtp.data_in_flight)  # one for the process, as the counter
    servers = []
    loop = asyncio.get_running_loop()
    for listener in config.listeners:
        factory = _session_factory(config, listener, handlers[listener.role], tls, counter, budget)
        host, port = split_host_port(listener.address)
        server = await loop.create_server(
            factory,
            host=host,
            port=port,
            # implicit TLS starts in the session, after it has taken a connection slot
            reuse_address=True,
            # Postfix's master listens with a backlog of its process limit; asyncio's
            # default of 100 overflowed under 200 clients reconnecting for each message,
            # and every connection the kernel drops there waits a second for its SYN or
            # ACK to be resent (bench/README.md). The kernel caps it at net.core.somaxconn.
            backlog=config.smtp.max_connections,
            reuse_port=reuse_port and listener.role == "submission",
        )
        servers.append(server)
    return servers, counter


def _session_factory(
    config: Config,
    listener: ListenerSection,
    handler: object,
    tls: ssl.SSLContext,
    counter: ConnectionCounter,
    budget: DataBudget,
) -> Callable[[], RelaySMTP]:
    """What makes one session of `listener`: its options, shared by its sessions, and the
    aiosmtpd settings of the relay."""
    implicit = listener.tls == "implicit"
    options = ListenerOptions(
        name=listener.name,
        implicit_tls=implicit,
        normalize_newlines=listener.bare_newlines == "normalize",
        max_message_size=config.smtp.max_message_size,
        data_timeout=config.smtp.data_timeout,
        max_errors=config.smtp.max_errors,
        connections=counter,
        data_budget=budget,
        max_sessions=listener.session_cap(config.smtp),
        implicit_tls_context=tls if implicit else None,
        tls_handshake_timeout=config.smtp.tls_handshake_timeout,
    )
    loop = asyncio.get_running_loop()

    def factory() -> RelaySMTP:
        return RelaySMTP(
            handler,
            options,
            hostname=config.relay.hostname,
            ident=replies.BANNER_IDENT,
            data_size_limit=config.smtp.max_message_size,
            enable_SMTPUTF8=True,
            tls_context=None if implicit else tls,
            require_starttls=False,
            timeout=config.smtp.command_timeout,
            auth_require_tls=not implicit,
            auth_required=False,
            loop=loop,
        )

    return factory
