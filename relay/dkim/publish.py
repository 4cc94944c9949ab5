"""Is a DKIM key's record published? Asked of DNS before a key may sign (RFC 6376 3.6.2).

A receiver looks up `selector._domainkey.domain` TXT and compares the `p=` tag with the
signature; a key whose record is not there yet would make every signature fail, so
rotation waits for it. TXT records may be split into several strings (RFC 7208 3.3 style);
they are joined before parsing.
"""

import dns.asyncresolver
import dns.exception
import dns.resolver

from relay.config.schema import split_host_port
from relay.dkim.keys import dns_record
from relay.dkim.sign import PrivateKey


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            tags[name.strip()] = "".join(value.split())
    return tags


async def published_record(
    domain: str, selector: str, nameservers: list[str], lifetime: float = 5.0
) -> str | None:
    """The TXT record at `selector._domainkey.domain`, or None if there is none."""
    resolver = dns.asyncresolver.Resolver(configure=not nameservers)
    if nameservers:
        pairs = [split_host_port(ns) for ns in nameservers]
        resolver.nameservers = [host for host, _ in pairs]
        resolver.port = pairs[0][1]
    resolver.lifetime = lifetime
    try:
        answer = await resolver.resolve(f"{selector}._domainkey.{domain}", "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    for rdata in answer:
        text = b"".join(rdata.strings).decode("ascii", "replace")
        if "p=" in text:
            return text
    return None


def record_matches(record: str | None, key: PrivateKey) -> bool:
    """True when the published record carries this key's public half."""
    if record is None:
        return False
    want, have = _tags(dns_record(key)), _tags(record)
    return have.get("p") == want["p"] and have.get("k", "rsa") == want["k"]


async def is_published(domain: str, selector: str, key: PrivateKey, nameservers: list[str]) -> bool:
    try:
        record = await published_record(domain, selector, nameservers)
    except dns.exception.DNSException:
        return False
    return record_matches(record, key)
