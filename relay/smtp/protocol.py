"""The SMTP protocol for submission: aiosmtpd's session loop with stricter commands.

aiosmtpd runs the session (greeting, STARTTLS, AUTH framework, command dispatch); this
subclass replaces what a relay on the open internet cannot take as it is:
- MAIL and RCPT parse paths strictly (`relay.smtp.address`) and answer with enhanced codes;
- DATA is read in large pieces, ends only at CRLF.CRLF and refuses NUL and bare CR/LF
  (`relay.smtp.data`), bounded by a size limit and a total data timeout;
- EHLO advertises exactly what is implemented (RFC 1870 SIZE, RFC 2920 PIPELINING,
  RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 2034 ENHANCEDSTATUSCODES, RFC 3207 STARTTLS,
  RFC 4954 AUTH only under TLS);
- every reply gets an enhanced status code, too many errors close the session, and the
  connection limits (total and per client address) answer 421 before the greeting.
The relay's decisions live in the handler (`relay.smtp.handler`), not here.
"""

import asyncio
import collections
import logging
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Session, _AuthMechAttr, syntax

from relay.smtp import replies
from relay.smtp.address import AddressError, Path, parse_path
from relay.smtp.data import DataProblem, normalize_newlines, problem_in, unstuff

log = logging.getLogger(__name__)

_END_OF_LINE_DOT = b".\r\n"


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
    session_template: dict[str, Any] | None = None
    """The state aiosmtpd's constructor derives from the handler and the settings, made
    by the listener's first session and copied by the others (see RelaySMTP.__init__)."""


@dataclass
class ConnectionCounter:
    """Open sessions, in total and per client address, across all listeners of a process."""

    max_total: int
    max_per_client: int
    total: int = 0
    per_client: collections.Counter[str] = field(default_factory=collections.Counter)

    def acquire(self, client: str) -> str | None:
        """Take a slot, or return the 421 reply that refuses the connection."""
        if self.total >= self.max_total:
            return replies.TOO_MANY_CONNECTIONS
        if self.per_client[client] >= self.max_per_client:
            return replies.TOO_MANY_CONNECTIONS_FROM_CLIENT
        self.total += 1
        self.per_client[client] += 1
        return None

    def release(self, client: str) -> None:
        self.total -= 1
        self.per_client[client] -= 1
        if self.per_client[client] <= 0:
            del self.per_client[client]


class RelaySession(Session):
    """aiosmtpd's session plus who is submitting: set at AUTH or from a trusted network."""

    # aiosmtpd 1.4 still writes its deprecated `login_data` after every successful AUTH, and
    # that property logs a WARNING each time. The relay reads only `auth_data` (the tenant's
    # username); here the legacy slot is a plain attribute, so writing it logs nothing.
    login_data: Any = None

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.tenant: str | None = None
        self.client_ip: str = ""
        self.listener: str = ""
        self.implicit_tls: bool = False


class RelaySMTP(SMTP):
    """One SMTP session. Constructed by the listener for each connection."""

    # Big enough for DATA to be read in large pieces (see smtp_DATA); command lines are still
    # limited by command_size_limits below.
    line_length_limit = 1 << 16

    def __init__(self, handler: Any, options: ListenerOptions, **kwargs: Any) -> None:
        """aiosmtpd's constructor introspects the handler and this class on every
        connection (`inspect.getmembers`, `dir`, a log line): a third of a connection's
        setup in a profile of short sessions. Its result depends only on the listener, so
        the first session keeps it in `options.session_template` and later sessions copy it
        and bind the per-session parts (command methods, stream protocol) afresh."""
        template = options.session_template
        if template is None or template["event_handler"] is not handler:
            super().__init__(handler, **kwargs)
            options.session_template = {
                k: v for k, v in vars(self).items() if k not in _PER_SESSION
            } | {
                "_auth_names": {
                    m: (a.method.__name__, a.is_builtin) for m, a in self._auth_methods.items()
                }
            }
        else:
            self._copy_template(template, handler)
        self.options = options
        self.command_size_limits = collections.defaultdict(
            lambda: 512, {"MAIL": 1024, "RCPT": 1024}
        )
        self._errors = 0
        self._greeted = False
        self._refusal: str | None = None
        self._holds_slot = False
        self._client = ""

    def _copy_template(self, template: dict[str, Any], handler: Any) -> None:
        vars(self).update(template)
        del self._auth_names
        asyncio.StreamReaderProtocol.__init__(
            self,
            asyncio.StreamReader(loop=self.loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected,
            loop=self.loop,
        )
        self._timeout_handle = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._smtp_methods = {name: getattr(self, f"smtp_{name}") for name in _SMTP_COMMANDS}
        self._auth_methods = {
            mechanism: _AuthMechAttr(getattr(self if builtin else handler, name), builtin)
            for mechanism, (name, builtin) in template["_auth_names"].items()
        }

    def _create_session(self) -> Session:
        return RelaySession(self.loop)

    # -- connection limits -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self._original_transport is None and self.transport is None
        super().connection_made(transport)  # after STARTTLS this makes a new session
        session = self.session
        assert isinstance(session, RelaySession)
        if first:
            peer = transport.get_extra_info("peername")
            self._client = peer[0] if peer else ""
        session.client_ip = self._client
        session.listener = self.options.name
        session.implicit_tls = self.options.implicit_tls
        if not first:  # the TLS layer after STARTTLS: same connection, same slot
            return
        self._refusal = self.options.connections.acquire(self._client)
        if self._refusal is None:
            self._holds_slot = True
            self.event_handler.session_opened(self.options.name)

    def connection_lost(self, error: Exception | None) -> None:
        if self._holds_slot:
            self._holds_slot = False
            self.options.connections.release(self._client)
            self.event_handler.session_closed(self.options.name)
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        if self._refusal is not None:
            await SMTP.push(self, self._refusal)
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()

    # -- replies ---------------------------------------------------------------------------

    async def push(self, status: str | bytes) -> None:
        """Send a reply with an enhanced code; close the session after too many errors.

        The first reply is aiosmtpd's greeting, which RFC 2034 3 exempts (as it does the
        replies to HELO and EHLO, which bypass this method).
        """
        if isinstance(status, str) and not self._greeted:
            self._greeted = True
        elif isinstance(status, str):
            status = replies.with_enhanced_code(status)
            if status[:1] in "45" and not status.startswith("421"):
                self._errors += 1
        await super().push(status)
        if self._errors >= self.options.max_errors and self.transport is not None:
            self._errors = -(10**9)  # say it once
            await super().push(replies.TOO_MANY_ERRORS)
            self.transport.close()

    # -- commands --------------------------------------------------------------------------

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        """aiosmtpd's HELO, with the reply `250 SP Domain` (RFC 5321 4.1.1.1) sent as it is:
        RFC 2034 3 exempts it from enhanced codes, and one would stand in for the domain."""
        if not hostname:
            await self.push("501 5.5.4 Syntax: HELO hostname")
            return
        self._set_rset_state()
        assert self.session is not None
        self.session.extended_smtp = False
        self.session.host_name = hostname
        await SMTP.push(self, f"250 {self.hostname}")

    async def smtp_EHLO(self, hostname: str) -> None:
        if not hostname:
            await self.push("501 5.5.4 Syntax: EHLO hostname")
            return
        self._set_rset_state()
        assert self.session is not None
        self.session.extended_smtp = True
        self.session.host_name = hostname
        under_tls = self.options.implicit_tls or self._tls_protocol is not None
        lines = [
            self.hostname,
            f"SIZE {self.options.max_message_size}",
            "PIPELINING",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
        ]
        if self.tls_context is not None and self._tls_protocol is None:
            lines.append("STARTTLS")
        if under_tls:
            lines.append("AUTH " + " ".join(sorted(self._auth_methods)))
        # one write for the whole reply, not one system call per line
        reply = "\r\n".join(f"250-{line}" for line in lines[:-1])
        await SMTP.push(self, f"{reply}\r\n250 {lines[-1]}" if reply else f"250 {lines[-1]}")

    async def smtp_STARTTLS(self, arg: str) -> None:
        """RFC 3207 4: a client must not start TLS inside TLS; aiosmtpd would answer `220`
        and wrap the session a second time, so a session already under TLS (after STARTTLS
        or on the implicit-TLS listener) gets `503`."""
        if self._tls_protocol is not None or self.options.implicit_tls:
            await self.push(replies.TLS_ALREADY_ACTIVE)
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_MAIL(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        assert self.envelope is not None
        if self.envelope.mail_from is not None:
            await self.push(replies.BAD_SEQUENCE_NESTED_MAIL)
            return
        path = await self._parse(arg, "FROM:", replies.MAIL_SYNTAX, replies.BAD_SENDER)
        if path is None:
            return
        for name, value in path.params.items():
            if name == "BODY" and (value or "").upper() not in ("7BIT", "8BITMIME"):
                await self.push(replies.BAD_BODY)
                return
            if name == "SIZE" and not (value or "").isdigit():
                await self.push(replies.MAIL_SYNTAX)
                return
            if name == "SMTPUTF8" and value is not None:
                await self.push(replies.MAIL_SYNTAX)
                return
            if name not in ("BODY", "SIZE", "SMTPUTF8"):
                await self.push(replies.UNKNOWN_PARAMETER.format(param=name))
                return
        status = await self._call_handler_hook("MAIL", path)
        await self.push(status)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        assert self.envelope is not None
        if self.envelope.mail_from is None:
            await self.push(replies.BAD_SEQUENCE_NEED_MAIL)
            return
        path = await self._parse(arg, "TO:", replies.RCPT_SYNTAX, replies.BAD_RECIPIENT)
        if path is None:
            return
        if path.is_null:
            await self.push(replies.BAD_RECIPIENT)
            return
        if path.params:
            await self.push(replies.UNKNOWN_PARAMETER.format(param=next(iter(path.params))))
            return
        status = await self._call_handler_hook("RCPT", path)
        await self.push(status)

    async def _parse(self, arg: str | None, keyword: str, syntax: str, bad: str) -> Path | None:
        if arg is None or arg[: len(keyword)].upper() != keyword:
            await self.push(syntax)
            return None
        try:
            return parse_path(arg, keyword)
        except AddressError as exc:
            log.info("refused path %r: %s", arg[:200], exc)
            await self.push(bad)
            return None

    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        assert self.envelope is not None
        if arg:
            await self.push(replies.DATA_SYNTAX)
            return
        if not self.envelope.rcpt_tos:
            await self.push(replies.BAD_SEQUENCE_NEED_RCPT)
            return
        await self.push(replies.START_DATA)
        self._reset_timeout(self.options.data_timeout + 5)
        assert self.session is not None
        limit: int = self.event_handler.size_limit(self.session)
        try:
            async with asyncio.timeout(self.options.data_timeout):
                data, too_big = await self._read_data(limit)
        except TimeoutError:
            await SMTP.push(self, replies.DATA_TIMEOUT)
            assert self.transport is not None
            self.transport.close()
            return
        except asyncio.IncompleteReadError:
            return  # the client went away; eof_received ends the session
        self._reset_timeout()  # back to command_timeout for the next command
        status, problem = self._check_data(data, too_big, limit)
        if status is None:
            if problem is DataProblem.BARE_NEWLINE:  # left here only where normalising is on
                data = normalize_newlines(data)
            self.envelope.content = self.envelope.original_content = unstuff(data)
            status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        if status.startswith("250"):
            self._errors = 0  # like Postfix: the limit is on errors "without delivering mail"
        await self.push(status)

    async def _read_data(self, limit: int) -> tuple[bytes, bool]:
        """Read up to the end marker; return (data with its last CRLF, exceeded the limit).

        Reads in pieces of up to 64 KiB that end at `.\\r\\n`; a piece ends the data only
        when that dot starts a line (the two bytes before it are CRLF, the CRLF of the DATA
        command line counting for an empty message). What follows the end stays in the
        reader for the next pipelined command. Past the limit, data is read and dropped so
        the 552 comes after the client has finished (RFC 5321 4.2.5).
        """
        pieces: list[bytes | memoryview] = []
        size = 0
        before = b"\r\n"
        while True:
            try:
                piece = await self._reader.readuntil(_END_OF_LINE_DOT)
                found = True
            except asyncio.LimitOverrunError as exc:
                piece = await self._reader.read(exc.consumed)
                found = False
            # the last two octets before the dot, with no copy of the piece (64 KiB)
            if found and (before + piece[-5:-3])[-2:] == b"\r\n":
                pieces.append(memoryview(piece)[:-3])
                size += len(piece) - 3
                break
            before = (before + piece[-2:])[-2:]
            size += len(piece)
            if size <= limit:
                pieces.append(piece)
            else:
                pieces.clear()
        return b"".join(pieces), size > limit

    def _check_data(
        self, data: bytes, too_big: bool, limit: int
    ) -> tuple[str | None, DataProblem | None]:
        """The refusal, if any, and what is wrong with the data (RFC 5321 2.3.8, 4.1.1.4)."""
        if too_big:
            return replies.MESSAGE_TOO_BIG.format(limit=limit), None
        problem = problem_in(data)
        if problem is DataProblem.NUL:
            return replies.NUL_IN_DATA, problem
        if problem is DataProblem.BARE_NEWLINE and not self.options.normalize_newlines:
            return replies.BARE_NEWLINE_IN_DATA, problem
        return None, problem


_SMTP_COMMANDS = tuple(m.removeprefix("smtp_") for m in dir(RelaySMTP) if m.startswith("smtp_"))
_PER_SESSION = frozenset(
    {
        # asyncio.StreamReaderProtocol and its FlowControlMixin: made afresh per session
        "_loop", "_paused", "_drain_waiters", "_connection_lost", "_stream_reader_wr",
        "_source_traceback", "_strong_reader", "_reject_connection", "_stream_writer", "_task",
        "_transport", "_client_connected_cb", "_over_ssl", "_closed",
        # aiosmtpd's per-session state and the methods bound to the session object
        "_timeout_handle", "_tls_handshake_okay", "_tls_protocol", "_original_transport",
        "session", "envelope", "transport", "_handler_coroutine", "_smtp_methods",
        "_auth_methods",
    }
)  # fmt: skip
