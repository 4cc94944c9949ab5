"""Bounces: what a returned message says about each of its recipients.

A bounce is either a delivery status notification (RFC 3464) inside an RFC 6522
`multipart/report; report-type=delivery-status`, whose `message/delivery-status` part holds one
block of fields about the message and one per recipient (RFC 3464 2.2, 2.3), or one of the
free-text shapes MTAs still send (`relay.feedback.reports.text_bounce`). `parse_bounce` reads both
into one `BounceReport` per recipient, and returns the original message's header section
(the third part of a DSN, RFC 3464 2.1, or the copy a text bounce appends) so the caller can
find the message in the queue:
by its Message-ID, or by the queue id in the relay's own `Received:` line, the trace field the
relay adds on acceptance (`by HOST (relay) with ESMTPSA id QUEUE-ID`, RFC 5321 4.4).

Bounces come from the Internet, so every input is hostile: `parse_bounce` never raises.
Truncated or garbled MIME, missing parts, a DSN without recipients or plain junk give an empty
result whose `problem` says why, for the caller to log and count. Input beyond `max_bytes` is
cut there first: the report parts come before the returned message, so a cut loses at most the
copy of the original, and at most a few hundred MIME boundaries and a few thousand blank lines
are parsed. Parsing is CPU work (under 0.1 s per MB of ordinary mail, about a second for the
worst crafted input measured): callers on the event loop run it in an executor.

What a status and diagnostic mean for the address is `relay.feedback.reports.classify`'s job.
"""

import re
from dataclasses import dataclass
from email.message import Message

from relay.feedback.reports.classify import reply_status, reply_text
from relay.feedback.reports.original import OriginalMessage, first_original
from relay.feedback.reports.text_bounce import MAX_RECIPIENTS, from_text, original_in_text
from relay.mail.mime import (
    MAX_BYTES,
    clean,
    content_type,
    fields_of,
    header_block,
    human_text,
    lines_of,
    parse_bytes,
    text_of,
    walk,
)

_TYPED = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9.+-]*)\s*;\s*(.*)", re.DOTALL)  # "rfc822; addr"
_UTF8_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")  # RFC 6533 3: embedded-unicode-char


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


# --- RFC 3464 ------------------------------------------------------------------------------

_DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_RECIPIENT_FIELDS = frozenset({"final-recipient", "original-recipient", "action", "status"})


def _text_blocks(text: str) -> list[tuple[tuple[str, str], ...]]:
    """Field blocks separated by blank lines, for a status part the parser left as text."""
    blocks = []
    lines = lines_of(text)
    index = 0
    while index < len(lines) and len(blocks) <= MAX_RECIPIENTS:
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
        blocks = [p for p in payload[: MAX_RECIPIENTS + 1] if isinstance(p, Message)]
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
    for block in blocks[:MAX_RECIPIENTS]:
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
    shape, hits = from_text(text)
    if original is None:
        original = original_in_text(text)
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
