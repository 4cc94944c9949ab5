"""P-HDR-FROM, P-HDR-ALIGN, P-HDR-SANE: truthful, well-formed identity headers (DATA phase).

Domains are compared as IDNA A-labels (UTS 46 through the `idna` library), so a look-alike
of a tenant domain in another script (`acme.example` spelt with a Cyrillic a) is a different
domain and is refused, as is any domain the tenant does not own.
"""

import re
from email.utils import getaddresses, parsedate_to_datetime

from relay.config.tenants import owning_domain, owns_domain
from relay.mail.address import AddressError, to_a_label
from relay.policy.context import PolicyContext
from relay.policy.verdict import Verdict

SINGLETONS = (
    "Date", "From", "Sender", "Reply-To", "To", "Cc", "Bcc",
    "Message-ID", "In-Reply-To", "References", "Subject",
)  # fmt: skip
"""RFC 5322 3.6: fields that may appear at most once."""

_MSG_ID = re.compile(r"^<[^<>@\s]+@[^<>@\s]+>$")
_BARE_NEWLINE = re.compile(r"\r(?!\n)|(?<!\r)\n(?![ \t])")  # a fold is CRLF + WSP


def _addresses(values: list[str]) -> list[str]:
    return [addr for _, addr in getaddresses(values)]


def _domain(address: str) -> str | None:
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return None
    try:
        return to_a_label(domain)
    except AddressError:
        return None


class FromHeader:
    """P-HDR-FROM: exactly one From with exactly one address in a tenant's domain."""

    rule = "P-HDR-FROM"
    phase = "data"

    async def check(self, ctx: PolicyContext) -> Verdict:
        values = ctx.headers("From")
        if len(values) != 1:
            return Verdict.reject(self.rule, f"the message has {len(values)} From headers, not 1")
        addresses = [a for a in _addresses(values) if a]
        if len(addresses) != 1:
            return Verdict.reject(self.rule, f"From holds {len(addresses)} addresses, not 1")
        domain = ctx.from_domain
        if domain is None:
            return Verdict.reject(self.rule, f"From address {addresses[0]!r} is malformed")
        if not owns_domain(ctx.tenant, domain):
            return Verdict.reject(
                self.rule,
                f"From domain {domain} is not a verified domain of tenant {ctx.tenant.name}",
            )
        return Verdict.ok(self.rule, f"From domain {domain} belongs to {ctx.tenant.name}")


class AlignedHeaders:
    """P-HDR-ALIGN: Sender and Reply-To use domains the tenant owns."""

    rule = "P-HDR-ALIGN"
    phase = "data"

    async def check(self, ctx: PolicyContext) -> Verdict:
        for name in ("Sender", "Reply-To"):
            for address in _addresses(ctx.headers(name)):
                domain = _domain(address)
                if domain is None or not owns_domain(ctx.tenant, domain):
                    return Verdict.reject(
                        self.rule,
                        f"{name} domain {domain or address!r} is not a domain of tenant "
                        f"{ctx.tenant.name}",
                    )
        return Verdict.ok(self.rule, "Sender and Reply-To, where present, use tenant domains")


class SaneHeaders:
    """P-HDR-SANE: Date and Message-ID present and well formed, no repeated singletons."""

    rule = "P-HDR-SANE"
    phase = "data"

    async def check(self, ctx: PolicyContext) -> Verdict:
        for name in SINGLETONS:
            count = len(ctx.headers(name))
            if count > 1:
                return Verdict.reject(self.rule, f"{name} appears {count} times (RFC 5322 3.6)")
        dates = ctx.headers("Date")
        if not dates:
            return Verdict.reject(self.rule, "the Date header is missing (RFC 5322 3.6.1)")
        try:
            parsedate_to_datetime(dates[0])
        except (TypeError, ValueError):
            return Verdict.reject(self.rule, f"the Date header {dates[0]!r} is not a valid date")
        ids = ctx.headers("Message-ID")
        if not ids:
            return Verdict.reject(self.rule, "the Message-ID header is missing (RFC 5322 3.6.4)")
        if not _MSG_ID.match(ids[0]):
            return Verdict.reject(self.rule, f"Message-ID {ids[0]!r} is malformed")
        for name, value in ctx.message.raw_items():
            if "\0" in value or _BARE_NEWLINE.search(value):
                return Verdict.reject(self.rule, f"the {name} header holds a control character")
        return Verdict.ok(self.rule, "Date and Message-ID well formed, no repeated headers")


def _recorded_domain(ctx: PolicyContext, rule: str) -> tuple[str, frozenset[str]] | Verdict:
    """The From address's tenant domain and the checks it failed, or the verdict that
    ends the check early (not required here, not the tenant's, never verified)."""
    if ctx.domain_failures is None:
        return Verdict.skip(rule, "this deployment does not require verified domains")
    owner = owning_domain(ctx.tenant, ctx.from_domain or "")
    if owner is None:
        return Verdict.skip(rule, "no From domain of the tenant (P-HDR-FROM decides)")
    failures = ctx.domain_failures.get(owner)
    if failures is None:
        return Verdict.reject(
            rule, f"sending domain {owner} has not been verified: see relay domain verify {owner}"
        )
    return owner, failures


class VerifiedDomain:
    """P-DNSAUTH: the From domain's tenant domain has passed verification (SPF authorising
    the relay, DKIM keys published, DMARC present), read from the stored result."""

    rule = "P-DNSAUTH"
    phase = "data"

    async def check(self, ctx: PolicyContext) -> Verdict:
        recorded = _recorded_domain(ctx, self.rule)
        if isinstance(recorded, Verdict):
            return recorded
        owner, failures = recorded
        dns_failures = sorted(failures - {"whois"})
        if dns_failures:
            return Verdict.reject(
                self.rule,
                f"sending domain {owner} has not passed verification "
                f"({', '.join(dns_failures)}): see relay domain verify {owner}",
            )
        return Verdict.ok(self.rule, f"sending domain {owner} publishes SPF, DKIM and DMARC")


class IdentifiableRegistrant:
    """P-WHOIS: the From domain's registrant, as RDAP showed it when the domain was last
    verified, is not a privacy or proxy service (registry GDPR redaction passes)."""

    rule = "P-WHOIS"
    phase = "data"

    async def check(self, ctx: PolicyContext) -> Verdict:
        recorded = _recorded_domain(ctx, self.rule)
        if isinstance(recorded, Verdict):
            return recorded
        owner, failures = recorded
        if "whois" in failures:
            return Verdict.reject(
                self.rule,
                f"the registrant of {owner} is hidden behind a privacy or proxy service: "
                f"see relay domain verify {owner}",
            )
        return Verdict.ok(self.rule, f"the registrant of {owner} is not a proxy service")
