"""Reading MIME from the internet: a guarded parser and bounded walks over what it gives.

Reports, bounces and forwarded messages come from anyone, so every helper here is bounded
(bytes parsed, parts visited, depth, fields per block, characters of text) and none raises on
malformed input: an unreadable Content-Type is text/plain (RFC 2045 5.2), a header value that
the `default` policy cannot parse is read raw. The feedback parsers (ARF, DSN, forwarded
abuse reports) are built on these.
"""

import email.policy
import functools
import html
import re
from collections.abc import Iterator
from email import headerregistry
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses

MAX_BYTES = 2 * 1024 * 1024  # parsed of a report: its own parts are a few KB, the rest a copy
_MAX_TEXT = 256 * 1024  # characters of a part's text read
_MAX_PARTS = 200  # MIME parts visited
_MAX_DEPTH = 8  # nesting of multiparts and attached messages
_MAX_FIELDS = 500  # header fields kept per block
_MAX_SEPARATORS = {b"\n--": 200, b"\n\n": 2000, b"\n\r\n": 2000}  # see `_front`
_MAX_STRUCTURED = 256  # characters of a Content-Type or -Transfer-Encoding value parsed
_STRUCTURED = frozenset({"content-type", "content-transfer-encoding"})
_RUNS = re.compile(r"([^\w\s\-=.])\1{2,}")


class _GuardedHeaders(headerregistry.HeaderRegistry):
    """The `default` policy's header classes, guarded for hostile input.

    The feed parser reads Content-Type several times per part and the structured-header
    parser behind it is slow on some inputs (a few hundred quotes cost milliseconds, and
    growing quadratically) and recurses once per nested comment, so a small message could
    cost minutes or raise RecursionError. The two fields the parser and this module read
    through it are bounded in length, runs of punctuation are collapsed (no legitimate
    value has them; boundaries keep their "-", "_", "=" and "."), and each distinct value is
    parsed once. Every other field keeps the stock behaviour; this module reads those raw.
    """

    def __init__(self) -> None:
        super().__init__()
        self._structured = functools.lru_cache(maxsize=256)(super().__call__)

    def __call__(self, name: str, value: str) -> headerregistry.BaseHeader:
        if name.lower() not in _STRUCTURED:
            return super().__call__(name, value)
        value = _RUNS.sub(r"\1", value[:_MAX_STRUCTURED])
        if value.count("(") > 8:  # nested comments: one parser frame per level
            value = value.replace("(", " ").replace(")", " ")
        return self._structured(name, value)


_POLICY = email.policy.default.clone(header_factory=_GuardedHeaders())
_PARSER = BytesParser(policy=_POLICY)
_FIELD = re.compile(r"([\x21-\x39\x3b-\x7e]+):[ \t]*(.*)")  # RFC 5322 2.2: name ":" value
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
ADDRESS = re.compile(r"[^\s<>()\[\]@\",;:]+@[A-Za-z0-9\-_.\[\]:]+[A-Za-z0-9\]]")


def clean(value: object) -> str:
    """A header value as one line of text: bytes the parser kept as surrogates decoded as
    UTF-8 (RFC 6532), folding undone (RFC 5322 2.2.3), control characters and runs of white
    space made one space, so the value is safe to log and compare."""
    text = str(value)
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8", "replace")
    return " ".join(_CONTROLS.sub(" ", text).split())


def addresses(value: str | None) -> tuple[str, ...]:
    """The addr-specs in an address-list header value (RFC 5322 3.4), in order."""
    if not value:
        return ()
    found = []
    for _name, address in getaddresses([value]):
        if ADDRESS.fullmatch(address):
            found.append(address)
    return tuple(found)


def _front(raw: bytes, max_bytes: int) -> bytes:
    """The part of the input the parser is given: at most `max_bytes`, and at most a few
    hundred boundary lines and a few thousand blank lines, so crafted input (thousands of
    MIME parts or field blocks) costs bounded time. A report's structure is at its front;
    what a cut loses is the tail of a returned or forwarded copy."""
    data = raw[:max_bytes]
    for separator, limit in _MAX_SEPARATORS.items():
        index = -1
        for _ in range(limit):
            index = data.find(separator, index + 1)
            if index < 0:
                break
        else:
            data = data[:index]
    return data


def parse_bytes(raw: bytes, max_bytes: int = MAX_BYTES) -> Message:
    """The message, parsed with the `default` policy (guarded, see `_GuardedHeaders`) from
    the front of the input (see `_front`)."""
    return _PARSER.parsebytes(_front(raw, max_bytes))


def content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:  # an unparseable Content-Type is text/plain (RFC 2045 5.2)
        return "text/plain"


def report_type(message: Message) -> str:
    try:
        value = message.get_param("report-type")
    except Exception:
        return ""
    return value.lower().strip() if isinstance(value, str) else ""


def walk(message: Message, *, into_messages: bool = False) -> Iterator[Message]:
    """The parts in document order, bounded in number and depth. Attached messages
    (message/rfc822, message/global) are entered only if `into_messages`; the field blocks of
    a message/delivery-status or message/feedback-report part are never parts."""
    stack: list[tuple[Message, int]] = [(message, 0)]
    seen = 0
    while stack and seen < _MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        yield part
        if depth >= _MAX_DEPTH:
            continue
        ctype = content_type(part)
        payload = part.get_payload()
        if not isinstance(payload, list):
            continue
        if ctype.startswith("multipart/") or (
            into_messages and ctype in ("message/rfc822", "message/global")
        ):
            children = [child for child in payload if isinstance(child, Message)]
            stack.extend((child, depth + 1) for child in reversed(children))


def text_of(part: Message) -> str:
    """A leaf part's text, transfer encoding and charset undone; HTML reduced to its text."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return ""
    if not isinstance(payload, bytes):
        return ""
    try:
        charset = part.get_content_charset() or "utf-8"
        text = payload.decode(charset, "replace")
    except (LookupError, UnicodeError, ValueError, TypeError):
        text = payload.decode("utf-8", "replace")
    text = text[:_MAX_TEXT]
    if content_type(part) == "text/html":
        text = html_text(text)
    return text


_TAG_BREAK = re.compile(r"<\s*(?:br|/p|/div|/tr|/li|/h\d|p|div|tr|li)\b[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_INVISIBLE = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)


def html_text(markup: str) -> str:
    """The text of an HTML part, line breaks where blocks end: enough to read an NDR or a
    forwarded message written only in HTML."""
    markup = " ".join(_INVISIBLE.sub(" ", markup).split())  # source line breaks are spaces
    text = html.unescape(_TAG.sub("", _TAG_BREAK.sub("\n", markup))).replace("\xa0", " ")
    return "\n".join(line.strip() for line in lines_of(text))


def human_text(message: Message) -> str:
    """The human-readable text of a message: its first text/plain part outside attached
    messages, else its first text/html part, else nothing."""
    html_part = None
    for part in walk(message):
        ctype = content_type(part)
        if ctype == "text/plain":
            text = text_of(part)
            if text.strip():
                return text
        elif ctype == "text/html" and html_part is None:
            html_part = part
    return text_of(html_part) if html_part is not None else ""


def raw_header(message: Message, name: str) -> str | None:
    """A header field's first value, read raw and cleaned: the `default` policy's parsing of
    a field on access can fail on hostile values, and a report's own Subject or From is
    never worth losing the report for."""
    key = name.lower()
    for field, value in message.raw_items():
        if field.lower() == key:
            return clean(value)
    return None


def fields_of(block: Message) -> tuple[tuple[str, str], ...]:
    """A parsed header block's fields, raw (no header-class parsing that could fail), cleaned."""
    fields = []
    for name, value in block.raw_items():
        fields.append((clean(name), clean(value)))
        if len(fields) >= _MAX_FIELDS:
            break
    return tuple(fields)


def header_block(lines: list[str], start: int = 0) -> tuple[tuple[str, str], ...]:
    """Header fields read from text lines at `start` (leading blank lines skipped) up to the
    first line that is neither a field nor a continuation (RFC 5322 2.2)."""
    index = start
    while index < len(lines) and not lines[index].strip():
        index += 1
    if index < len(lines) and lines[index].startswith("From "):  # an mbox separator line
        index += 1
    fields: list[tuple[str, str]] = []
    for line in lines[index:]:
        if not line.strip():
            break
        if line[0] in " \t":
            if not fields:
                break
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip()}")
            continue
        match = _FIELD.fullmatch(line.rstrip())
        if match is None:
            break
        fields.append((match.group(1), match.group(2)))
        if len(fields) >= _MAX_FIELDS:
            break
    return tuple((clean(name), clean(value)) for name, value in fields)


def lines_of(text: str) -> list[str]:
    """Text split on CRLF or LF only (str.splitlines also splits on FF, VT and U+2028)."""
    return re.split(r"\r?\n", text)
