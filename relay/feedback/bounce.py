"""Bounces: what a returned message says about each of its recipients.

A bounce is either a delivery status notification (RFC 3464) inside an RFC 6522
`multipart/report; report-type=delivery-status`, whose `message/delivery-status` part holds one
block of fields about the message and one per recipient (RFC 3464 2.2, 2.3), or one of the
free-text shapes MTAs still send: qmail, Exim's text bounce, Postfix without MIME, Exchange's
non-delivery report, Gmail's and Yahoo's. `parse_bounce` reads both into one `BounceReport` per
recipient, and returns the original message's header section (the third part of a DSN, RFC
3464 2.1, or the copy a text bounce appends) so the caller can find the message in the queue:
by its Message-ID, or by the queue id in the relay's own `Received:` line, the trace field the
relay adds on acceptance (`by HOST (relay) with ESMTPSA id QUEUE-ID`, RFC 5321 4.4).

Bounces come from the Internet, so every input is hostile: `parse_bounce` never raises.
Truncated or garbled MIME, missing parts, a DSN without recipients or plain junk give an empty
result whose `problem` says why, for the caller to log and count. Input beyond `max_bytes` is
cut there first: the report parts come before the returned message, so a cut loses at most the
copy of the original, and at most a few hundred MIME boundaries and a few thousand blank lines
are parsed. Parsing is CPU work (under 0.1 s per MB of ordinary mail, about a second for the
worst crafted input measured): callers on the event loop run it in an executor.

What a status and diagnostic mean for the address is `relay.feedback.classify`'s job.
"""

import email.policy
import functools
import html
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email import headerregistry
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses

from relay.feedback.classify import reply_status, reply_text

MAX_BYTES = 2 * 1024 * 1024  # a bounce's report parts are a few KB; the rest is the copy
_MAX_TEXT = 256 * 1024  # characters of human-readable text searched for a text bounce
_MAX_PARTS = 200  # MIME parts visited
_MAX_DEPTH = 8  # nesting of multiparts and attached messages
_MAX_FIELDS = 500  # header fields kept per block
_MAX_RECIPIENTS = 1000  # per-recipient blocks read from one report
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
_ADDRESS = re.compile(r"[^\s<>()\[\]@\",;:]+@[A-Za-z0-9\-_.\[\]:]+[A-Za-z0-9\]]")
_TYPED = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9.+-]*)\s*;\s*(.*)", re.DOTALL)  # "rfc822; addr"
_UTF8_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")  # RFC 6533 3: embedded-unicode-char
# The relay's own trace field, from relay.smtp.handler: "by HOST (relay) with PROTO id UUID".
_RELAY_RECEIVED = re.compile(r"\bby\s+\S+\s+\(relay\)\s+with\s+\S+\s+id\s+([0-9A-Fa-f-]{32,36})\b")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


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
        if _ADDRESS.fullmatch(address):
            found.append(address)
    return tuple(found)


@dataclass(frozen=True)
class OriginalMessage:
    """The header section of the message a report is about (RFC 3464 2.1's third part,
    RFC 5965 2 (d)), in order, values unfolded."""

    headers: tuple[tuple[str, str], ...]

    def get_all(self, name: str) -> tuple[str, ...]:
        key = name.lower()
        return tuple(value for field, value in self.headers if field.lower() == key)

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def as_dict(self) -> dict[str, list[str]]:
        """Field name (lower case) to its values, in order."""
        fields: dict[str, list[str]] = {}
        for name, value in self.headers:
            fields.setdefault(name.lower(), []).append(value)
        return fields

    @property
    def message_id(self) -> str | None:
        """The Message-ID as the relay stores it (`<left@right>`); a value without angle
        brackets (as in RFC 5965's own example) is given as written."""
        value = self.get("Message-ID")
        if not value:
            return None
        match = _MESSAGE_ID.search(value)
        return match.group(0) if match else value.split()[0]

    @property
    def queue_id(self) -> str | None:
        """The relay's queue id from its own `Received:` field. The relay puts its field on
        top of what the client sent, so the first match is ours, and one a client forged
        further down is never read."""
        for value in self.received:
            match = _RELAY_RECEIVED.search(value)
            if match:
                try:
                    return str(uuid.UUID(match.group(1)))
                except ValueError:
                    continue
        return None

    @property
    def received(self) -> tuple[str, ...]:
        return self.get_all("Received")

    @property
    def to(self) -> tuple[str, ...]:
        return tuple(a for value in self.get_all("To") for a in addresses(value))


@dataclass(frozen=True)
class BounceReport:
    recipient: str  # the address we sent to: Original-Recipient if given, else Final-Recipient
    status: str  # RFC 3463 code, e.g. "5.1.1"
    action: str  # RFC 3464 2.3.3: failed, delayed, delivered, relayed, expanded
    diagnostic: str  # the remote reply or the reporting MTA's reason, one line
    remote_mta: str | None
    original_envelope_id: str | None  # RFC 3464 2.2.1 (our ENVID, if we gave one)
    original_message_id: str | None
    final_recipient: str | None = None

    @property
    def failed(self) -> bool:
        return self.action == "failed"


@dataclass(frozen=True)
class ParseResult:
    reports: tuple[BounceReport, ...]
    original: OriginalMessage | None = None
    shape: str | None = None  # "rfc3464", "qmail", "exim", "postfix", "exchange", "gmail", "yahoo"
    problem: str | None = None  # why there are no reports; None when there are

    @property
    def queue_id(self) -> str | None:
        return self.original.queue_id if self.original else None

    @property
    def message_id(self) -> str | None:
        return self.original.message_id if self.original else None


# --- MIME helpers, shared with relay.feedback.arf ----------------------------------------


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


def original_from_text(text: str) -> OriginalMessage | None:
    fields = header_block(lines_of(text))
    return OriginalMessage(fields) if fields else None


def original_from_part(part: Message) -> OriginalMessage | None:
    """The header section of an attached message (message/rfc822, RFC 6532's message/global)
    or header block (text/rfc822-headers of RFC 6522, message/global-headers of RFC 6533)."""
    ctype = content_type(part)
    if ctype in ("message/rfc822", "message/global", "message/global-headers"):
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            fields = fields_of(payload[0])
            return OriginalMessage(fields) if fields else None
        return original_from_text(payload if isinstance(payload, str) else "")
    if ctype == "text/rfc822-headers":
        return original_from_text(text_of(part))
    return None


ORIGINAL_TYPES = frozenset(
    {"message/rfc822", "message/global", "message/global-headers", "text/rfc822-headers"}
)


def first_original(message: Message) -> OriginalMessage | None:
    for part in walk(message):
        if part is not message and content_type(part) in ORIGINAL_TYPES:
            original = original_from_part(part)
            if original is not None:
                return original
    return None


# --- RFC 3464 ------------------------------------------------------------------------------

_DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_RECIPIENT_FIELDS = frozenset({"final-recipient", "original-recipient", "action", "status"})


def _text_blocks(text: str) -> list[tuple[tuple[str, str], ...]]:
    """Field blocks separated by blank lines, for a status part the parser left as text."""
    blocks = []
    lines = lines_of(text)
    index = 0
    while index < len(lines) and len(blocks) <= _MAX_RECIPIENTS:
        while index < len(lines) and not lines[index].strip():
            index += 1
        if index >= len(lines):
            break
        end = index
        while end < len(lines) and lines[end].strip():
            end += 1
        block = header_block(lines[index:end])
        if block:
            blocks.append(block)
        index = end
    return blocks


def _status_blocks(part: Message) -> list[tuple[tuple[str, str], ...]]:
    """The field blocks of a delivery-status part: the parser gives message/delivery-status
    as a list of header blocks; message/global-delivery-status (RFC 6533) as one message whose
    body holds the blocks after the first."""
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = [p for p in payload[: _MAX_RECIPIENTS + 1] if isinstance(p, Message)]
        if content_type(part) == "message/delivery-status":
            return [fields_of(b) for b in blocks]
        if blocks:
            rest = blocks[0].get_payload()
            return [fields_of(blocks[0]), *_text_blocks(rest if isinstance(rest, str) else "")]
        return []
    return _text_blocks(payload if isinstance(payload, str) else text_of(part))


def _typed_value(value: str | None) -> str | None:
    """The value of an `address-type ; address` or `mta-name-type ; mta-name` field (RFC 3464
    2.2.2, 2.3.1), RFC 6533 \\x{HEX} escapes decoded, angle brackets dropped."""
    if not value:
        return None
    match = _TYPED.fullmatch(value)
    text = match.group(2) if match else value
    text = _UTF8_ESCAPE.sub(_unescape, text).strip().strip("<>").strip()
    return text or None


def _unescape(match: re.Match[str]) -> str:
    code = int(match.group(1), 16)
    return chr(code) if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else match.group(0)


def _diagnostic(value: str | None) -> str:
    """A Diagnostic-Code (RFC 3464 2.3.6) without its `smtp;` type, as one line."""
    if not value:
        return ""
    match = _TYPED.fullmatch(value)
    return reply_text(match.group(2) if match else value)


def _mta(value: str | None) -> str | None:
    """A Remote-MTA's host name (RFC 3464 2.3.5): 'dns; mx.example.org. (192.0.2.1, ...)'."""
    text = _typed_value(value)
    if not text:
        return None
    return text.split()[0].rstrip(".") or None


def _default_status(action: str) -> str:
    return {"failed": "5.0.0", "delayed": "4.0.0"}.get(action, "2.0.0")


def _action_from_status(status: str | None) -> str:
    return {"5": "failed", "4": "delayed", "2": "delivered"}.get((status or "0")[0], "failed")


def _status_field(value: str | None) -> str | None:
    match = re.match(r"\s*([245]\.\d{1,3}\.\d{1,3})", value or "")
    return match.group(1) if match else None


def _from_dsn(part: Message, original: OriginalMessage | None) -> list[BounceReport]:
    blocks = _status_blocks(part)
    if not blocks:
        return []
    per_message: dict[str, str] = {}
    if not _RECIPIENT_FIELDS & {name.lower() for name, _ in blocks[0]}:
        per_message = {name.lower(): value for name, value in reversed(blocks[0])}
        blocks = blocks[1:]
    envelope_id = per_message.get("original-envelope-id") or None
    message_id = original.message_id if original else None
    reports = []
    for block in blocks[:_MAX_RECIPIENTS]:
        fields = {name.lower(): value for name, value in reversed(block)}  # first one wins
        final = _typed_value(fields.get("final-recipient"))
        recipient = _typed_value(fields.get("original-recipient")) or final
        if not recipient:
            continue
        diagnostic = _diagnostic(fields.get("diagnostic-code"))
        status = _status_field(fields.get("status")) or reply_status(diagnostic)
        action = (fields.get("action") or "").split(" ")[0].lower() or _action_from_status(status)
        reports.append(
            BounceReport(
                recipient=recipient,
                status=status or _default_status(action),
                action=action,
                diagnostic=diagnostic or clean(fields.get("status", "")),
                remote_mta=_mta(fields.get("remote-mta")),
                original_envelope_id=envelope_id,
                original_message_id=message_id,
                final_recipient=final,
            )
        )
    return reports


# --- the text shapes -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Hit:
    recipient: str
    diagnostic: str
    remote_mta: str | None = None
    action: str = "failed"


# Where the copy of the original starts in a text bounce.
_COPY_MARKERS = re.compile(
    r"^(?:--- Below this line is a copy of the message\."  # qmail, Yahoo
    r"|-+ This is a copy of the message.*-+"  # Exim: "... including all the headers."
    r"|-+ The header of the original message is following\. -+"
    r"|Original message headers:"  # Exchange
    r"|-+ ?Original message ?-+"  # Gmail (legacy), sendmail
    r"|-+ ?Returned message ?-+"
    r"|-+ ?Undelivered Message Headers ?-+)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_ANGLE = re.compile(
    r"<([^<>\s]+@[^<>\s]+)>(?:\s*\((?:expanded|generated) from [^)]*\))?:[ \t]*(.*)"
)
_REPLY_START = re.compile(r"(?<![\w.])[245]\d\d(?=[ -]|:\s)")
_HOST = re.compile(r"\bhost\s+([A-Za-z0-9][A-Za-z0-9.-]*)\s*\[", re.IGNORECASE)  # Postfix, Exim
_QMAIL_HOST = re.compile(
    r"(?:^|\s)(?:Giving up on|Connected to)\s+([0-9A-Fa-f.:]*[0-9A-Fa-f])"
    r"|^([0-9A-Fa-f.:]*[0-9A-Fa-f]) does not like recipient"
)
# Postfix "host X[ip] said:", qmail "Remote host said:"
_SAID = re.compile(r"\bsaid:\s*", re.IGNORECASE)
_GIVING_UP = re.compile(r"\s*Giving up on \S+\s*$")
_IN_REPLY_TO = re.compile(r"\s*\(in reply to [^)]*\)\s*$", re.IGNORECASE)
_DELAY_WORDS = re.compile(
    r"THIS IS A WARNING ONLY|has not yet been delivered|Delay reason|"
    r"delivery to the following recipients? (?:has been )?delayed|will (?:keep )?retry",
    re.IGNORECASE,
)


def _reply_in(text: str) -> tuple[str, str | None]:
    """The remote reply in a reason text, and the remote host it names."""
    text = " ".join(text.split())
    host = None
    match = _HOST.search(text)
    if match:
        host = match.group(1).rstrip(".")
    else:
        qmail = _QMAIL_HOST.search(text)
        if qmail:
            host = qmail.group(1) or qmail.group(2)
    said = _SAID.search(text)
    if said:
        text = text[said.end() :]
    else:
        start = _REPLY_START.search(text)
        if start:
            text = text[start.start() :]
    return reply_text(_IN_REPLY_TO.sub("", _GIVING_UP.sub("", text))), host


def _angle_hits(lines: list[str], action: str) -> list[_Hit]:
    """`<address>: reason` blocks: Postfix puts the reason on the same line and indented lines
    after it; qmail and Yahoo put it on the lines that follow. A block ends at a blank line."""
    hits: list[_Hit] = []
    current: tuple[str, list[str]] | None = None
    for line in lines:
        if _COPY_MARKERS.match(line) or len(hits) >= _MAX_RECIPIENTS:
            break
        match = _ANGLE.fullmatch(line.rstrip())
        if match:
            if current is not None:
                hits.append(_angle_hit(current, action))
            current = (match.group(1), [match.group(2)] if match.group(2).strip() else [])
        elif current is not None:
            if line.strip():
                current[1].append(line.strip())
            elif current[1]:
                hits.append(_angle_hit(current, action))
                current = None
    if current is not None:
        hits.append(_angle_hit(current, action))
    return hits


def _angle_hit(block: tuple[str, list[str]], action: str) -> _Hit:
    diagnostic, host = _reply_in(" ".join(block[1]))
    return _Hit(block[0], diagnostic, host, action)


_EXIM_ADDRESS = re.compile(r" {1,3}<?([^\s<>@]+@[^\s<>@:]+?)>?:?(?:\s+(.*))?")


def _exim_hits(lines: list[str], action: str) -> list[_Hit]:
    """Exim: each address indented two spaces, its reason on lines indented further."""
    hits: list[_Hit] = []
    current: tuple[str, list[str]] | None = None
    for line in lines:
        if _COPY_MARKERS.match(line) or len(hits) >= _MAX_RECIPIENTS:
            break
        indent = len(line) - len(line.lstrip(" "))
        match = _EXIM_ADDRESS.fullmatch(line.rstrip()) if 1 <= indent <= 3 else None
        if match:
            if current is not None:
                hits.append(_exim_hit(current, action))
            current = (match.group(1), [match.group(2)] if match.group(2) else [])
        elif current is not None and indent >= 4 and line.strip():
            current[1].append(line.strip())
        elif current is not None:
            hits.append(_exim_hit(current, action))
            current = None
    if current is not None:
        hits.append(_exim_hit(current, action))
    return hits


def _exim_hit(block: tuple[str, list[str]], action: str) -> _Hit:
    reason = [line for line in block[1] if not line.startswith("(generated from")]
    text = " ".join(reason)
    text = re.sub(r"^Delay reason:\s*", "", text)
    diagnostic, host = _reply_in(text)
    return _Hit(block[0], diagnostic or reply_text(text), host, action)


_EXCHANGE_REPLY = re.compile(
    r"Remote Server returned '([^'\n]{1,1000})'|^\s*#\s*([245]\d\d[ -][^#\n]{0,1000}?)\s*##",
    re.IGNORECASE,
)


def _exchange_hits(lines: list[str], action: str) -> list[_Hit]:
    """Exchange: the address on its own line, then "Remote Server returned '550 5.1.10 ...'"
    (Exchange Online) or "#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##" (Exchange
    2007-2013) on a following line."""
    hits: list[_Hit] = []
    last_address = None
    for line in lines:
        if _COPY_MARKERS.match(line) or len(hits) >= _MAX_RECIPIENTS:
            break
        match = _EXCHANGE_REPLY.search(line)
        if match and last_address:
            reply = reply_text(match.group(1) or match.group(2))
            hits.append(_Hit(last_address, reply, None, action))
            last_address = None
            continue
        found = _ADDRESS.search(line)
        if found and line.strip().startswith(found.group(0).rstrip(".")):
            last_address = found.group(0).rstrip(".")
    return hits


_GMAIL_LIST = re.compile(
    r"Delivery to the following recipients? (?:failed permanently|has been delayed|"
    r"failed|was delayed)",
    re.IGNORECASE,
)
_GMAIL_REPLY = re.compile(
    r"^(?:The error that the other server returned was|The response(?: from the remote server)? "
    r"was):?\s*$",
    re.IGNORECASE,
)
_GMAIL_WASNT = re.compile(r"(?:wasn't|was not|couldn't be) delivered to\s+(\S+@[^\s,]*[A-Za-z0-9])")
_GMAIL_BY_HOST = re.compile(r"\bby ([A-Za-z0-9.-]+?)\.?\s*\[[^\]]+\]")


def _gmail_hits(lines: list[str], action: str) -> list[_Hit]:
    """Gmail: the recipients under "Delivery to the following recipient failed permanently:"
    (older) or in "Your message wasn't delivered to X because ..." (newer); the reply under
    "The error that the other server returned was:" or "The response was:"."""
    recipients: list[str] = []
    reply: list[str] = []
    host = None
    listing = False
    for index, line in enumerate(lines):
        if _COPY_MARKERS.match(line):
            break
        if _GMAIL_LIST.search(line):
            listing = True
            continue
        if listing:
            found = _ADDRESS.search(line)
            if found and line.startswith((" ", "\t")):
                recipients.append(found.group(0).rstrip("."))
                continue
            if line.strip():
                listing = False
        wasnt = _GMAIL_WASNT.search(line + " ")
        if wasnt and wasnt.group(1) not in recipients:
            recipients.append(wasnt.group(1))
        by_host = _GMAIL_BY_HOST.search(line)
        if by_host and host is None:
            host = by_host.group(1)
        if _GMAIL_REPLY.match(line.strip()) and not reply:
            for follow in lines[index + 1 :]:
                if not follow.strip():
                    if reply:
                        break
                    continue
                reply.append(follow.strip())
    if not reply:
        return []
    diagnostic = reply_text("\n".join(reply))
    return [_Hit(r, diagnostic, host, action) for r in recipients[:_MAX_RECIPIENTS]]


_SHAPES = (
    ("qmail", re.compile(r"This is the qmail-send program", re.IGNORECASE), _angle_hits),
    (
        "yahoo",
        re.compile(r"Sorry, we were unable to deliver your message to the following", re.I),
        _angle_hits,
    ),
    (
        "exim",
        re.compile(r"This message was created automatically by mail delivery software", re.I),
        _exim_hits,
    ),
    (
        "exchange",
        re.compile(
            r"Remote Server returned '|Delivery has failed to these recipients|"
            r"^\s*#\s*[245]\d\d[ -].*##",
            re.IGNORECASE | re.MULTILINE,
        ),
        _exchange_hits,
    ),
    (
        "gmail",
        re.compile(
            r"Delivery to the following recipients? |The email account that you tried to reach|"
            r"\*\* (?:Address not found|Message not delivered|Message blocked) \*\*",
            re.IGNORECASE,
        ),
        _gmail_hits,
    ),
    (
        "postfix",
        re.compile(r"This is the (?:mail system|Postfix program) at host|The mail system", re.I),
        _angle_hits,
    ),
)


def _from_text(text: str) -> tuple[str | None, list[_Hit]]:
    lines = lines_of(text)
    action = "delayed" if _DELAY_WORDS.search(text) else "failed"
    for shape, signature, read in _SHAPES:
        if signature.search(text):
            hits = read(lines, action)
            if hits:
                return shape, hits
    hits = _angle_hits(lines, action)  # "<address>: reason" is the common denominator
    return ("text", hits) if hits else (None, [])


def _original_in_text(text: str) -> OriginalMessage | None:
    marker = _COPY_MARKERS.search(text)
    if marker is None:
        return None
    return original_from_text(text[marker.end() :].lstrip("\r\n"))


# --- the public function -------------------------------------------------------------------


def parse_bounce(raw: bytes, *, max_bytes: int = MAX_BYTES) -> ParseResult:
    """Read a bounce into per-recipient reports. Never raises: anything it cannot read gives
    `ParseResult(reports=(), problem=...)`."""
    try:
        return _parse(raw, max_bytes)
    except Exception as exc:  # hostile input must not take the caller down; say what broke
        return ParseResult((), problem=f"unreadable message ({type(exc).__name__})")


def _parse(raw: bytes, max_bytes: int) -> ParseResult:
    if not isinstance(raw, bytes | bytearray) or not raw.strip():
        return ParseResult((), problem="empty input")
    cut = len(raw) > max_bytes
    message = parse_bytes(bytes(raw), max_bytes)
    suffix = f" (input cut at {max_bytes} bytes)" if cut else ""
    status_part = None
    if content_type(message) == "multipart/report":
        status_part = next((p for p in walk(message) if content_type(p) in _DSN_TYPES), None)
    original = first_original(message)
    if status_part is not None:
        reports = _from_dsn(status_part, original)
        if reports:
            return ParseResult(tuple(reports), original, "rfc3464")
    text = human_text(message)
    shape, hits = _from_text(text)
    if original is None:
        original = _original_in_text(text)
    if hits:
        message_id = original.message_id if original else None
        reports = tuple(
            BounceReport(
                recipient=hit.recipient,
                status=reply_status(hit.diagnostic) or _default_status(hit.action),
                action=hit.action,
                diagnostic=hit.diagnostic,
                remote_mta=hit.remote_mta,
                original_envelope_id=None,
                original_message_id=message_id,
                final_recipient=hit.recipient,
            )
            for hit in hits
        )
        return ParseResult(reports, original, shape)
    if status_part is not None:
        problem = "delivery-status report without per-recipient fields"
    elif content_type(message) == "multipart/report":
        problem = "multipart/report without a delivery-status part"
    else:
        problem = "no delivery status found"
    return ParseResult((), original, None, problem + suffix)
