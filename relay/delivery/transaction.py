"""One outbound SMTP connection carrying several messages (RFC 5321 3.3, 4.1.1.5).

Opens a connection to the first reachable host, uses STARTTLS as the TLS policy says
(opportunistic by default, falling back to plaintext when the handshake fails, RFC 7435),
and sends each message with MAIL, one RCPT per recipient, DATA, pipelined when the server
offers PIPELINING (RFC 2920); RSET follows a transaction that did not end with the text, and
is not needed after a completed DATA. Every recipient gets a `Reply`: the MAIL or RCPT
refusal, the DATA reply, or our own 4xx when the connection is lost. aiosmtplib connects,
greets and starts TLS; the commands and replies after that are ours (`relay.delivery.replies`
says why), and the message text goes out dot-stuffed by `relay.mail.wire.stuff`, which costs
a fraction of aiosmtplib's own DATA on large messages. One connection serves one task only.
"""

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import aiosmtplib

from relay.delivery.outcome import Reply
from relay.delivery.replies import ReplyReader
from relay.mail.wire import LARGE_MESSAGE, stuff

log = logging.getLogger(__name__)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Envelope:
    """One message to send: sender, recipients and the bytes (with CRLF line endings)."""

    mail_from: str
    recipients: tuple[str, ...]
    content: bytes


@dataclass(frozen=True)
class TlsPolicy:
    mode: str  # "opportunistic" | "required" | "none"
    verify: bool


def _tls_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Connection:
    """An open, greeted (and possibly encrypted) SMTP client connection.

    aiosmtplib opens it; then its transport is read by `ReplyReader`, so that a server
    advertising PIPELINING (RFC 2920) gets each message's MAIL, RCPTs and DATA in one
    write, and the text in a second: two round trips a message instead of three plus one
    per recipient, as Postfix's client does. Other servers get one command at a time."""

    def __init__(self, client: aiosmtplib.SMTP, host: str, timeout: float) -> None:
        transport = client.transport
        assert transport is not None  # uvloop's transports are not asyncio.Transport's
        self.host = host
        self.pipelining = client.supports_extension("pipelining")
        self.eightbit = client.supports_extension("8bitmime")
        self._client = client
        self._session = ReplyReader(cast(asyncio.Transport, transport), timeout)

    @property
    def is_connected(self) -> bool:
        return self._session.is_connected

    @classmethod
    async def open(
        cls,
        host: str,
        address: str,
        port: int,
        *,
        helo: str,
        tls: TlsPolicy,
        connect_timeout: float,
        command_timeout: float,
    ) -> "Connection":
        """Connect, EHLO and STARTTLS; raise aiosmtplib/OSError errors on failure."""
        use_tls = tls.mode != "none"
        while True:
            client = aiosmtplib.SMTP(
                hostname=address,
                port=port,
                local_hostname=helo,
                timeout=command_timeout,
                start_tls=False,
                validate_certs=tls.verify,
            )
            await client.connect(timeout=connect_timeout)
            try:
                await client.ehlo()
                if use_tls and client.supports_extension("starttls"):
                    await client.starttls(
                        server_hostname=host, tls_context=_tls_context(tls.verify)
                    )
                    await client.ehlo()  # RFC 3207 4.2: what was said before TLS is void
                elif tls.mode == "required":
                    raise aiosmtplib.SMTPResponseException(
                        421, "4.7.10 TLS required by policy, not offered by the server"
                    )
                return cls(client, host, command_timeout)
            except (ssl.SSLError, aiosmtplib.SMTPException) as exc:
                await _close(client)
                if tls.mode == "opportunistic" and use_tls and isinstance(exc, ssl.SSLError):
                    log.info("STARTTLS with %s failed (%s), retrying in plaintext", host, exc)
                    use_tls = False
                    continue
                raise

    async def send(self, envelope: Envelope) -> dict[str, Reply]:
        """Send one message; a Reply per recipient. Raises on a lost connection."""
        try:
            mail = _mail_command(envelope, self.eightbit)
            rcpts = [_command(b"RCPT TO:", r) for r in envelope.recipients]
        except ValueError as exc:  # a control character in an address: never on the wire
            bad = Reply(553, f"5.1.3 Address not sendable: {exc}", self.host)
            return dict.fromkeys(envelope.recipients, bad)
        if self.pipelining:
            return await self._pipelined(envelope, mail, rcpts)
        return await self._one_by_one(envelope, mail, rcpts)

    async def _pipelined(
        self, envelope: Envelope, mail: bytes, rcpts: list[bytes]
    ) -> dict[str, Reply]:
        """RFC 2920 3.1: the group MAIL, RCPTs, DATA in one write, then every reply checked:
        a DATA that was accepted though no recipient was gets a lone dot, not the text."""
        self._session.write(b"".join((mail, *rcpts, b"DATA\r\n")))
        sender = await self._reply()
        by_rcpt = {r: await self._reply() for r in envelope.recipients}
        start = await self._reply()
        if not sender.accepted:
            replies = dict.fromkeys(envelope.recipients, sender)
        else:
            replies = {r: x for r, x in by_rcpt.items() if not x.accepted}
        accepted = [r for r in envelope.recipients if r not in replies]
        if start.code == 354:
            final = await self._text(envelope.content if accepted else b"")
            replies.update(dict.fromkeys(accepted, final))
            if accepted:
                return replies
        else:
            replies.update(dict.fromkeys(accepted, start))
        await self.reset()
        return replies

    async def _one_by_one(
        self, envelope: Envelope, mail: bytes, rcpts: list[bytes]
    ) -> dict[str, Reply]:
        sender = await self._command(mail)
        if not sender.accepted:
            await self.reset()
            return dict.fromkeys(envelope.recipients, sender)
        replies: dict[str, Reply] = {}
        for recipient, command in zip(envelope.recipients, rcpts, strict=True):
            reply = await self._command(command)
            if not reply.accepted:
                replies[recipient] = reply
        accepted = [r for r in envelope.recipients if r not in replies]
        if accepted:
            start = await self._command(b"DATA\r\n")
            if start.code == 354:
                replies.update(dict.fromkeys(accepted, await self._text(envelope.content)))
                return replies
            replies.update(dict.fromkeys(accepted, start))
        await self.reset()
        return replies

    async def _text(self, content: bytes) -> Reply:
        """The dot-stuffed text and its end marker (a lone dot for no text); the final reply
        (RFC 5321 4.1.1.4)."""
        if len(content) >= LARGE_MESSAGE:  # in a thread: its scans would hold the loop
            self._session.write(await asyncio.to_thread(stuff, content))
        else:
            self._session.write(stuff(content) if content else b".\r\n")
        return await self._reply()

    async def _command(self, line: bytes) -> Reply:
        self._session.write(line)
        return await self._reply()

    async def _reply(self) -> Reply:
        response = await self._session.reply()
        return Reply(response.code, " ".join(response.message.split()), self.host)

    async def reset(self) -> bool:
        """RSET (RFC 5321 4.1.1.5) after a transaction that did not end with the text: True
        when the server took it. The idle pool asks this before reusing a connection."""
        with contextlib.suppress(aiosmtplib.SMTPException):
            return (await self._command(b"RSET\r\n")).accepted
        return False

    async def close(self) -> None:
        """QUIT, briefly waited for, then the connection closed (RFC 5321 4.1.1.10)."""
        with contextlib.suppress(aiosmtplib.SMTPException, TimeoutError):
            if self.is_connected:
                self._session.write(b"QUIT\r\n")
                async with asyncio.timeout(5):
                    await self._session.reply()
        self._session.transport.close()
        self._client.close()


def _mail_command(envelope: Envelope, eightbit: bool) -> bytes:
    options = []
    if any(not r.isascii() for r in (envelope.mail_from, *envelope.recipients)):
        options.append(b" SMTPUTF8")
    if eightbit and not envelope.content.isascii():
        options.append(b" BODY=8BITMIME")
    return _command(b"MAIL FROM:", envelope.mail_from, *options)


def _command(verb: bytes, address: str, *options: bytes) -> bytes:
    """A MAIL or RCPT line (RFC 5321 4.1.2). The listener's parser let only valid paths
    in; a control character, which could end the line and start another command, is
    refused here all the same (ValueError), never written or quietly dropped."""
    if _CONTROL.search(address):
        raise ValueError(f"control character in {address[:100]!r}")
    return b"".join((verb, b"<", address.encode("utf-8"), b">", *options, b"\r\n"))


async def _close(client: aiosmtplib.SMTP) -> None:
    try:
        if client.is_connected:
            await asyncio.wait_for(client.quit(), timeout=5)
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        client.close()


def unreachable(hosts: Sequence[str], error: BaseException) -> Reply:
    """Our own 4xx for a destination none of whose hosts could be reached."""
    detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return Reply(451, f"4.4.1 No host of {', '.join(hosts)} reachable ({detail})")
