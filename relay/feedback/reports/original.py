"""The message a report is about, as the report quotes it: its header section (RFC 3464
2.1's third part, RFC 5965 2 (d), a text bounce's appended copy), and the ids in it that find
the message in the queue: the Message-ID, or the queue id in the relay's own `Received:` field.
"""

import re
import uuid
from dataclasses import dataclass
from email.message import Message

from relay.mail.mime import (
    addresses,
    content_type,
    fields_of,
    header_block,
    lines_of,
    text_of,
    walk,
)

# The relay's own trace field, added at submission: "by HOST (relay) with PROTO id UUID".
_RELAY_RECEIVED = re.compile(r"\bby\s+\S+\s+\(relay\)\s+with\s+\S+\s+id\s+([0-9A-Fa-f-]{32,36})\b")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


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
