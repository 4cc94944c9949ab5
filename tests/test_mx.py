"""MX resolution (relay.delivery.mx) against a real DNS server on loopback.

Each test checks one rule of RFC 5321 section 5.1, RFC 7505 (null MX) or RFC 2308 (negative
caching), as its docstring says.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from relay.delivery.mx import (
    DnsPermanentError,
    DnsTemporaryError,
    MxHost,
    MxResolver,
    NoMailHost,
    NoSuchDomain,
    NullMx,
)
from tests.support.dns_server import DnsServer


@pytest.fixture
def server() -> Iterator[DnsServer]:
    with DnsServer() as dns_server:
        yield dns_server


@pytest.fixture
def resolver(server: DnsServer) -> MxResolver:
    return MxResolver([server.address], timeout=2.0)


@pytest.mark.asyncio
async def test_mx_hosts_are_sorted_by_preference(server: DnsServer, resolver: MxResolver) -> None:
    """RFC 5321 5.1: "sort the MX records ... by preference, with lower numbers being more
    preferred"; host names come back lower case without the trailing dot."""
    server.add("example.com", "MX", 300, "20 MX2.Example.COM.")
    server.add("example.com", "MX", 300, "10 mx1.example.com.")
    server.add("example.com", "MX", 300, "30 mx3.example.com.")

    assert await resolver.mx_hosts("example.com") == [
        MxHost("mx1.example.com", 10),
        MxHost("mx2.example.com", 20),
        MxHost("mx3.example.com", 30),
    ]


@pytest.mark.asyncio
async def test_equal_preferences_are_randomized(server: DnsServer, resolver: MxResolver) -> None:
    """RFC 5321 5.1: "If there are multiple destinations with the same preference ... the
    SMTP client SHOULD randomize them to spread the load"; the order across preferences holds."""
    server.add("example.com", "MX", 300, "10 a.example.com.")
    server.add("example.com", "MX", 300, "10 b.example.com.")
    server.add("example.com", "MX", 300, "20 c.example.com.")

    orders = set()
    for _ in range(64):
        hosts = await resolver.mx_hosts("example.com")
        assert hosts[2] == MxHost("c.example.com", 20)
        orders.add(tuple(host.name for host in hosts[:2]))

    assert orders == {("a.example.com", "b.example.com"), ("b.example.com", "a.example.com")}


@pytest.mark.asyncio
async def test_no_mx_but_an_address_is_the_implicit_mx(
    server: DnsServer, resolver: MxResolver
) -> None:
    """RFC 5321 5.1: "If an empty list of MXs is returned, the address is treated as if it was
    associated with an implicit MX RR, with a preference of 0, pointing to that host"."""
    server.add("a.example", "A", 300, "192.0.2.1")
    server.add("aaaa.example", "AAAA", 300, "2001:db8::1")

    assert await resolver.mx_hosts("a.example") == [MxHost("a.example", 0)]
    assert await resolver.mx_hosts("aaaa.example") == [MxHost("aaaa.example", 0)]


@pytest.mark.asyncio
async def test_no_mx_and_no_address_is_no_mail_host(
    server: DnsServer, resolver: MxResolver
) -> None:
    """RFC 5321 5.1: the implicit MX only exists if the domain has an address; a domain with
    neither MX nor A/AAAA cannot receive mail (permanent)."""
    server.add("txt-only.example", "TXT", 300, '"v=spf1 -all"')

    with pytest.raises(NoMailHost):
        await resolver.mx_hosts("txt-only.example")


@pytest.mark.asyncio
async def test_null_mx_means_no_mail(server: DnsServer, resolver: MxResolver) -> None:
    """RFC 7505 section 3: a single MX with an empty exchange (".") says the domain accepts no
    mail; senders must not try the implicit MX (the A record below) and should bounce."""
    server.add("nomail.example", "MX", 300, "0 .")
    server.add("nomail.example", "A", 300, "192.0.2.1")

    with pytest.raises(NullMx) as caught:
        await resolver.mx_hosts("nomail.example")
    assert isinstance(caught.value, DnsPermanentError)


@pytest.mark.asyncio
async def test_null_mx_next_to_real_mx_is_ignored(server: DnsServer, resolver: MxResolver) -> None:
    """RFC 7505 section 3: a null MX published next to other MX records is a misconfiguration;
    the "." record is ignored and the real hosts are used."""
    server.add("mixed.example", "MX", 300, "0 .")
    server.add("mixed.example", "MX", 300, "10 mx.mixed.example.")

    assert await resolver.mx_hosts("mixed.example") == [MxHost("mx.mixed.example", 10)]


@pytest.mark.asyncio
async def test_nxdomain_is_no_such_domain(resolver: MxResolver) -> None:
    """A domain that does not exist (NXDOMAIN) can never receive mail: permanent failure."""
    with pytest.raises(NoSuchDomain) as caught:
        await resolver.mx_hosts("missing.example")
    assert isinstance(caught.value, DnsPermanentError)


@pytest.mark.asyncio
async def test_servfail_is_temporary_and_not_cached(
    server: DnsServer, resolver: MxResolver
) -> None:
    """RFC 5321 5.1: a lookup that fails for a transient reason (SERVFAIL) is a temporary
    error, so the message is deferred; the failure is not cached, the next try asks again."""
    server.servfail("broken.example")

    with pytest.raises(DnsTemporaryError):
        await resolver.mx_hosts("broken.example")

    server.remove("broken.example")
    server.add("broken.example", "MX", 300, "10 mx.broken.example.")
    assert await resolver.mx_hosts("broken.example") == [MxHost("mx.broken.example", 10)]


@pytest.mark.asyncio
async def test_unreachable_nameserver_is_temporary() -> None:
    """No answer from any nameserver (nothing listens on the port) is a temporary error."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    resolver = MxResolver([("127.0.0.1", closed_port)], timeout=0.5)

    started = time.monotonic()
    with pytest.raises(DnsTemporaryError):
        await resolver.mx_hosts("example.com")
    assert time.monotonic() - started < 5


@pytest.mark.asyncio
async def test_answers_are_cached_for_their_ttl(server: DnsServer, resolver: MxResolver) -> None:
    """A positive answer is reused until its TTL runs out: the second lookup sends no query."""
    server.add("example.com", "MX", 300, "10 mx.example.com.")
    server.add("mx.example.com", "A", 300, "192.0.2.25")

    first = await resolver.mx_hosts("example.com")
    await resolver.addresses("mx.example.com")
    server.queries.clear()

    assert await resolver.mx_hosts("example.com") == first
    assert await resolver.addresses("mx.example.com") == ["192.0.2.25"]
    assert server.queries == []


@pytest.mark.asyncio
async def test_cached_answer_expires_with_its_ttl(server: DnsServer, resolver: MxResolver) -> None:
    """Once the TTL (1 s here) has run out the answer is asked for again, and changes are seen."""
    server.add("example.com", "MX", 1, "10 old.example.com.")
    assert await resolver.mx_hosts("example.com") == [MxHost("old.example.com", 10)]

    server.remove("example.com")
    server.add("example.com", "MX", 1, "10 new.example.com.")
    server.queries.clear()
    await asyncio.sleep(1.2)

    assert await resolver.mx_hosts("example.com") == [MxHost("new.example.com", 10)]
    assert server.queries == [("example.com", "MX")]


@pytest.mark.asyncio
async def test_negative_answers_are_cached(server: DnsServer, resolver: MxResolver) -> None:
    """RFC 2308: NXDOMAIN and NODATA are cached for the SOA minimum of the authority section
    (30 s here), so asking again sends no query."""
    server.add("txt-only.example", "TXT", 300, '"v=spf1 -all"')
    for domain, error in (("missing.example", NoSuchDomain), ("txt-only.example", NoMailHost)):
        with pytest.raises(error):
            await resolver.mx_hosts(domain)
        server.queries.clear()
        with pytest.raises(error):
            await resolver.mx_hosts(domain)
        assert server.queries == []


@pytest.mark.asyncio
async def test_negative_answer_expires_with_soa_minimum() -> None:
    """RFC 2308: a negative answer lives only as long as the SOA minimum (1 s here); a domain
    created after that is found."""
    with DnsServer(soa_minimum=1) as server:
        resolver = MxResolver([server.address], timeout=2.0)
        with pytest.raises(NoSuchDomain):
            await resolver.mx_hosts("late.example")

        server.add("late.example", "MX", 300, "10 mx.late.example.")
        assert server.queries == [("late.example", "MX")]
        with pytest.raises(NoSuchDomain):
            await resolver.mx_hosts("late.example")  # still cached
        await asyncio.sleep(1.2)

        assert await resolver.mx_hosts("late.example") == [MxHost("mx.late.example", 10)]


@pytest.mark.asyncio
async def test_addresses_lists_ipv4_before_ipv6(server: DnsServer, resolver: MxResolver) -> None:
    """The addresses of an MX host: A records first, then AAAA."""
    server.add("mx.example.com", "AAAA", 300, "2001:db8::25")
    server.add("mx.example.com", "A", 300, "192.0.2.25")

    assert await resolver.addresses("mx.example.com") == ["192.0.2.25", "2001:db8::25"]


@pytest.mark.asyncio
async def test_addresses_errors(server: DnsServer, resolver: MxResolver) -> None:
    """RFC 5321 5.1: an MX host without addresses (NXDOMAIN or no A/AAAA) is unusable for good;
    a failing lookup of its addresses is temporary."""
    server.add("noaddr.example.com", "TXT", 300, '"nothing here"')
    server.servfail("broken.example.com")

    with pytest.raises(NoMailHost):
        await resolver.addresses("missing.example.com")
    with pytest.raises(NoMailHost):
        await resolver.addresses("noaddr.example.com")
    with pytest.raises(DnsTemporaryError):
        await resolver.addresses("broken.example.com")


@pytest.mark.asyncio
async def test_idna_domain_is_looked_up_by_its_a_label(
    server: DnsServer, resolver: MxResolver
) -> None:
    """RFC 5321 2.3.5 / RFC 5890: a U-label domain is queried in its A-label (xn--) form."""
    server.add("xn--bcher-kva.example", "MX", 300, "10 mx.xn--bcher-kva.example.")
    server.add("xn--caf-dma.example", "A", 300, "192.0.2.7")

    assert await resolver.mx_hosts("bücher.example") == [MxHost("mx.xn--bcher-kva.example", 10)]
    assert await resolver.mx_hosts("café.example") == [MxHost("xn--caf-dma.example", 0)]
    assert ("xn--bcher-kva.example", "MX") in server.queries


@pytest.mark.asyncio
async def test_dns_server_answers_over_udp_and_tcp_on_one_port(server: DnsServer) -> None:
    """The test server itself: same answer over UDP and over TCP (length-prefixed) on `port`."""
    server.add("example.com", "TXT", 300, '"v=spf1 -all"')
    query = dns.message.make_query("example.com", "TXT")

    over_udp = await dns.asyncquery.udp(query, "127.0.0.1", timeout=2, port=server.port)
    over_tcp = await dns.asyncquery.tcp(query, "127.0.0.1", timeout=2, port=server.port)

    for response in (over_udp, over_tcp):
        assert response.rcode() == dns.rcode.NOERROR
        assert [rrset.to_text() for rrset in response.answer] == [
            'example.com. 300 IN TXT "v=spf1 -all"'
        ]
