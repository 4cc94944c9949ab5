"""Whether a complaint report comes from the feedback loop it claims to, before it counts.

Anyone can mail an ARF report (RFC 5965) to a feedback address and name the Message-ID of a
delivered message: every recipient has seen it. A report counts (suppresses the
complainant, counts against the tenant's P-COMPLAINT rate) only when one of `[feedback]
providers` vouches for it: it came from one of the provider's networks, or it carries a
DKIM signature of one of the provider's domains that verifies (dkimpy; the providers sign
their reports, RFC 6449 3.4). The verification runs in a thread, against the relay's
resolver (`[delivery] nameservers`), on at most three signatures.
"""

import asyncio
import ipaddress
from collections.abc import Callable, Sequence

import dkim
import dns.exception
import dns.resolver

from relay.config.schema import FeedbackProvider, split_host_port
from relay.config.tenants import is_within

MAX_SIGNATURES = 3


def _txt_lookup(nameservers: Sequence[str]) -> Callable[[bytes, int], bytes | None]:
    resolver = dns.resolver.Resolver(configure=not nameservers)
    if nameservers:
        pairs = [split_host_port(ns) for ns in nameservers]
        resolver.nameservers = [host for host, _ in pairs]
        resolver.port = pairs[0][1]
    resolver.lifetime = 5.0

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode("ascii", "replace"), "TXT")
        except dns.exception.DNSException:
            return None
        return b"".join(b"".join(r.strings) for r in answer)

    return lookup


def verified_signers(raw: bytes, nameservers: Sequence[str]) -> list[str]:
    """The `d=` domains of the report's DKIM signatures that verify."""
    count = raw.split(b"\r\n\r\n", 1)[0].lower().count(b"\ndkim-signature:")
    count += raw.lower().startswith(b"dkim-signature:")
    found = []
    lookup = _txt_lookup(nameservers)
    for index in range(min(count, MAX_SIGNATURES)):
        checker = dkim.DKIM(raw)
        try:
            if checker.verify(idx=index, dnsfunc=lookup) and checker.domain:
                found.append(checker.domain.decode("ascii", "replace").lower())
        except dkim.DKIMException:
            continue
    return found


async def vouching_provider(
    raw: bytes,
    client_address: str | None,
    providers: Sequence[FeedbackProvider],
    nameservers: Sequence[str],
) -> str | None:
    """`name (how)` of the provider that vouches for the report, or None."""
    try:
        client = ipaddress.ip_address(client_address or "")
    except ValueError:
        client = None
    for provider in providers:
        nets = [ipaddress.ip_network(n, strict=False) for n in provider.networks]
        if client is not None and any(client in net for net in nets):
            return f"{provider.name} (network {client})"
    if not any(p.dkim_domains for p in providers):
        return None
    signers = await asyncio.to_thread(verified_signers, raw, nameservers)
    for provider in providers:
        for signer in signers:
            if any(is_within(signer, domain) for domain in provider.dkim_domains):
                return f"{provider.name} (DKIM d={signer})"
    return None
