"""What the checks look at: the tenant, the envelope and the message, parsed once.

The message is parsed lazily, the first time a DATA check asks, with the standard library's
`email` package and its modern policy, and then shared by every check. Whether a message is
bulk follows POLICY.md: the tenant's stream says so, or the message carries
`Precedence: bulk|list`, `List-Id` or `Feedback-ID`.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from email.utils import getaddresses
from functools import cached_property
from typing import Literal

import asyncpg

from relay.config.schema import TenantSection
from relay.smtp.address import AddressError, to_a_label

Phase = Literal["connect", "mail", "rcpt", "data"]
_PARSER = BytesParser(policy=default)


def parse(raw: bytes) -> EmailMessage:
    """The message as the standard library's parser makes it, for less when it has a single
    part (neither multipart/* nor message/*, as most mail is): then only the header block
    goes through the parser, and the body becomes the payload as it is. That is what the
    parser makes of such a body too (email.feedparser: every line after the headers, joined
    again), after splitting it into lines one by one in Python: 0.45 ms for 100 KB, against
    0.02 ms like this. Anything the header block alone cannot settle, a header block with no
    CRLF CRLF after it or one the parser ends early (a line that is not a header), takes the
    parser's whole way."""
    end = raw.find(b"\r\n\r\n")
    if end >= 0:
        head = _PARSER.parsebytes(raw[: end + 4], headersonly=True)
        assert isinstance(head, EmailMessage)
        if (
            head.get_content_maintype() not in ("multipart", "message")
            and not head.get_payload()
            and not head.defects
        ):
            head.set_payload(raw[end + 4 :].decode("ascii", "surrogateescape"))
            return head
    parsed = _PARSER.parsebytes(raw)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _utf8(value: str) -> str:
    """A raw header value parsed from bytes holds 8-bit octets as surrogates: make them the
    UTF-8 text they are (RFC 6532 allows UTF-8 in headers)."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


@dataclass
class PolicyContext:
    tenant: TenantSection
    mail_from: str = ""
    recipients: list[str] = field(default_factory=list)
    raw: bytes = b""
    database: "asyncpg.Pool | None" = None
    """For checks that look up shared state (suppressions); None when run offline."""
    domain_failures: Mapping[str, frozenset[str]] | None = None
    """Per recorded sending domain, the verification checks it failed (empty when it
    passed: spf, dkim, dmarc, whois); None when not required (or offline)."""
    service_contacts: tuple[str, ...] = ()
    """The sending service's own contacts (P-NO-SERVICE-CONTACT)."""
    extras: dict[str, object] = field(default_factory=dict)
    """What checks compute once and share (the visible text, say)."""
    signing_domains: frozenset[str] | None = None
    """Domains that hold an active DKIM key (P-DKIM); None when not known (offline)."""
    allow_unsigned: bool = False
    """`[dkim] allow_unsigned`: mail without a key of its domain may leave unsigned."""

    @property
    def campaign(self) -> str | None:
        """The campaign a bulk message belongs to: its Feedback-ID (the providers' feedback
        loops report by it), else its List-Id; None for other mail."""
        for name in ("Feedback-ID", "List-Id"):
            values = self.headers(name)
            if values:
                return values[0][:200]
        return None

    @cached_property
    def message(self) -> EmailMessage:
        return parse(self.raw)

    @cached_property
    def _raw_headers(self) -> list[tuple[str, str]]:
        return [(k.lower(), " ".join(_utf8(v).split())) for k, v in self.message.raw_items()]

    def headers(self, name: str) -> list[str]:
        """Every value of a header as sent, unfolded; not decoded, so cheap (the header
        registry's full parse costs far more than the checks need)."""
        name = name.lower()
        return [v for k, v in self._raw_headers if k == name]

    def decoded(self, name: str) -> list[str]:
        """Every value of a header with RFC 2047 encoded-words decoded (e.g. a Subject)."""
        return [str(v) for v in self.message.get_all(name, [])]

    @cached_property
    def from_domain(self) -> str | None:
        """The A-label domain of the first From address, if it has a valid one."""
        for _, address in getaddresses(self.headers("From")):
            local, at, domain = address.rpartition("@")
            if at and local:
                try:
                    return to_a_label(domain)
                except AddressError:
                    return None
        return None

    @cached_property
    def is_bulk(self) -> bool:
        if self.tenant.stream == "bulk":
            return True
        precedence = " ".join(self.headers("Precedence")).strip().lower()
        return (
            precedence in ("bulk", "list")
            or bool(self.headers("List-Id"))
            or bool(self.headers("Feedback-ID"))
        )
