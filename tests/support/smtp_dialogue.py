"""Byte-exact SMTP dialogues under TLS: the raw socket of `Raw`, upgraded after STARTTLS.

smtplib rewrites what the tests need to send as it is (bare CR/LF in DATA, CR in a command
line), so these helpers speak SMTP over a plain socket, wrap it in TLS after the relay's
`220` to STARTTLS (RFC 3207) and log in with AUTH PLAIN (RFC 4616).
"""

import base64
import time

from tests.support.peers import ACME_PASSWORD
from tests.support.smtp_client import Raw, tls_context

PLAIN_ACME = base64.b64encode(b"\0acme\0" + ACME_PASSWORD.encode()).decode()


def auth_plain(username: str, password: str) -> str:
    """The AUTH PLAIN command line with an initial response (RFC 4954 4, RFC 4616)."""
    blob = base64.b64encode(b"\0" + username.encode() + b"\0" + password.encode()).decode()
    return f"AUTH PLAIN {blob}"


class Dialogue(Raw):
    """`Raw` that can switch to TLS in place after STARTTLS."""

    def starttls(self) -> str:
        reply = self.command("STARTTLS")
        assert reply.startswith("220"), reply
        assert self.buffer == b"", "the relay sent bytes after its 220 to STARTTLS"
        self.sock = tls_context().wrap_socket(self.sock)
        return reply

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True once the relay has closed the connection (EOF) without sending more bytes."""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.1)
        try:
            while time.monotonic() < deadline and not self.buffer:
                try:
                    chunk = self.sock.recv(65536)
                except TimeoutError:
                    continue
                except (ConnectionResetError, BrokenPipeError):
                    return True
                if not chunk:
                    return True
                self.buffer += chunk
            return False
        finally:
            self.sock.settimeout(20)


def secure(port: int, *, login: bool = True, source: str | None = None) -> Dialogue:
    """A raw dialogue on the STARTTLS listener: EHLO, STARTTLS, EHLO and (by default) AUTH."""
    dialogue = Dialogue(port, source=source)
    try:
        assert dialogue.greeting.startswith("220 "), dialogue.greeting
        assert dialogue.command("EHLO client.test").startswith("250")
        dialogue.starttls()
        assert dialogue.command("EHLO client.test").startswith("250")
        if login:
            reply = dialogue.command(f"AUTH PLAIN {PLAIN_ACME}")
            assert reply.startswith("235 2.7.0"), reply
    except BaseException:
        dialogue.close()
        raise
    return dialogue
