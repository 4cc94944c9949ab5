"""Complaints: feedback-loop reports (ARF, RFC 5965) and abuse reports people forward.

A mailbox provider's feedback loop tells us a recipient pressed "this is spam" (P-COMPLAINT).
The standard shape is RFC 5965 2: a `multipart/report; report-type=feedback-report` whose
second part, `message/feedback-report`, holds the fields of section 3 (Feedback-Type,
User-Agent, Version required; Original-Mail-From, Arrival-Date, Source-IP, ... optional;
Original-Rcpt-To, Reported-Domain, Authentication-Results repeatable), and whose third part is
the reported message or its header section. Older reports written to drafts of the format use
`Received-Date` for Arrival-Date and Version 0.1 (AOL, Yahoo); both are read. Microsoft's JMRP
has sent a non-standard form too: a plain `multipart/mixed` with the reported message attached,
its recipient in the provider's `X-HmXmrOriginalRecipient` field.

The complainant is the reported message's envelope recipient (Original-Rcpt-To), else the
provider's own recipient field, else the original's single To address. Several providers
redact the address (RFC 6590); a redacted one is no address, so `complainant` is then None and
the only way back to the message and recipient is the relay's trace: the queue id in its
`Received:` field and the Message-ID, both exposed from the original's headers.

`parse_forwarded` serves the abuse desk (P-ABUSE-DESK): a person forwards unwanted mail as an
attachment, inline ("---------- Forwarded message ---------", "-----Original Message-----"),
or pastes its headers, and the relay needs the original's Message-ID, trace field, Received
lines and To.

Like `relay.feedback.reports.bounce`, nothing here raises on bad input: the result says what
was wrong.
"""

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.utils import parsedate_to_datetime

from relay.feedback.reports.original import ORIGINAL_TYPES, OriginalMessage, original_from_part
from relay.mail.mime import (
    MAX_BYTES,
    addresses,
    content_type,
    fields_of,
    header_block,
    lines_of,
    parse_bytes,
    raw_header,
    report_type,
    text_of,
    walk,
)

_MAX_TEXT = 256 * 1024
# RFC 6590 leaves the form of a redacted address to the provider; these are the usual ones.
_REDACTED_LOCAL = re.compile(r"[*#._-]*|x{3,}|.*redacted.*", re.IGNORECASE)
_JMRP_RECIPIENT = "X-HmXmrOriginalRecipient"  # Microsoft JMRP: the complainant's address


@dataclass(frozen=True)
class FeedbackReport:
    """One feedback report, its fields as RFC 5965 3 names them (lists for the repeatable
    ones), and what it says about the reported message."""

    feedback_type: str | None  # RFC 5965 7.3: abuse, fraud, other, virus (and not-spam, ...)
    user_agent: str | None
    version: str | None
    original_mail_from: str | None
    original_rcpt_to: tuple[str, ...]
    arrival_date: str | None  # as written; see `arrived_at`
    source_ip: str | None
    reported_domain: tuple[str, ...]
    reported_uri: tuple[str, ...]
    authentication_results: tuple[str, ...]
    reporting_mta: str | None
    original_envelope_id: str | None
    incidents: int | None
    original: OriginalMessage | None  # the reported message's header section
    complainant: str | None  # the recipient who complained; None when redacted or absent
    shape: str = "arf"  # "arf", or "jmrp" for Microsoft's non-ARF form

    @property
    def arrived_at(self) -> datetime | None:
        return _date(self.arrival_date)

    @property
    def message_id(self) -> str | None:
        return self.original.message_id if self.original else None

    @property
    def queue_id(self) -> str | None:
        return self.original.queue_id if self.original else None


@dataclass(frozen=True)
class ArfResult:
    report: FeedbackReport | None
    problem: str | None = None  # why there is no report; None when there is


@dataclass(frozen=True)
class ForwardedReport:
    """What a forwarded abuse report says about the message it complains about."""

    how: str | None  # "attachment", "inline" or "pasted"; None if nothing was found
    reporter: str | None  # the outer From: who reported (may differ from the original To)
    subject: str | None  # the outer Subject, for the abuse team's queue
    original: OriginalMessage | None
    problem: str | None = None

    @property
    def message_id(self) -> str | None:
        return self.original.message_id if self.original else None

    @property
    def queue_id(self) -> str | None:
        return self.original.queue_id if self.original else None

    @property
    def received(self) -> tuple[str, ...]:
        return self.original.received if self.original else ()

    @property
    def to(self) -> tuple[str, ...]:
        return self.original.to if self.original else ()


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _address(value: str | None) -> str | None:
    """One address from a field such as `<user@example.com>`, or None if it is redacted or is
    not an address at all (`<Undisclosed Recipients>`)."""
    found = addresses(value)
    if not found:
        return None
    local = found[0].rpartition("@")[0]
    return None if _REDACTED_LOCAL.fullmatch(local) else found[0]


def _source_ip(value: str | None) -> str | None:
    if not value:
        return None
    text = value.strip().strip("[]")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _incidents(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() and len(value) < 10 else None


def _complainant(rcpt_to: tuple[str, ...], original: OriginalMessage | None) -> str | None:
    """RFC 5965 3.2: Original-Rcpt-To is the envelope recipient, the best evidence. Then the
    provider's own field (JMRP), then the original's To if it names exactly one address."""
    for value in rcpt_to:
        address = _address(value)
        if address:
            return address
    if original is None:
        return None
    address = _address(original.get(_JMRP_RECIPIENT))
    if address:
        return address
    to = original.to
    return _address(to[0]) if len(to) == 1 else None


def _feedback_fields(part: Message) -> tuple[tuple[str, str], ...]:
    """The fields of a message/feedback-report part: the parser reads the part as a message
    whose header section is the fields; a part it left as text is read as one block."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return fields_of(payload[0])
    text = payload if isinstance(payload, str) else text_of(part)
    return header_block(lines_of(text))


def _report(
    fields: tuple[tuple[str, str], ...], original: OriginalMessage | None, shape: str
) -> FeedbackReport:
    single: dict[str, str] = {}
    multiple: dict[str, list[str]] = {}
    for name, value in fields:
        key = name.lower()
        single.setdefault(key, value)
        multiple.setdefault(key, []).append(value)
    rcpt_to = tuple(multiple.get("original-rcpt-to", []))
    return FeedbackReport(
        feedback_type=(single.get("feedback-type") or "").lower() or None,
        user_agent=single.get("user-agent"),
        version=single.get("version"),
        original_mail_from=(addresses(single.get("original-mail-from")) or (None,))[0],
        original_rcpt_to=tuple(a for value in rcpt_to for a in addresses(value)),
        arrival_date=single.get("arrival-date") or single.get("received-date"),
        source_ip=_source_ip(single.get("source-ip")),
        reported_domain=tuple(multiple.get("reported-domain", [])),
        reported_uri=tuple(multiple.get("reported-uri", [])),
        authentication_results=tuple(multiple.get("authentication-results", [])),
        reporting_mta=single.get("reporting-mta"),
        original_envelope_id=single.get("original-envelope-id"),
        incidents=_incidents(single.get("incidents")),
        original=original,
        complainant=_complainant(rcpt_to, original),
        shape=shape,
    )


def _attached_originals(message: Message, *, into_messages: bool) -> list[OriginalMessage]:
    found = []
    for part in walk(message, into_messages=into_messages):
        if part is not message and content_type(part) in ORIGINAL_TYPES:
            original = original_from_part(part)
            if original is not None:
                found.append(original)
    return found


_JMRP_SUBJECT = re.compile(r"complaint about message from\s+\[?([0-9A-Fa-f.:]+)", re.IGNORECASE)


def parse_arf(raw: bytes, *, max_bytes: int = MAX_BYTES) -> ArfResult:
    """Read a feedback-loop report. Never raises: anything unreadable gives
    `ArfResult(None, problem=...)`."""
    try:
        return _parse_arf(raw, max_bytes)
    except Exception as exc:  # hostile input must not take the caller down; say what broke
        return ArfResult(None, f"unreadable message ({type(exc).__name__})")


def _parse_arf(raw: bytes, max_bytes: int) -> ArfResult:
    if not isinstance(raw, bytes | bytearray) or not raw.strip():
        return ArfResult(None, "empty input")
    message = parse_bytes(bytes(raw), max_bytes)
    originals = _attached_originals(message, into_messages=False)
    original = originals[0] if originals else None
    if content_type(message) == "multipart/report" and report_type(message) == "feedback-report":
        part = next(
            (p for p in walk(message) if content_type(p) == "message/feedback-report"), None
        )
        if part is None:
            return ArfResult(None, "feedback report without a message/feedback-report part")
        fields = _feedback_fields(part)
        if not fields:
            return ArfResult(None, "message/feedback-report part without fields")
        return ArfResult(_report(fields, original, "arf"))
    jmrp = next((o for o in originals if o.get(_JMRP_RECIPIENT) is not None), None)
    if jmrp is not None:
        subject = _JMRP_SUBJECT.search(raw_header(message, "Subject") or "")
        fields = (("Feedback-Type", "abuse"),)
        if subject:
            fields += (("Source-IP", subject.group(1)),)
        return ArfResult(_report(fields, jmrp, "jmrp"))
    return ArfResult(None, "not a feedback report (multipart/report; report-type=feedback-report)")


# --- forwarded abuse reports ---------------------------------------------------------------

_FORWARD_MARKERS = re.compile(
    r"^\s*(?:-{3,}\s*Forwarded message\s*-{3,}"  # Gmail
    r"|-{3,}\s*Original Message\s*-{3,}"  # Outlook
    r"|-{3,}\s*Forwarded Message\s*-{3,}"  # Thunderbird
    r"|Begin forwarded message:"  # Apple Mail
    r"|-{3,}\s*Weitergeleitete Nachricht\s*-{3,}"
    r"|-{3,}\s*Message transféré\s*-{3,})\s*$",
    re.IGNORECASE | re.MULTILINE,
)
# Fields that start a pasted header section; one of them must begin the block.
_PASTED_START = re.compile(
    r"^(?:Return-Path|Received|Delivered-To|X-Original-To|Message-ID|DKIM-Signature|"
    r"ARC-Seal|Authentication-Results|From|To|Subject|Date|MIME-Version):",
    re.IGNORECASE,
)
_QUOTE = re.compile(r"^(?:\s*>)+ ?")
_INLINE_NAMES = {"sent": "Date"}  # Outlook writes "Sent:" for the date


def _traced(original: OriginalMessage | None) -> bool:
    return original is not None and (original.queue_id is not None or bool(original.received))


def _pasted(lines: list[str]) -> OriginalMessage | None:
    """The first header section pasted into the text that carries a trace (Received lines or
    a Message-ID)."""
    tries = 0
    for index, line in enumerate(lines):
        if not _PASTED_START.match(line):
            continue
        tries += 1
        if tries > 50:
            break
        fields = header_block(lines, index)
        original = OriginalMessage(fields)
        if original.received or original.message_id:
            return original
    return None


def _inline(lines: list[str]) -> OriginalMessage | None:
    """The pseudo-header block a mail client writes under its forward marker."""
    text = "\n".join(lines)
    marker = _FORWARD_MARKERS.search(text)
    if marker is None:
        return None
    fields = header_block(lines_of(text[marker.end() :].lstrip("\r\n")))
    fields = tuple((_INLINE_NAMES.get(name.lower(), name), value) for name, value in fields)
    return OriginalMessage(fields) if fields else None


def _forward_text(message: Message) -> str:
    """The reporter's own text: the text/plain parts outside attachments, else the HTML."""
    plain, markup = [], []
    for part in walk(message):
        disposition = (raw_header(part, "Content-Disposition") or "").lower()
        if disposition.startswith("attachment"):
            continue
        ctype = content_type(part)
        if ctype == "text/plain":
            plain.append(text_of(part))
        elif ctype == "text/html":
            markup.append(text_of(part))
    text = "\n".join(plain) if any(t.strip() for t in plain) else "\n".join(markup)
    return text[:_MAX_TEXT]


def parse_forwarded(raw: bytes, *, max_bytes: int = MAX_BYTES) -> ForwardedReport:
    """Find the reported message in an abuse report a person sent. Never raises."""
    try:
        return _parse_forwarded(raw, max_bytes)
    except Exception as exc:  # hostile input must not take the caller down; say what broke
        return ForwardedReport(None, None, None, None, f"unreadable message ({type(exc).__name__})")


def _parse_forwarded(raw: bytes, max_bytes: int) -> ForwardedReport:
    if not isinstance(raw, bytes | bytearray) or not raw.strip():
        return ForwardedReport(None, None, None, None, "empty input")
    message = parse_bytes(bytes(raw), max_bytes)
    reporter = (addresses(raw_header(message, "From")) or (None,))[0]
    subject = raw_header(message, "Subject") or None

    attached = _attached_originals(message, into_messages=True)
    if attached:
        # A forward of a forward nests; the copy with the relay's trace is the one we sent.
        best = next((o for o in attached if o.queue_id), None) or next(
            (o for o in attached if _traced(o) or o.message_id), attached[0]
        )
        return ForwardedReport("attachment", reporter, subject, best)

    lines = [_QUOTE.sub("", line) for line in lines_of(_forward_text(message))]
    pasted = _pasted(lines)
    if pasted is not None and _traced(pasted):
        return ForwardedReport("pasted", reporter, subject, pasted)
    inline = _inline(lines)
    if inline is not None:
        return ForwardedReport("inline", reporter, subject, inline)
    if pasted is not None:
        return ForwardedReport("pasted", reporter, subject, pasted)
    return ForwardedReport(None, reporter, subject, None, "no forwarded message found")
