"""DKIM material shared by the signing tests, the end-to-end tests and the interop tests:
messages of awkward shapes to sign, TXT record text for the loopback DNS server, and
dkimpy's verifier asking that server for the keys."""

from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP

import dkim
import dns.resolver

DOMAIN = "acme.example"


def txt_record(record: str) -> str:
    """Zone-file text of a TXT record: strings of at most 255 octets."""
    return " ".join(f'"{record[i : i + 255]}"' for i in range(0, len(record), 255))


def dkimpy_dnsfunc(port: int) -> Callable[..., bytes | None]:
    """dkimpy's DNS hook, answered by real queries to the loopback DNS server on `port`."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return b"".join(b"".join(r.strings) for r in answer)

    return lookup


def verify_all(message: bytes, dnsfunc: Callable[..., bytes | None]) -> list[bool]:
    """Whether each DKIM-Signature of `message` verifies, in the order they appear."""
    d = dkim.DKIM(message)
    count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
    results = []
    for i in range(count):
        try:
            results.append(bool(d.verify(idx=i, dnsfunc=dnsfunc)))
        except dkim.ValidationError:  # dkimpy raises on a body hash mismatch
            results.append(False)
    return results


def receipt(body: str = "Hello.\n", **headers: str) -> EmailMessage:
    """A plain message from DOMAIN; `headers` (underscores for hyphens) replace or add fields."""
    msg = EmailMessage()
    msg["From"] = f"Shop <news@{DOMAIN}>"
    msg["To"] = "alice@inbox.example"
    msg["Subject"] = "Your receipt"
    msg["Date"] = "Mon, 23 Nov 2026 22:00:00 +0000"
    msg["Message-ID"] = f"<1@{DOMAIN}>"
    for name, value in headers.items():
        del msg[name.replace("_", "-")]
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def _attachment() -> EmailMessage:
    msg = receipt("See the attached invoice.\n")
    msg.add_attachment(bytes(range(256)) * 40, maintype="application", subtype="pdf")
    return msg


SIGNING_CASES: dict[str, bytes] = {
    "dot-leading lines": receipt(".hidden\n..two dots\n.\n").as_bytes(policy=SMTP),
    "trailing whitespace": receipt("spaces   \ntabs\t\t\nmixed \t \n").as_bytes(policy=SMTP),
    "empty body": (
        f"From: news@{DOMAIN}\r\nTo: a@inbox.example\r\nSubject: empty\r\n"
        f"Date: Mon, 23 Nov 2026 22:00:00 +0000\r\nMessage-ID: <2@{DOMAIN}>\r\n\r\n"
    ).encode(),
    "utf-8 body": receipt("Grüße aus Köln — ✓\n").as_bytes(policy=SMTP),
    "attachment": _attachment().as_bytes(policy=SMTP),
    "long folded header": receipt(
        Subject="A subject " + "that goes on and on " * 12,
        List_Unsubscribe="<https://acme.example/u/" + "x" * 120 + ">",
        List_Unsubscribe_Post="List-Unsubscribe=One-Click",
    ).as_bytes(policy=SMTP),
    "8-bit text": (
        f"From: news@{DOMAIN}\r\nTo: a@inbox.example\r\nSubject: 8bit\r\n"
        f"Date: Mon, 23 Nov 2026 22:00:00 +0000\r\nMessage-ID: <3@{DOMAIN}>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=latin-1\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode()
    + "Caf\xe9 cr\xe8me br\xfbl\xe9e\r\n".encode("latin-1"),
    "bare LF line endings": receipt("one\ntwo\n").as_bytes(),
}
"""Message shapes whose canonicalisation has gone wrong in signers before; each is signed
and verified by every verifier the tests have."""
