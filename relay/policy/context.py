"""What the checks look at: the tenant, the envelope and the message, parsed once.

The message is parsed lazily, the first time a DATA check asks, with the standard library's
`email` package and its modern policy, and then shared by every check. Whether a message is
bulk follows POLICY.md: the tenant's stream says so, or the message carries
`Precedence: bulk|list`, `List-Id` or `Feedback-ID`.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from email.utils import getaddresses
from functools import cached_property
from typing import TYPE_CHECKING, Literal, Protocol

from relay.config.schema import TenantSection
from relay.mail.address import AddressError, to_a_label
from relay.policy.mime import Reading
from relay.policy.phrasebook import Found
from relay.policy.render import Rendered
from relay.policy.words import MessageWords

if TYPE_CHECKING:  # the check that reads the footer imports this module
    from relay.policy.checks.identity import Footer

Phase = Literal["connect", "mail", "rcpt", "data"]
_PARSER = BytesParser(policy=default)


def parse_headers(raw: bytes) -> EmailMessage:
    """The message's header block, parsed by the standard library (its modern policy) as it
    parses a whole message, without the body: the checks of headers need nothing more, and
    the body's text comes from `relay.policy.mime` (on a multipart newsletter the whole
    parser costs many times what the header block alone does)."""
    end = raw.find(b"\r\n\r\n")
    head = _PARSER.parsebytes(raw if end < 0 else raw[: end + 4], headersonly=True)
    assert isinstance(head, EmailMessage)
    return head


def _utf8(value: str) -> str:
    """A raw header value parsed from bytes holds 8-bit octets as surrogates: make them the
    UTF-8 text they are (RFC 6532 allows UTF-8 in headers)."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class Suppressed(Protocol):
    reason: str
    since: datetime


class Suspended(Protocol):
    rule: str
    reason: str


class LookupUnavailable(Exception):
    """The shared state a check reads cannot be read now (the database is down). The
    pipeline turns it into a deferral of the check's rule (451 4.3.0): judging without the
    suppression list or the consent records would be guessing, and the client retries."""

    def __init__(self, what: str, cause: Exception) -> None:
        super().__init__(f"{what} unavailable ({type(cause).__name__})")


class Lookups(Protocol):
    """The shared state the RCPT and DATA checks read (P-SUPPRESS, P-CONSENT-RECORD,
    P-COMPLAINT...), served by the queue's stores; an outage raises `LookupUnavailable`."""

    async def suppression(self, tenant: str, address: str, key: str | None) -> Suppressed | None:
        """The suppression entry of `address` (or of its keyed hash `key`), if any."""

    async def without_consent(self, tenant: str, addresses: Sequence[str]) -> list[str]:
        """Those of `addresses` the tenant holds no consent record of."""

    async def suspensions(self, tenant: str) -> Sequence[Suspended]:
        """The tenant's open suspensions of bulk sending (P-COMPLAINT, P-BOUNCE, P-SUSPEND)."""


@dataclass
class Readings:
    """What the text rules read of the message, made once and shared by every check that
    needs it (`relay.policy.reading`); None until the first check asks."""

    mime: Reading | None = None
    rendered: Rendered | None = None
    words: MessageWords | None = None
    phrases: Found | None = None
    footer: "Footer | None" = None


@dataclass
class PolicyContext:
    tenant: TenantSection
    mail_from: str = ""
    recipients: list[str] = field(default_factory=list)
    raw: bytes = b""
    lookups: Lookups | None = None
    """For checks that look up shared state (suppressions, consent, suspensions); None
    when run offline."""
    domain_failures: Mapping[str, frozenset[str]] | None = None
    """Per recorded sending domain, the verification checks it failed (empty when it
    passed: spf, dkim, dmarc, whois); None when not required (or offline)."""
    service_contacts: tuple[str, ...] = ()
    """The sending service's own contacts (P-NO-SERVICE-CONTACT)."""
    readings: Readings = field(default_factory=Readings)
    """What the text rules read of the message, once for all of them."""
    add_unsubscribe: bool = False
    """P-UNSUB's decision: the relay adds the List-Unsubscribe fields (RFC 8058) to this
    message before signing, the tenant having asked for it."""
    signing_domains: frozenset[str] | None = None
    """Domains that hold an active DKIM key (P-DKIM); None when not known (offline)."""
    allow_unsigned: bool = False
    """`[dkim] allow_unsigned`: mail without a key of its domain may leave unsigned."""
    content_categories: frozenset[str] | None = None
    """`[policy] content_categories`: the P-CONTENT categories enforced; None: all."""
    max_mime_parts: int = 500
    """`[smtp] max_mime_parts`: MIME entities a message may have (P-SIZE)."""
    max_mime_depth: int = 10
    """`[smtp] max_mime_depth`: levels of MIME nesting a message may have (P-SIZE)."""

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
        """The header block (the body's text: `relay.policy.reading`)."""
        return parse_headers(self.raw)

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
