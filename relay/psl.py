"""Registered domains from the Public Suffix List: where registrations happen.

RDAP is asked about the registered domain of a sending domain (P-WHOIS), and deliveries
are grouped by the registered domain of their MX hosts, so destinations one operator
serves (gmail.com and googlemail.com, both at google.com's MX hosts) count as one site.
"""

import ipaddress
from functools import cache

from publicsuffixlist import PublicSuffixList


@cache
def _list() -> PublicSuffixList:
    return PublicSuffixList()


def registered_domain(domain: str) -> str:
    """`news.shop.example` -> `shop.example`; the name itself when the list cannot tell."""
    name = domain.lower().rstrip(".")
    return _list().privatesuffix(name) or name


def is_public_suffix(domain: str) -> bool:
    """`com`, `co.uk`, `github.io`: names under which anyone registers (and `example`,
    which the list's default rule makes a suffix), never a sending domain of one tenant."""
    return bool(_list().is_public(domain.lower().rstrip(".")))


def site_of(mx_host: str, destination: str) -> str:
    """The site behind a destination: its first MX host's registered domain, or the
    destination itself when the host is an address (a route to an IP)."""
    try:
        ipaddress.ip_address(mx_host)
    except ValueError:
        return registered_domain(mx_host)
    return destination.lower()
