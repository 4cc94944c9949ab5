"""Client helpers for the end-to-end tests: smtplib sessions and a raw socket dialogue."""

import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from tests.support.peers import ACME_PASSWORD


def tls_context() -> ssl.SSLContext:
    """The relay's test certificate is self-signed: do not verify it."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def message(
    sender: str = "app@acme.example",
    to: str = "alice@inbox.example",
    subject: str = "Receipt",
    body: str = "Thanks for your order.\n",
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate()
    msg["Message-ID"] = make_msgid(domain="acme.example")
    msg.set_content(body)
    return msg


def submission(port: int, *, login: bool = True, source: str | None = None) -> smtplib.SMTP:
    """An ESMTP session on the STARTTLS listener, encrypted and (by default) logged in."""
    client = smtplib.SMTP(
        "127.0.0.1", port, timeout=20, source_address=(source, 0) if source else None
    )
    try:
        client.ehlo("client.test")
        client.starttls(context=tls_context())
        client.ehlo("client.test")
        if login:
            client.login("acme", ACME_PASSWORD)
    except BaseException:
        client.close()  # a refused login must not leave the TLS socket to the collector
        raise
    return client


class Raw:
    """A byte-exact SMTP dialogue over a plain socket (for smuggling and syntax tests)."""

    def __init__(self, port: int, source: str | None = None) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=20, source_address=(source, 0) if source else None
        )
        self.buffer = b""
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> str:
        """Read one (possibly multi-line) reply; return it as text."""
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed after {lines!r} / {self.buffer!r}")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line.decode())
            if len(line) < 4 or line[3:4] != b"-":
                return "\n".join(lines)

    def command(self, line: str | bytes) -> str:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()
