"""`relay sink`: a small SMTP server that captures what the relay delivers.

Like Python's old DebuggingServer: it accepts every message, prints it and, with a
directory, stores it (`N.eml` with the bytes as received, `N.json` with the envelope), so a
newcomer can watch the first message arrive without the internet. A scripted list of
replies (`--reply 451 --reply 250`) makes it play a difficult destination for tests, and
`rcpt_replies` refuses chosen recipients at RCPT, as a mailbox provider does for an
address that does not exist.
"""

import asyncio
import itertools
import json
import os
import ssl
import sys
import time
from pathlib import Path
from typing import TextIO

from aiosmtpd.smtp import SMTP, Envelope, Session


class SinkHandler:
    """aiosmtpd handler: store or print each message; answer from the script, then 250."""

    def __init__(
        self,
        store: Path | None = None,
        echo: TextIO | None = None,
        script: list[str] | None = None,
    ) -> None:
        self.store = store
        self.echo = echo
        self.script = list(script or [])
        self.rcpt_replies: dict[str, str] = {}
        """Recipient (lower case) -> the reply its RCPT gets instead of 250."""
        self.delay = 0.0
        """Seconds to wait before answering each DATA: a slow destination."""
        self.arrivals: list[float] = []
        """Per message: when it arrived (time.monotonic())."""
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.tls: list[bool] = []
        """Per message: whether its session was encrypted (STARTTLS)."""
        self.peers: list[object] = []
        """Per message: the client's address and port, one per connection it came over."""
        self.pipelining = True
        """Advertise RFC 2920 PIPELINING (aiosmtpd reads commands one after another, so
        it takes them pipelined as well); False plays a server without it."""
        self.hang_up = False
        """Close each connection just after answering its DATA (an impatient destination)."""
        self._numbers = itertools.count(1)
        if store:
            store.mkdir(parents=True, exist_ok=True)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:1], "250-PIPELINING", *responses[1:]] if self.pipelining else responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.rcpt_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.script:
            reply = self.script.pop(0)
            if not reply.startswith("2"):
                return reply
        content = envelope.original_content or b""
        mail_from = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
        rcpts = list(envelope.rcpt_tos)
        self.messages.append((mail_from, rcpts, content))
        self.arrivals.append(time.monotonic())
        self.tls.append(session.ssl is not None)
        self.peers.append(session.peer)
        if self.hang_up and server.transport is not None:
            asyncio.get_running_loop().call_later(0.2, server.transport.close)
        number = next(self._numbers)
        if self.store:
            self._write(number, mail_from, rcpts, content)
        if self.echo:
            self.echo.write(
                f"---------- message {number} from <{mail_from}> to "
                f"{', '.join(f'<{r}>' for r in rcpts)} ({len(content)} bytes) ----------\n"
            )
            self.echo.write(content.decode("utf-8", "replace").replace("\r\n", "\n"))
            self.echo.write("------------ end of message ------------\n")
            self.echo.flush()
        return "250 2.0.0 OK captured"

    def _write(self, number: int, mail_from: str, rcpts: list[str], content: bytes) -> None:
        assert self.store is not None
        stem = f"{int(time.time() * 1000)}-{os.getpid()}-{number:06d}"
        envelope = {"mail_from": mail_from, "rcpt_tos": rcpts, "received": time.time()}
        (self.store / f"{stem}.json").write_text(json.dumps(envelope))
        tmp = self.store / f".{stem}.tmp"
        tmp.write_bytes(content)
        tmp.rename(self.store / f"{stem}.eml")  # appears whole or not at all


class _LenientSMTP(SMTP):
    """A capture server takes what it gets: lines longer than RFC 5322's 998 octets too."""

    line_length_limit = 1 << 20


def make_sink_protocol(
    handler: SinkHandler, hostname: str = "sink.localhost", tls: ssl.SSLContext | None = None
) -> SMTP:
    return _LenientSMTP(
        handler,
        tls_context=tls,
        hostname=hostname,
        ident="relay sink",
        data_size_limit=None,
        enable_SMTPUTF8=True,
        decode_data=False,
    )


async def run_sink(host: str, port: int, handler: SinkHandler) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: make_sink_protocol(handler), host, port)
    print(f"relay sink listening on {host}:{port}", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()
