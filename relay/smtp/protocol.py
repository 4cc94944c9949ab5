"""The SMTP protocol for submission: aiosmtpd's session loop with stricter commands.

aiosmtpd runs the session (greeting, STARTTLS, AUTH framework, command dispatch); this
subclass replaces what a relay on the open internet cannot take as it is:
- MAIL and RCPT parse paths strictly (`relay.mail.address`) and answer with enhanced codes;
- DATA is read in large pieces, ends only at CRLF.CRLF and refuses NUL and bare CR/LF
  (`relay.mail.wire`), bounded by a size limit and a total data timeout;
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
import ssl
from asyncio import sslproto
from typing import Any, cast

from aiosmtpd.smtp import SMTP, Session, TLSSetupException, _AuthMechAttr, syntax

from relay import memory
from relay.mail.address import AddressError, Path, parse_path
from relay.mail.wire import LARGE_MESSAGE, DataProblem, DataScan, normalize_newlines, unstuff
from relay.smtp import replies
from relay.smtp.budget import Held
from relay.smtp.data_phase import read_data
from relay.smtp.limits import COMMAND_LINE, ErrorCount, ListenerOptions, command_limits
from relay.smtp.session import RelaySession

log = logging.getLogger(__name__)


class RelaySMTP(SMTP):
    """One SMTP session. Constructed by the listener for each connection."""

    # Big enough for DATA to be read in large pieces (see smtp_DATA); command lines are still
    # limited by command_size_limits below.
    line_length_limit = 1 << 16
    # RFC 5321 4.5.3.1.4: a command line is at most 512 octets with its CRLF. aiosmtpd
    # measures the line without its CRLF, hence 510 here; EHLO raises MAIL's limit by what
    # the extensions it advertises add to that command (`_command_limits`).
    command_size_limit = COMMAND_LINE - 2

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
        self.command_size_limits = collections.defaultdict(lambda: self.command_size_limit)
        self._errors = ErrorCount(options.max_errors)
        self._greeted = False
        self._refusal: str | None = None
        self._holds_slot = False
        self._client = ""
        self._tls_start: asyncio.Task[None] | None = None

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
        context = self.options.implicit_tls_context
        if context is not None and self._tls_start is None:  # TCP accepted, no TLS yet
            self._take_slot(transport)
            if self._refusal is not None:
                transport.close()  # nothing can be said before TLS; no handshake is spent
                return
            self._start_implicit_tls(cast(asyncio.Transport, transport), context)
            return
        first = self._original_transport is None and self.transport is None
        super().connection_made(transport)  # after STARTTLS this makes a new session
        session = self.session
        assert isinstance(session, RelaySession)
        if first and context is None:
            self._take_slot(transport)
        session.client_ip = self._client
        session.listener = self.options.name
        session.implicit_tls = self.options.implicit_tls

    def _take_slot(self, transport: asyncio.BaseTransport) -> None:
        """Count the connection, or set the 421 that refuses it (RFC 5321 3.8)."""
        peer = transport.get_extra_info("peername")
        self._client = peer[0] if peer else ""
        self._refusal = self.options.connections.acquire(
            self._client, self.options.name, self.options.max_sessions
        )
        if self._refusal is None:
            self._holds_slot = True
            self.event_handler.session_opened(self.options.name)

    def _release_slot(self) -> None:
        if self._holds_slot:
            self._holds_slot = False
            self.options.connections.release(self._client, self.options.name)
            self.event_handler.session_closed(self.options.name)

    def _start_implicit_tls(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        """RFC 8314 3.3: TLS from the first byte. The TLS layer goes in at once, as
        `loop.start_tls` would but before any byte can reach the session (uvloop hands over
        what it has read already, the ClientHello among it); the handshake is bounded by
        `[smtp] tls_handshake_timeout`, and the session starts once it is done."""
        done = self.loop.create_future()
        layer = sslproto.SSLProtocol(
            self.loop, self, context, done, server_side=True,
            ssl_handshake_timeout=self.options.tls_handshake_timeout,
            call_connection_made=False,
        )  # fmt: skip
        raw.set_protocol(layer)
        layer.connection_made(raw)
        self._tls_start = self.loop.create_task(self._after_handshake(raw, layer, done))

    async def _after_handshake(
        self, raw: asyncio.Transport, layer: sslproto.SSLProtocol, done: asyncio.Future[None]
    ) -> None:
        """Start the session on the secured transport, or give the slot back when the
        handshake fails or times out."""
        try:
            await done
        except (OSError, ssl.SSLError, ConnectionError, TimeoutError) as exc:
            log.info("implicit TLS with %s failed: %s", self._client, exc)
            raw.close()
            self._release_slot()
            return
        self.connection_made(layer._app_transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._release_slot()
        if self.session is None:  # implicit TLS whose handshake never finished
            if self._tls_start is not None:
                self._tls_start.cancel()
            return
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
        elif isinstance(status, str) and status.startswith("502 5.5.1 Too many unrecognized"):
            status = replies.TOO_MANY_UNKNOWN_COMMANDS  # aiosmtpd closes: 421 (RFC 5321 3.8)
        elif isinstance(status, str):
            status = replies.with_enhanced_code(status)
            self._errors.count(status)
        await super().push(status)
        if self._errors.reached() and self.transport is not None:
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
        self.command_size_limits.clear()
        self.command_size_limits.update(command_limits(auth_offered=under_tls))
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
        or on the implicit-TLS listener) gets `503`. A handshake that fails after `220`
        (the client hung up, or spoke plaintext) ends the session quietly: it is the
        client's doing, not an internal error."""
        if self._tls_protocol is not None or self.options.implicit_tls:
            await self.push(replies.TLS_ALREADY_ACTIVE)
            return
        try:
            await super().smtp_STARTTLS(arg)
        except TLSSetupException as exc:
            log.info("STARTTLS with %s failed: %r", self._client, exc.__cause__)
            if self._original_transport is not None:
                self._original_transport.close()

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
            if name == "SIZE" and not self.options.data_budget.fits(int(value or 0)):
                await self.push(replies.DATA_BUDGET_FULL)  # RFC 1870 6.1
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
        budget = self.options.data_budget
        if not budget.fits(1):
            await self.push(replies.DATA_BUDGET_FULL)
            return
        await self.push(replies.START_DATA)
        self._reset_timeout(self.options.data_timeout + 5)
        assert self.session is not None
        limit: int = self.event_handler.size_limit(self.session)
        held = Held(budget)
        try:
            await self._receive_message(limit, held)
        finally:
            large = held.size >= LARGE_MESSAGE
            held.release()
            if large:
                memory.give_back()

    async def _receive_message(self, limit: int, held: Held) -> None:
        """Read the data, check it, hand it to the handler and answer."""
        assert self.envelope is not None
        scan = DataScan()
        try:
            async with asyncio.timeout(self.options.data_timeout):
                data, refusal = await read_data(self._reader, limit, held, scan)
        except TimeoutError:
            await SMTP.push(self, replies.DATA_TIMEOUT)
            assert self.transport is not None
            self.transport.close()
            return
        except asyncio.IncompleteReadError:
            return  # the client went away; eof_received ends the session
        self._reset_timeout()  # back to command_timeout for the next command
        problem = scan.problem()
        status = refusal or self._refusal_for(problem)
        if status is None:
            if len(data) >= LARGE_MESSAGE:
                await asyncio.sleep(0)  # let other sessions in between the big copies
            if problem is DataProblem.BARE_NEWLINE:  # left here only where normalising is on
                data = normalize_newlines(data)
            self.envelope.content = self.envelope.original_content = unstuff(data)
            del data
            status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        if status.startswith("250"):
            self._errors.clear()  # like Postfix: the limit is on errors "without delivering mail"
        await self.push(status)

    def _refusal_for(self, problem: DataProblem | None) -> str | None:
        """The reply that refuses data with `problem` (RFC 5321 2.3.8, 4.1.1.4), if any."""
        if problem is DataProblem.NUL:
            return replies.NUL_IN_DATA
        if problem is DataProblem.BARE_NEWLINE and not self.options.normalize_newlines:
            return replies.BARE_NEWLINE_IN_DATA
        return None


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
