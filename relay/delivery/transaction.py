"""One outbound SMTP connection carrying several messages (RFC 5321 3.3, 4.1.1.5).

Opens a connection to the first reachable host, uses STARTTLS as the TLS policy says
(opportunistic by default, falling back to plaintext when the handshake fails, RFC 7435),
and sends each message with MAIL, one RCPT per recipient, DATA; RSET between messages is
not needed after a completed DATA. Every recipient gets a `Reply`: the RCPT refusal, the
DATA reply, or our own 4xx when the connection is lost. aiosmtplib does the protocol; the
message text goes out dot-stuffed by `relay.smtp.data.stuff`, which costs a fraction of
aiosmtplib's own DATA on large messages. One client object serves one task only.
"""

import asyncio
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import aiosmtplib

from relay.delivery.outcome import Reply
from relay.smtp.data import stuff

log = logging.getLogger(__name__)


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
    """An open, greeted (and possibly encrypted) SMTP client connection."""

    def __init__(self, client: aiosmtplib.SMTP, host: str) -> None:
        self.client = client
        self.host = host

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
                elif tls.mode == "required":
                    raise aiosmtplib.SMTPResponseException(
                        421, "4.7.10 TLS required by policy, not offered by the server"
                    )
                return cls(client, host)
            except (ssl.SSLError, aiosmtplib.SMTPException) as exc:
                await _close(client)
                if tls.mode == "opportunistic" and use_tls and isinstance(exc, ssl.SSLError):
                    log.info("STARTTLS with %s failed (%s), retrying in plaintext", host, exc)
                    use_tls = False
                    continue
                raise

    async def send(self, envelope: Envelope) -> dict[str, Reply]:
        """Send one message; a Reply per recipient. Raises on a lost connection."""
        client = self.client
        options = []
        if any(not r.isascii() for r in (envelope.mail_from, *envelope.recipients)):
            options.append("SMTPUTF8")
        if not envelope.content.isascii() and client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        try:
            await client.mail(envelope.mail_from, options=options, encoding="utf-8")
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset()
            return dict.fromkeys(envelope.recipients, self._reply(exc.code, exc.message))
        replies: dict[str, Reply] = {}
        accepted = []
        for recipient in envelope.recipients:
            try:
                await client.rcpt(recipient, encoding="utf-8")
                accepted.append(recipient)
            except aiosmtplib.SMTPResponseException as exc:
                replies[recipient] = self._reply(exc.code, exc.message)
        if not accepted:
            await self._reset()
            return replies
        replies.update(dict.fromkeys(accepted, await self._data(envelope.content)))
        return replies

    async def _data(self, content: bytes) -> Reply:
        """DATA, then the dot-stuffed text; the reply to whichever was refused, else the
        final one (RFC 5321 4.1.1.4). Raises on a lost connection or a timeout, after
        closing the client as aiosmtplib's own DATA does (its reply buffer is out of step)."""
        client = self.client
        start = await client.execute_command(b"DATA")
        if start.code != 354:
            return self._reply(start.code, start.message)
        protocol = client.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        try:
            protocol.write(stuff(content))
            response = await protocol.read_response(timeout=client.timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            client.close()
            raise
        return self._reply(response.code, response.message)

    def _reply(self, code: int, text: str) -> Reply:
        return Reply(code, " ".join(text.split()), self.host)

    async def _reset(self) -> None:
        try:
            await self.client.rset()
        except aiosmtplib.SMTPResponseException:
            pass

    async def close(self) -> None:
        await _close(self.client)


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
