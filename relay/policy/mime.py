"""The inline text parts of a message, decoded, at the cost of finding boundaries.

The standard library's parser reads a whole message line by line in Python, which was most
of what the policy pipeline spent on a newsletter (see bench/README.md). The text checks
need only the inline text/plain and text/html parts, decoded. So this module finds the
multipart boundaries (RFC 2046 5.1.1) with `bytes.find`, gives each part's header block to the
standard library's parser (`headersonly`, so the header syntax and RFC 2047 stay its job),
and decodes each body with `binascii` (quoted-printable, base64) and the part's charset.
`tests/test_policy_mime.py` checks the result against the standard parser's walk.

Work is bounded per message, since the body is the sender's to shape: at most `max_parts`
entities and `max_depth` levels of nesting are looked at (`[smtp] max_mime_parts` and
`max_mime_depth`; P-SIZE refuses a message that has more, `relay.policy.checks.size`), the
boundaries of a multipart are found one at a time (a 2 MB message of 50,000 parts is not
split all at once to read its first 500), and at most `MAX_TEXT` characters of decoded text
are kept.
"""

import binascii
import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

MAX_PARTS = 500
MAX_DEPTH = 10
MAX_TEXT = 512 * 1024

_HEADERS = BytesParser(policy=compat32)
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


@dataclass(frozen=True)
class TextPart:
    subtype: str
    """`plain` or `html`."""
    text: str


def _split_head(raw: bytes) -> tuple[bytes, bytes]:
    """Header block (with the blank line after it) and body of an entity."""
    if raw.startswith(b"\r\n"):  # no header fields: defaults apply (RFC 2045 5.2)
        return b"", raw[2:]
    if raw.startswith(b"\n"):
        return b"", raw[1:]
    ends = [(at, size) for at, size in ((raw.find(b"\r\n\r\n"), 4), (raw.find(b"\n\n"), 2))]
    found = [(at, size) for at, size in ends if at >= 0]
    if not found:
        return raw, b""
    at, size = min(found)
    return raw[: at + size], raw[at + size :]


def _head(block: bytes) -> Message:
    return _HEADERS.parsebytes(block, headersonly=True)


def _lenient_base64(body: bytes) -> bytes:
    """Base64 decoded as the standard library and mail clients do: characters outside the
    alphabet skipped, missing padding supplied, a dangling sixth of a byte dropped."""
    data = _NOT_BASE64.sub(b"", body)
    if len(data) % 4 == 1:
        data = data[:-1]
    return binascii.a2b_base64(data + b"=" * (-len(data) % 4))


def _decode(head: Message, body: bytes) -> str:
    encoding = str(head.get("Content-Transfer-Encoding", "")).strip().lower()
    if encoding == "base64":
        body = _lenient_base64(body)
    elif encoding == "quoted-printable":
        body = binascii.a2b_qp(body)
    charset = str(head.get_param("charset", "utf-8") or "utf-8").strip().strip('"').lower()
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    if charset in ("us-ascii", "ascii"):
        charset = "utf-8"  # 8-bit text labelled ASCII is common; UTF-8 reads it right
    return body.decode(charset, "replace")


def _parts_of(body: bytes, boundary: bytes) -> Iterator[bytes]:
    """The body parts between the delimiter lines `--boundary` (RFC 2046 5.1.1), one at a
    time; the preamble and the epilogue after the close delimiter are dropped."""
    delimiter = b"--" + boundary
    start = None
    position = 0
    while True:
        found = body.find(delimiter, position)
        if found < 0:
            if start is not None:  # no close delimiter: the last part runs to the end
                yield body[start:]
            return
        at_line_start = found == 0 or body[found - 1 : found] == b"\n"
        line_end = body.find(b"\n", found)
        line_end = len(body) if line_end < 0 else line_end + 1
        rest = body[found + len(delimiter) : line_end].rstrip(b"\r\n")
        if not at_line_start or (rest.strip(b" \t") and not rest.startswith(b"--")):
            position = found + len(delimiter)  # the boundary's text inside a line
            continue
        if start is not None:
            end = found - 1
            if end > 0 and body[end - 1 : end] == b"\r":
                end -= 1
            yield body[start : max(start, end)]
        if rest.startswith(b"--"):
            return
        start = line_end
        position = line_end


@dataclass
class Reading:
    """What the walk of one message found."""

    parts: list[TextPart] = field(default_factory=list)
    """Inline text/plain and text/html parts, decoded, in message order."""
    entities: int = 0
    """MIME entities looked at (the message itself, containers and leaves)."""
    depth: int = 0
    """Deepest nesting looked at (the message's own body is depth 0)."""
    over: str = ""
    """`parts` or `depth` when the message has more than the limits allowed to read."""


def read(raw: bytes, max_parts: int = MAX_PARTS, max_depth: int = MAX_DEPTH) -> Reading:
    """Walk `raw`'s MIME structure within the limits and decode its inline text."""
    reading = Reading()
    text_left = [MAX_TEXT]

    def walk(entity: bytes, depth: int) -> None:
        if reading.over:
            return
        if reading.entities >= max_parts:
            reading.over = "parts"
            return
        reading.entities += 1
        reading.depth = max(reading.depth, depth)
        block, body = _split_head(entity)
        head = _head(block)
        rest = head.get_payload()
        if isinstance(rest, str) and rest:  # a line that is no header ends the header block
            # the block's own bytes: get_payload makes 8-bit octets U+FFFD, one for one
            body = block[len(block) - len(rest) :] + body
        maintype = head.get_content_maintype()
        nested = maintype == "multipart" or (
            head.get_content_type() == "message/rfc822"
            and head.get_content_disposition() != "attachment"
        )
        if nested and depth >= max_depth:
            reading.over = "depth"
            return
        if maintype == "multipart":
            boundary = head.get_boundary()
            if boundary:
                for part in _parts_of(body, boundary.encode("utf-8", "surrogateescape")):
                    walk(part, depth + 1)
                    if reading.over:  # the rest is not looked at, however many parts follow
                        break
            return
        if head.get_content_disposition() == "attachment":
            return
        if nested:
            walk(body, depth + 1)  # a forwarded message, shown inline by mail clients
            return
        subtype = head.get_content_subtype()
        if maintype != "text" or subtype not in ("plain", "html") or text_left[0] <= 0:
            return
        text = _decode(head, body)[: text_left[0]]
        text_left[0] -= len(text)
        reading.parts.append(TextPart(subtype, text))

    walk(raw, 0)
    return reading


def text_parts(raw: bytes) -> list[TextPart]:
    """Every inline text/plain and text/html part of `raw`, decoded, in message order
    (within the default limits)."""
    return read(raw).parts
