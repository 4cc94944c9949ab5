"""Bounces in the free-text shapes MTAs still send instead of an RFC 3464 report: qmail,
Exim's text bounce, Postfix without MIME, Exchange's non-delivery report, Gmail's and
Yahoo's. Each shape is recognised by a signature line and read into one hit per failed
recipient (the address, the remote reply, the reporting host); "<address>: reason", common
to most of them, is the fallback. Bounded like every reader of hostile input: at most
`MAX_RECIPIENTS` hits, and nothing after the start of the returned copy is read as a
recipient.
"""

import re
from dataclasses import dataclass

from relay.feedback.reports.classify import reply_text
from relay.feedback.reports.original import OriginalMessage, original_from_text
from relay.mail.mime import ADDRESS, lines_of

MAX_RECIPIENTS = 1000  # per-recipient blocks read from one report


@dataclass(frozen=True)
class TextHit:
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


def _angle_hits(lines: list[str], action: str) -> list[TextHit]:
    """`<address>: reason` blocks: Postfix puts the reason on the same line and indented lines
    after it; qmail and Yahoo put it on the lines that follow. A block ends at a blank line."""
    hits: list[TextHit] = []
    current: tuple[str, list[str]] | None = None
    for line in lines:
        if _COPY_MARKERS.match(line) or len(hits) >= MAX_RECIPIENTS:
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


def _angle_hit(block: tuple[str, list[str]], action: str) -> TextHit:
    diagnostic, host = _reply_in(" ".join(block[1]))
    return TextHit(block[0], diagnostic, host, action)


_EXIM_ADDRESS = re.compile(r" {1,3}<?([^\s<>@]+@[^\s<>@:]+?)>?:?(?:\s+(.*))?")


def _exim_hits(lines: list[str], action: str) -> list[TextHit]:
    """Exim: each address indented two spaces, its reason on lines indented further."""
    hits: list[TextHit] = []
    current: tuple[str, list[str]] | None = None
    for line in lines:
        if _COPY_MARKERS.match(line) or len(hits) >= MAX_RECIPIENTS:
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


def _exim_hit(block: tuple[str, list[str]], action: str) -> TextHit:
    reason = [line for line in block[1] if not line.startswith("(generated from")]
    text = " ".join(reason)
    text = re.sub(r"^Delay reason:\s*", "", text)
    diagnostic, host = _reply_in(text)
    return TextHit(block[0], diagnostic or reply_text(text), host, action)


_EXCHANGE_REPLY = re.compile(
    r"Remote Server returned '([^'\n]{1,1000})'|^\s*#\s*([245]\d\d[ -][^#\n]{0,1000}?)\s*##",
    re.IGNORECASE,
)


def _exchange_hits(lines: list[str], action: str) -> list[TextHit]:
    """Exchange: the address on its own line, then "Remote Server returned '550 5.1.10 ...'"
    (Exchange Online) or "#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##" (Exchange
    2007-2013) on a following line."""
    hits: list[TextHit] = []
    last_address = None
    for line in lines:
        if _COPY_MARKERS.match(line) or len(hits) >= MAX_RECIPIENTS:
            break
        match = _EXCHANGE_REPLY.search(line)
        if match and last_address:
            reply = reply_text(match.group(1) or match.group(2))
            hits.append(TextHit(last_address, reply, None, action))
            last_address = None
            continue
        found = ADDRESS.search(line)
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


def _gmail_hits(lines: list[str], action: str) -> list[TextHit]:
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
            found = ADDRESS.search(line)
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
    return [TextHit(r, diagnostic, host, action) for r in recipients[:MAX_RECIPIENTS]]


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


def from_text(text: str) -> tuple[str | None, list[TextHit]]:
    lines = lines_of(text)
    action = "delayed" if _DELAY_WORDS.search(text) else "failed"
    for shape, signature, read in _SHAPES:
        if signature.search(text):
            hits = read(lines, action)
            if hits:
                return shape, hits
    hits = _angle_hits(lines, action)  # "<address>: reason" is the common denominator
    return ("text", hits) if hits else (None, [])


def original_in_text(text: str) -> OriginalMessage | None:
    marker = _COPY_MARKERS.search(text)
    if marker is None:
        return None
    return original_from_text(text[marker.end() :].lstrip("\r\n"))
