"""SMTP replies read as they arrive, several to one read when commands were pipelined.

aiosmtplib connects, greets and starts TLS; its protocol then expects one reply per
command awaited, and drops what arrives while no command is outstanding, so it cannot
carry RFC 2920 PIPELINING, where the client writes MAIL, its RCPTs and DATA at once and
the replies come back together. An open connection's transport is therefore handed to
`ReplyReader`, which keeps every complete reply (RFC 5321 4.2: `ddd-` lines continue,
`ddd SP` or a bare `ddd` ends it) until it is asked for, in order.
"""

import asyncio
import collections

import aiosmtplib

MAX_REPLY_BYTES = 1 << 16
"""A reply longer than this is not an SMTP reply: the connection is given up."""


class ReplyReader(asyncio.Protocol):
    """The protocol of a taken-over client transport: writes commands, queues replies."""

    def __init__(self, transport: asyncio.Transport, timeout: float) -> None:
        self.transport = transport
        self.timeout = timeout
        """Seconds to wait for each reply."""
        self._buffer = bytearray()
        self._replies: collections.deque[aiosmtplib.SMTPResponse] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: aiosmtplib.SMTPException | None = None
        transport.set_protocol(self)

    @property
    def is_connected(self) -> bool:
        return self._error is None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if not self.is_connected:
            raise self._error or aiosmtplib.SMTPServerDisconnected("Connection lost")
        self.transport.write(data)

    async def reply(self) -> aiosmtplib.SMTPResponse:
        """The next reply; raises aiosmtplib's errors for a lost connection or a timeout,
        after which the connection is closed (a late reply would pair with the wrong
        command)."""
        while not self._replies:
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self.timeout):
                    await self._waiter
            except TimeoutError:
                self.transport.close()
                error = aiosmtplib.SMTPReadTimeoutError("Timed out waiting for a reply")
                self._fail(error)
                raise error from None
            finally:
                self._waiter = None
        return self._replies.popleft()

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        self._buffer += data
        start = 0
        while (end := self._buffer.find(b"\n", start)) >= 0:
            line = self._buffer[start:end].rstrip(b"\r")
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in (b"", b" ", b"-"):
                self._malformed(bytes(line[:80]))
                return
            start = end + 1
            if line[3:4] != b"-":
                self._replies.append(self._parse(bytes(self._buffer[:start])))
                del self._buffer[:start]
                start = 0
        if len(self._buffer) > MAX_REPLY_BYTES:
            self._malformed(b"(too long)")
            return
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(aiosmtplib.SMTPServerDisconnected(f"Connection lost: {exc or 'closed'}"))

    @staticmethod
    def _parse(reply: bytes) -> aiosmtplib.SMTPResponse:
        lines = reply.decode("utf-8", "surrogateescape").splitlines()
        return aiosmtplib.SMTPResponse(int(lines[0][:3]), "\n".join(x[4:] for x in lines))

    def _malformed(self, line: bytes) -> None:
        self.transport.close()
        self._fail(aiosmtplib.SMTPServerDisconnected(f"Malformed SMTP reply line: {line!r}"))

    def _fail(self, error: aiosmtplib.SMTPException) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
