"""DKIM signatures (RFC 6376, RFC 8463) at OpenSSL speed.

dkimpy does what it is good at: parsing the header block, relaxed canonicalisation,
selecting header instances (`dkim.hash_headers`) and folding. The private-key operation,
which dkimpy does in pure Python, more than an order of magnitude slower than OpenSSL, is
done by `cryptography`. Tests verify our signatures with dkimpy's own verifier and with
independent implementations, so a change inside dkimpy that breaks this shows up there.

Signing runs on the event loop: an RSA-2048 or Ed25519 signature, even of a 100 KB
message, costs less than the copying a process pool would add to every message
(`python -m bench.dkim_sign`; figures in bench/README.md).

Choices: relaxed/relaxed, no `l=` (a length limit lets anyone append content), `t=` and an
optional `x=`, and over-signing (N+1) of the headers a forger would most like to add, so a
second From or Subject cannot be slipped in without breaking the signature. Line endings
are normalised to CRLF before hashing, so the body hash holds after the SMTP client's own
normalisation on the way out.
"""

import base64
import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from dkim.canonicalization import CanonicalizationPolicy

from relay.mail.wire import has_bare_newline, normalize_newlines

OVERSIGNED = (
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
)
"""Signed once per instance present plus once more (RFC 6376 8.15): none may be added."""

ALSO_SIGNED = (
    b"sender",
    b"in-reply-to",
    b"references",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
    b"list-id",
    b"feedback-id",
)
"""Signed when present, as they are."""

_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
_WSP_RUN = re.compile(rb"[\t ]{2,}|\t")

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class SigningKey:
    """A private key and where its public half is published (`selector._domainkey.domain`)."""

    domain: str
    selector: str
    key: PrivateKey

    @property
    def algorithm(self) -> bytes:
        return (
            b"ed25519-sha256" if isinstance(self.key, ed25519.Ed25519PrivateKey) else b"rsa-sha256"
        )


def normalize_crlf(message: bytes) -> bytes:
    """Every line ending as CRLF, as it will be on the wire."""
    return normalize_newlines(message) if has_bare_newline(message) else message


def sign(
    message: bytes,
    keys: Sequence[SigningKey],
    *,
    expire_after: float | None = None,
    now: float | None = None,
    crlf_checked: bool = False,
) -> bytes:
    """Return `message` (line endings normalised) with one DKIM-Signature per key on top.

    `crlf_checked`: the caller knows every line already ends with CRLF (the SMTP listener
    refuses or normalises any other ending), which spares three scans of the message."""
    if not crlf_checked:
        message = normalize_crlf(message)
    end = message.find(b"\r\n\r\n")
    head, body = (message, b"") if end < 0 else (message[: end + 2], message[end + 4 :])
    headers, _ = dkim.rfc822_parse(head + b"\r\n")
    body_hash = base64.b64encode(relaxed_body_hash(body))
    include = _header_list(headers)
    canonical = _RELAXED.canonicalize_headers(headers)
    signed_at = int(time.time() if now is None else now)
    signatures = b"".join(
        _signature(key, canonical, include, body_hash, signed_at, expire_after) for key in keys
    )
    return signatures + message


_CHUNK = 1 << 20


def relaxed_body_hash(body: bytes) -> bytes:
    """SHA-256 of `relaxed_body(body)`, canonicalising 1 MiB of lines at a time: relaxed
    canonicalisation changes nothing across a line break, so pieces that end with one are
    done apart; only the empty lines at the very end are dropped, so those at the end of
    a piece are held back until a line with content follows. Each regular expression
    call then holds the interpreter for one piece's time instead of the whole body's, and
    a thread signing a large message lets the event loop run in between."""
    hasher = hashlib.sha256()
    held_back = 0  # line breaks that count only if a line with content follows
    content = False
    start = 0
    while start < len(body):
        cut = body.find(b"\r\n", start + _CHUNK)
        stop = len(body) if cut < 0 else cut + 2
        canonical = _relaxed_lines(body[start:stop])
        start = stop
        end = _without_empty_lines_at_end(canonical)
        if end:
            hasher.update(b"\r\n" * held_back)
            hasher.update(memoryview(canonical)[:end])
            held_back, content = 0, True
        held_back += (len(canonical) - end) // 2
    if content:
        hasher.update(b"\r\n")
    return hasher.digest()


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4 relaxed body canonicalisation, the same bytes as dkimpy's
    (a test compares them on random input) at a fraction of its cost."""
    body = _relaxed_lines(body)
    end = _without_empty_lines_at_end(body)
    return body[:end] + b"\r\n" if end else b""


def _relaxed_lines(body: bytes) -> bytes:
    """Whitespace at line ends dropped and runs of it made one space (RFC 6376 3.4.4 a, b).

    dkimpy rewrites every single space, here only runs of whitespace and tabs are touched,
    and only when present, which makes a text body much cheaper than with dkimpy. A body
    with no space or tab at all (base64, as attachments are) is found so with two memchr
    scans, which cost next to nothing, sparing the two far costlier searches for runs (see
    bench/README.md)."""
    if b" " in body or b"\t" in body:
        if b" \r\n" in body or b"\t\r\n" in body:
            body = _TRAILING_WSP.sub(b"\r\n", body)
        if b"  " in body or b"\t" in body:
            body = _WSP_RUN.sub(b" ", body)
    return body


def _without_empty_lines_at_end(body: bytes) -> int:
    """The length of `body` without the empty lines at its end (RFC 6376 3.4.4 c)."""
    end = len(body)
    while body.endswith(b"\r\n", 0, end):
        end -= 2
    return end


def _header_list(headers: list[list[bytes]]) -> list[bytes]:
    present: dict[bytes, int] = {}
    for name, _ in headers:
        lower = name.lower()
        present[lower] = present.get(lower, 0) + 1
    include = []
    for name in OVERSIGNED:
        include += [name] * (present.get(name, 0) + 1)
    for name in ALSO_SIGNED:
        include += [name] * present.get(name, 0)
    return include


def _signature(
    key: SigningKey,
    canonical_headers: list[tuple[bytes, bytes]],
    include: list[bytes],
    body_hash: bytes,
    signed_at: int,
    expire_after: float | None,
) -> bytes:
    fields = [
        (b"v", b"1"),
        (b"a", key.algorithm),
        (b"c", b"relaxed/relaxed"),
        (b"d", key.domain.encode("ascii")),
        (b"s", key.selector.encode("ascii")),
        (b"t", str(signed_at).encode()),
    ]
    if expire_after:
        fields.append((b"x", str(signed_at + int(expire_after)).encode()))
    fields += [(b"h", b" : ".join(include)), (b"bh", body_hash), (b"b", b"")]
    unsigned = b"; ".join(b"=".join(f) for f in fields)
    hasher = hashlib.sha256()
    # RFC 6376 3.7: the selected headers, then this header with an empty b=, no final CRLF.
    dkim.hash_headers(
        hasher, _RELAXED, canonical_headers, include, (b"DKIM-Signature", b" " + unsigned), None
    )
    digest = hasher.digest()
    if isinstance(key.key, ed25519.Ed25519PrivateKey):
        raw = key.key.sign(digest)  # RFC 8463 3: Ed25519 over the SHA-256 digest
    else:
        raw = key.key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    value = unsigned + base64.b64encode(raw)
    return b"DKIM-Signature: " + dkim.fold(value, namelen=len(b"DKIM-Signature: ")) + b"\r\n"
