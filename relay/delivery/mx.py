"""MX resolution for outbound delivery (RFC 5321 section 5.1, RFC 7505).

The delivery worker has to turn a recipient domain into the ordered list of hosts to try, and
it has to tell a passing DNS problem (defer the message, 4xx) apart from a domain that can never
receive mail (bounce it, 5xx). dnspython asks the questions; this module applies the SMTP rules
to the answers and keeps a small TTL-bounded cache, so that a queue run over many messages for
one domain costs one lookup instead of one per message.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdata
import dns.rdatatype
import dns.resolver

NEGATIVE_TTL_DEFAULT = 60  # seconds, when a negative answer carries no SOA
_CACHE_PRUNE_AT = 10_000  # entries; expired ones are dropped when the cache grows past this

# A cached lookup: the records, () for NOERROR/NODATA, None for NXDOMAIN.
_Records = tuple[dns.rdata.Rdata, ...] | None


@dataclass(frozen=True)
class MxHost:
    """A host to try for a domain; lower preference is tried first (RFC 5321 section 5.1)."""

    name: str  # host name, lower case, no trailing dot
    preference: int


class DnsError(Exception):
    """Base."""


class DnsTemporaryError(DnsError):
    """SERVFAIL, timeout, no answer from any server: retry later (4xx)."""


class DnsPermanentError(DnsError):
    """The domain can never receive mail: bounce (5xx)."""


class NoSuchDomain(DnsPermanentError):
    """NXDOMAIN: the name does not exist."""


class NullMx(DnsPermanentError):
    """RFC 7505: the domain publishes a single MX "0 ." to say it accepts no mail."""


class NoMailHost(DnsPermanentError):
    """No MX and no A/AAAA for the domain, or an MX host with no address."""


class MxResolver:
    """Finds where to deliver mail for a domain, per RFC 5321 section 5.1 and RFC 7505.

    Answers, positive and negative, are cached in memory per (name, record type) until their
    TTL runs out: the rrset TTL for records, min(SOA TTL, SOA MINIMUM) from the authority
    section for NXDOMAIN/NODATA (RFC 2308 section 5), or 60 s without an SOA. Temporary
    failures are never cached.
    """

    def __init__(self, nameservers: Sequence[tuple[str, int]] = (), timeout: float = 5.0) -> None:
        """Empty nameservers: the system resolver (/etc/resolv.conf). Otherwise query exactly
        these (host, port) pairs."""
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in nameservers]
        else:
            try:
                resolver = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                # No nameservers at all: every lookup ends in DnsTemporaryError.
                resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.timeout = timeout
        resolver.lifetime = timeout
        self._resolver = resolver
        self._cache: dict[tuple[dns.name.Name, int], tuple[float, _Records]] = {}

    async def mx_hosts(self, domain: str) -> list[MxHost]:
        """MX hosts of `domain`, by preference, equal preferences shuffled (RFC 5321 5.1).

        Without MX records the domain itself is the implicit MX, if it has an address.
        """
        name = _to_name(domain)
        records = await self._lookup(name, dns.rdatatype.MX)
        if records is None:
            raise NoSuchDomain(f"{domain}: no such domain (NXDOMAIN)")
        if not records:
            try:
                await self._addresses(name)
            except NoMailHost:
                raise NoMailHost(f"{domain}: no MX and no A/AAAA records") from None
            return [MxHost(_text(name), 0)]
        usable = [r for r in records if r.exchange != dns.name.root]
        if not usable:
            raise NullMx(f"{domain}: null MX, the domain accepts no mail (RFC 7505)")
        usable.sort(key=lambda r: (r.preference, random.random()))
        return [MxHost(_text(r.exchange), r.preference) for r in usable]

    async def addresses(self, host: str) -> list[str]:
        """A then AAAA addresses of `host` (IPv4 first).

        If one family fails temporarily but the other has addresses, those are returned.
        """
        return await self._addresses(_to_name(host))

    async def _addresses(self, name: dns.name.Name) -> list[str]:
        found: list[str] = []
        temporary: DnsTemporaryError | None = None
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            try:
                records = await self._lookup(name, rdtype)
            except DnsTemporaryError as exc:
                temporary = exc
                continue
            if records is None:
                break  # NXDOMAIN holds for every type
            found += [r.address for r in records]
        if found:
            return found
        if temporary is not None:
            raise temporary
        raise NoMailHost(f"{_text(name)}: no A or AAAA records")

    async def _lookup(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> _Records:
        key = (name, int(rdtype))
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now < hit[0]:
            return hit[1]
        records: _Records
        try:
            answer = await self._resolver.resolve(name, rdtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            records, ttl = None, _negative_ttl(next(iter(exc.responses().values()), None))
        except (dns.exception.DNSException, OSError) as exc:
            what = f"{_text(name)} {dns.rdatatype.to_text(rdtype)}"
            raise DnsTemporaryError(f"{what}: {exc or type(exc).__name__}") from exc
        else:
            if answer.rrset is None:
                records, ttl = (), _negative_ttl(answer.response)
            else:
                records, ttl = tuple(answer.rrset), answer.rrset.ttl
        if len(self._cache) >= _CACHE_PRUNE_AT:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        self._cache[key] = (now + ttl, records)
        return records


def _negative_ttl(response: dns.message.Message | None) -> int:
    """How long a negative answer may be cached (RFC 2308 section 5)."""
    for rrset in response.authority if response is not None else ():
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset) > 0:
            return min(rrset.ttl, rrset[0].minimum)
    return NEGATIVE_TTL_DEFAULT


def _to_name(text: str) -> dns.name.Name:
    """Absolute DNS name; U-labels become A-labels via dnspython's IDNA codec."""
    try:
        name = dns.name.from_text(text)
    except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
        raise DnsPermanentError(f"{text!r} is not a valid domain name: {exc}") from exc
    if name == dns.name.root:
        raise DnsPermanentError(f"{text!r} is not a valid domain name")
    return name


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()
